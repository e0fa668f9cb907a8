"""Reinforcement learning against the served ensemble: GRPO on Ray (`loop.py` and its parts),
the veRL reward function (`verl.py`) and the OpenRLHF agent executor (`openrlhf_agent.py`); the
hybrid and rule rewards are mrm_ray/rewards.py."""
