"""Reinforcement learning against the served ensemble: GRPO on Ray (`loop.py` and its parts),
and the veRL reward function (`verl.py`); the hybrid and rule rewards are mrm_ray/rewards.py."""
