"""Data: canonical preference pairs and their encoding for the Qwen2.5-VL reward model."""
