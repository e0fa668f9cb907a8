"""The one batch scorer: a reward model scoring groups, pairs and items under a token budget.

The CLI, the evaluation actors (eval/scoring.py), the Serve members (serve/member.py) and
the local trainer's accuracy all score through this. Everything is a group, one prompt
with K responses: an item is a group of one, a pair a group of two. Inputs are encoded one
by one (a bad one costs only itself, with a message), sorted by length, and packed into
forwards of at most `max_batch_tokens` real tokens (model/packing.py: several groups per
row, no padding between them), so each prompt and its images run once per group.
A judge member (model/judge.py) is a `Scorer` whose readout is its LM head's verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mrm_ray.config import MAX_BATCH_TOKENS


def device_and_dtype(dtype: str = "auto"):
    """(the device a scorer runs on: CUDA when there is one; its weights' dtype name: `auto` is bfloat16 on a GPU,
    float32 on a CPU)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return device, ("bfloat16" if device.type == "cuda" else "float32") if dtype == "auto" else dtype


def budget_chunks(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first so each group's total tokens fit the budget (packed rows
    carry no padding between groups). A single input longer than the budget still runs, alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    total = 0
    for i in order:
        if chunks and total + lengths[i] <= max_batch_tokens:
            chunks[-1].append(i)
            total += lengths[i]
        else:
            chunks.append([i])
            total = lengths[i]
    return chunks


class Scorer:
    """A reward model on a device, with its encoder, token budget and normalisation.

    `Scorer(path)` loads a reward checkpoint (what members and evaluation actors do);
    `Scorer.from_model(model, encoder)` scores with a model already in memory."""

    def __init__(self, path: str, *, max_batch_tokens: int = MAX_BATCH_TOKENS, dtype: str = "auto",
                 score_mean: float | None = None, score_std: float | None = None,
                 video_route: str = "auto") -> None:
        from mrm_ray.model import checkpoints
        from mrm_ray.model.inputs import PairEncoder
        from mrm_ray.model.processor import load_processor
        from mrm_ray.model.reward_model import RewardModel

        path = str(checkpoints.resolve(path))  # a reward checkpoint or a sequence classifier, local or fetched
        device, dtype = device_and_dtype(dtype)
        model = RewardModel.from_pretrained(path, dtype=dtype).to(device).eval()
        self._setup(model, PairEncoder(load_processor(path), video_route=video_route),
                    max_batch_tokens=max_batch_tokens, path=path,
                    version=checkpoints.version(path), score_mean=score_mean, score_std=score_std)

    @classmethod
    def from_model(cls, model, encoder, *, max_batch_tokens: int = MAX_BATCH_TOKENS) -> "Scorer":
        scorer = cls.__new__(cls)
        scorer._setup(model, encoder, max_batch_tokens=max_batch_tokens, path="", version="in-memory")
        return scorer

    def _setup(self, model, encoder, *, max_batch_tokens: int, path: str, version: str,
               score_mean: float | None = None, score_std: float | None = None) -> None:
        self.model, self.encoder, self.path, self.version = model, encoder, path, version
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens
        self.score_mean = model.score_mean if score_mean is None else float(score_mean)
        self.score_std = model.score_std if score_std is None else float(score_std)

    @property
    def takes_images(self) -> bool:
        """False for a text-only backbone: it scores text-only inputs, and image inputs go to other members."""
        return self.model.family.vision

    def describe(self) -> dict[str, Any]:
        import torch

        return {"kind": "scalar", "path": self.path, "version": self.version, "score_mean": self.score_mean,
                "score_std": self.score_std, "device": str(self.device), "dtype": str(self.model.dtype),
                "torch_threads": torch.get_num_threads(), "max_batch_tokens": self.max_batch_tokens,
                "video_route": self.encoder.video_route}

    # ---------------------------------------------------------------------------- scoring
    def score_encoded(self, groups: Sequence[dict], *, progress: bool = False) -> list[list[float]]:
        """Raw rewards per response of encoded groups (`prompt_ids`, ..., `responses`), in order."""
        import torch
        from tqdm.auto import tqdm

        from mrm_ray.model.packing import collate_groups, group_length

        results: list[list[float]] = [[] for _ in groups]
        was_training = self.model.training
        self.model.eval()
        chunks = budget_chunks([group_length(g) for g in groups], self.max_batch_tokens)
        with torch.inference_mode():
            for chunk in tqdm(chunks, desc="score", disable=not progress):
                batch = collate_groups([{k: v for k, v in groups[j].items() if k not in ("pairs", "margins")}
                                        for j in chunk], pad_token_id=self.encoder.pad_token_id,
                                       row_tokens=self.max_batch_tokens,  # rewards per response, not pairs
                                       share_prompt=self.model.shares_prompt)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                rewards = iter(self.model(**batch).float().tolist())
                for j in chunk:
                    results[j] = [next(rewards) for _ in groups[j]["responses"]]
        self.model.train(was_training)
        return results

    def _score(self, inputs: Sequence[dict], *, progress: bool = False) -> list[list[float] | str]:
        """Rewards per `{prompt, images, responses[, response_images, videos]}`, or an error message for that
        input."""
        results: list[list[float] | str] = [""] * len(inputs)
        encoded, where = [], []
        for i, x in enumerate(inputs):
            try:
                groups, landed = self.encoder.encode_groups(x["prompt"], x.get("images") or [], x["responses"],
                                                            x.get("response_images"), videos=x.get("videos") or ())
            except Exception as exc:  # this input only: a message for its request, the batch goes on
                results[i] = f"cannot encode: {type(exc).__name__}: {str(exc)[:200]}"
                continue
            where.append((i, len(encoded), landed))
            encoded += groups
        rewards = self.score_encoded(encoded, progress=progress)
        for i, first, landed in where:
            results[i] = [rewards[first + g][j] for g, j in landed]
        return results

    def score_groups(self, groups: Sequence[dict], *, progress: bool = False) -> list[list[float] | str]:
        """Raw rewards per `{prompt, images, responses}` group (one per response, in order), or an
        error message for that group. The prompt and its images run once per group (a response with
        images inside, `response_images`, runs with its own copy)."""
        return self._score(groups, progress=progress)

    def score_items(self, items: Sequence[dict]) -> list[float | str]:
        """Raw reward per `{prompt, images, response}`, or an error message for that item."""
        groups = [{**it, "responses": [it["response"]]} for it in items]
        return [out if isinstance(out, str) else out[0] for out in self.score_groups(groups)]

    def score_pairs(self, pairs: Sequence[dict], *, progress: bool = False) -> list[tuple[float, float] | str]:
        """(chosen, rejected) raw rewards per `{prompt, images, chosen, rejected[, chosen_images,
        rejected_images]}`, or an error message."""
        groups = [{**p, "responses": [p["chosen"], p["rejected"]],
                   "response_images": [p.get("chosen_images") or [], p.get("rejected_images") or []]} for p in pairs]
        return [out if isinstance(out, str) else (out[0], out[1])
                for out in self.score_groups(groups, progress=progress)]
