"""One loaded reward checkpoint scoring items and pairs under a token budget.

This is the model side of a serving member, free of Serve so it can be tested and
benchmarked in-process. Items are encoded one by one (a bad one costs only itself), sorted
by length, and run in forwards whose padded size stays within `max_batch_tokens`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mrm_ray.model.reward_checkpoint import HEAD_WEIGHTS, REWARD_CONFIG


def checkpoint_version(path: str | Path) -> str:
    """A short content hash of the reward head and its config (which records when it was saved)."""
    digest = hashlib.sha256()
    for name in (REWARD_CONFIG, HEAD_WEIGHTS):
        digest.update((Path(path) / name).read_bytes())
    return digest.hexdigest()[:12]


def budget_chunks(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first so each group's padded size (count x longest) fits the budget.

    A single item longer than the budget still runs, alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) + 1) * lengths[i] <= max_batch_tokens:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


class Scorer:
    """A reward checkpoint on a device, with its processor and normalisation."""

    def __init__(self, path: str, *, max_batch_tokens: int = 16384, dtype: str = "auto",
                 score_mean: float | None = None, score_std: float | None = None) -> None:
        import torch

        from mrm_ray.model.inputs import PairEncoder
        from mrm_ray.model.processor import load_processor
        from mrm_ray.model.reward_checkpoint import resolve
        from mrm_ray.model.reward_model import RewardModel

        self.path = str(resolve(path))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.model = RewardModel.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        self.encoder = PairEncoder(load_processor(self.path))
        self.version = checkpoint_version(self.path)
        self.max_batch_tokens = max_batch_tokens
        self.score_mean = self.model.score_mean if score_mean is None else float(score_mean)
        self.score_std = self.model.score_std if score_std is None else float(score_std)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"path": self.path, "version": self.version, "score_mean": self.score_mean,
                "score_std": self.score_std, "device": str(self.device), "dtype": str(self.model.dtype),
                "torch_threads": torch.get_num_threads()}

    def _run(self, inputs: Sequence[dict], encode: Callable, length: Callable, collate: Callable,
             forward: Callable) -> list[Any]:
        import torch

        results: list[Any] = [None] * len(inputs)
        features, where = [], []
        for i, x in enumerate(inputs):
            try:
                features.append(encode(x))
                where.append(i)
            except Exception as exc:  # this input only: a message for its request, the batch goes on
                results[i] = f"cannot encode: {type(exc).__name__}: {str(exc)[:200]}"
        pad = self.encoder.pad_token_id
        with torch.inference_mode():
            for chunk in budget_chunks([length(f) for f in features], self.max_batch_tokens):
                batch = collate([features[j] for j in chunk], pad_token_id=pad)
                batch = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
                for j, value in zip(chunk, forward(batch)):
                    results[where[j]] = value
        return results

    def score_items(self, items: Sequence[dict]) -> list[float | str]:
        """Raw reward per `{prompt, images, response}`, or an error message for that item."""
        from mrm_ray.model.packing import collate_sequences

        return self._run(
            items, lambda x: self.encoder.encode_item(x["prompt"], x["images"], x["response"]),
            lambda f: len(f["prompt_ids"]) + len(f["response_ids"]), collate_sequences,
            lambda batch: self.model(**batch).float().tolist())

    def score_pairs(self, pairs: Sequence[dict]) -> list[tuple[float, float] | str]:
        """(chosen, rejected) raw rewards per pair from the packed pair forward, or an error message."""
        from mrm_ray.model.packing import collate_packed

        def forward(batch):
            chosen, rejected = self.model.forward_pairs(batch)
            return list(zip(chosen.float().tolist(), rejected.float().tolist()))

        return self._run(
            pairs, lambda x: self.encoder.encode_pair(x["prompt"], x["images"], x["chosen"], x["rejected"]),
            lambda f: len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]), collate_packed,
            forward)
