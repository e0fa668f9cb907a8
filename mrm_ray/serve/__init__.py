"""Serving the reward ensemble on Ray Serve: the app builder (`app.py`), the HTTP ingress and its middlewares,
the API models, the peers' protocols (OpenRLHF, vLLM), each member's deployment, deploying and updating, and
the clients (HTTP and DeploymentHandle). Nothing heavy is imported here."""
