"""Reinforcement learning against the served ensemble: GRPO on Ray (`loop.py` and its parts),
the hybrid reward (`rewards.py`) and the veRL reward function (`verl.py`)."""
