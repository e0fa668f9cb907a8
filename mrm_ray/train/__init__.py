"""Training: the in-process loop (tests, demo, baselines) and, later, Ray Train + DeepSpeed."""
