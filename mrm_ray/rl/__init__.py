"""Rewards for reinforcement learning against the served ensemble."""
