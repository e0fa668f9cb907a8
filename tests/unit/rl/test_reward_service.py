"""The rollout side of the reward service: rule rewards locally, bounded waits for a dead service."""

import socket

import pytest

from mrm_ray.config import RewardServiceConfig
from mrm_ray.rl.reward_service import RewardService, RewardServiceDown

from helpers.flaky_proxy import FlakyProxy

ITEMS = [{"prompt": "Colour?", "images": [], "response": "It is \\boxed{Red}.", "reference": "red"},
         {"prompt": "Colour?", "images": [], "response": "blue", "reference": "red"}]


def test_rule_rewards_need_no_service():
    service = RewardService(RewardServiceConfig(mode="rule"), None)
    try:
        assert [r["reward"] for r in service.submit(ITEMS).result()] == [1.0, 0.0]
    finally:
        service.close()
    with pytest.raises(ValueError, match=r"set reward.url \(or reward.members"):
        RewardService(RewardServiceConfig(mode="hybrid"), None)


def test_a_service_answering_503_is_retried_until_max_wait_then_reported():
    proxy = FlakyProxy("http://127.0.0.1:9")  # never forwards: down from the first request
    proxy.schedule(down_after=0)
    service = RewardService(RewardServiceConfig(mode="model", max_wait_s=1.5, timeout_s=5), proxy.url)
    try:
        with pytest.raises(RewardServiceDown, match="still unavailable after 2s"):
            service.submit(ITEMS).result(timeout=30)
        assert proxy.refused >= 3  # retried with backoff (0.5 s, 1 s, ...) before giving up
    finally:
        service.close()
        proxy.close()


def test_refused_connections_are_reported_with_what_to_check():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    service = RewardService(RewardServiceConfig(mode="model", max_wait_s=1.0), f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RewardServiceDown, match="unreachable for 1s.*Serve app running"):
            service.submit(ITEMS).result(timeout=30)
    finally:
        service.close()


def test_a_rollout_group_goes_to_the_service_as_one_group_item():
    """GRPO scores each prompt's rollouts together: the request holds one group item per prompt (its
    responses in order), and the results come back one per rollout, in order."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            texts = [t for it in body["items"] for t in it.get("responses", [it.get("response")])]
            out = json.dumps({"results": [{"reward": float(len(t)), "model_reward": float(len(t)), "scores": {},
                                           "std": 0.0} for t in texts]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    rollouts = [{"prompt": "Colour?", "images": [b"img"], "response": r, "reference": "red"}
                for r in ("red", "blue", "a red one", "green")]
    rollouts += [{"prompt": "Shape?", "images": [], "response": r, "reference": "square"} for r in ("round", "sq")]
    url = f"http://127.0.0.1:{server.server_address[1]}"
    service = RewardService(RewardServiceConfig(mode="model", chunk_items=32), url)
    try:
        results = service.submit(rollouts).result(timeout=30)
    finally:
        service.close()
        server.shutdown()
        server.server_close()
    [body] = bodies
    assert [(it["prompt"], it["responses"]) for it in body["items"]] == [
        ("Colour?", ["red", "blue", "a red one", "green"]), ("Shape?", ["round", "sq"])]
    assert [r["reward"] for r in results] == [3.0, 4.0, 9.0, 5.0, 5.0, 2.0]
