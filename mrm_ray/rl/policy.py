"""The policy: a causal LM of any supported family (model/families.py) with its processor, for sampling and log-probs.

Rollout workers and the learner hold the same class, so a response is sampled and scored
(log-probabilities) with the same chat template, image processing and M-RoPE positions.
One prompt's G responses are one batch: [prompt | response] rows that share the prompt
(and its image), right-padded after each response's `<|im_end|>`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mrm_ray.model.inputs import END_OF_TURN, PairEncoder
from mrm_ray.rl.grpo import token_logprobs


class Policy:
    def __init__(self, path: str, *, dtype: str = "float32", device: str = "cpu",
                 max_pixels: int | None = None) -> None:
        """`path`: any model reference (a checkpoint directory, its s3:// URI, tiny[:FAMILY][@SEED])."""
        from transformers import AutoConfig

        from mrm_ray.model import checkpoints, families
        from mrm_ray.model.attention import use_for_vision_tower
        from mrm_ray.model.processor import load_processor

        path = str(checkpoints.resolve(path, want=checkpoints.BACKBONE))
        family = families.family_of(AutoConfig.from_pretrained(path, trust_remote_code=False))
        self.model = family.transformers_class("generator").from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation="sdpa", trust_remote_code=False,
            use_safetensors=True).to(device)
        self.vision = family.vision  # a text-only policy takes no mm_token_type_ids or pixels
        if family.vision:
            use_for_vision_tower(self.model.model)
        self.device = torch.device(device)
        self.encoder = PairEncoder(load_processor(path, max_pixels=max_pixels))
        self.tokenizer = self.encoder.tokenizer
        self.end_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_id
        # special tokens other than <|im_end|> (image placeholders, <|im_start|>, ...) are never sampled:
        # an image token in a response would not match any image
        self.suppressed = sorted(set(self.tokenizer.added_tokens_decoder) - {self.end_id})
        self._recent: OrderedDict[str, dict] = OrderedDict()  # held-out prompts come back every evaluation

    # ------------------------------------------------------------------ prompts and sampling
    def encode_prompt(self, prompt: Any, images: Sequence[Any] = ()) -> dict[str, np.ndarray]:
        """Chat-templated prompt with its image features (numpy, as the reward pipeline makes them)."""
        return self.encoder.encode_prompt(prompt, images)

    def prompt_features(self, prompt: dict, *, keep: int = 256) -> dict[str, np.ndarray]:
        """`encode_prompt` of an RL prompt dict, remembering the last `keep` by id."""
        features = self._recent.pop(prompt["id"], None)
        if features is None:
            features = self.encode_prompt(prompt["prompt"], prompt["images"])
        self._recent[prompt["id"]] = features
        while len(self._recent) > keep:
            self._recent.popitem(last=False)
        return features

    def _prompt_tensors(self, features: dict, rows: int) -> dict[str, torch.Tensor]:
        ids = torch.as_tensor(features["prompt_ids"], device=self.device)[None].repeat(rows, 1)
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.vision:
            out["mm_token_type_ids"] = torch.as_tensor(features["prompt_mm_token_type_ids"],
                                                       device=self.device)[None].repeat(rows, 1)
        if features.get("pixel_values") is not None:
            out["pixel_values"] = torch.as_tensor(features["pixel_values"], device=self.device).repeat(rows, 1)
            out["image_grid_thw"] = torch.as_tensor(features["image_grid_thw"], device=self.device).repeat(rows, 1)
        return out

    @torch.no_grad()
    def sample(self, features: dict, n: int, *, max_new_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0, greedy: bool = False) -> list[np.ndarray]:
        """n responses to one prompt, each cut after its first `<|im_end|>` (or at the length limit)."""
        self.model.eval()
        inputs = self._prompt_tensors(features, n)
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_p": top_p,
                                                        "top_k": 0}
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=self.end_id,
                                  pad_token_id=self.pad_id, suppress_tokens=self.suppressed, use_cache=True,
                                  **sampling)
        responses = []
        for row in out[:, inputs["input_ids"].shape[1]:].cpu().numpy():
            ends = np.flatnonzero(row == self.end_id)
            responses.append(row[: ends[0] + 1] if len(ends) else row)
        return responses

    def decode(self, response_ids: np.ndarray) -> str:
        """Response text without its closing `<|im_end|>` (the reward server appends it again)."""
        ids = response_ids[:-1] if len(response_ids) and response_ids[-1] == self.end_id else response_ids
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -------------------------------------------------------------------------- log-probs
    def group_batch(self, features: dict, responses: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """[prompt | response] rows for one prompt's responses, right-padded; `response_mask` marks tokens."""
        n, width = len(responses), max(len(r) for r in responses)
        batch = self._prompt_tensors(features, n)
        prompt_len = batch["input_ids"].shape[1]
        tokens = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(responses):
            tokens[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        batch["input_ids"] = torch.cat([batch["input_ids"], tokens], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
        if "mm_token_type_ids" in batch:
            batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(tokens)], dim=1)
        batch.update(response_tokens=tokens, response_mask=mask, prompt_len=torch.tensor(prompt_len))
        return batch

    def logprobs(self, batch: dict, *, temperature: float = 1.0, model: torch.nn.Module | None = None) -> torch.Tensor:
        """(n, T) log-probabilities of the response tokens under `model` (default: this policy)."""
        model = model or self.model
        p = int(batch["prompt_len"])
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values",
                                        "image_grid_thw") if k in batch}
        width = batch["response_tokens"].shape[1]
        logits = model(**inputs, use_cache=False).logits[:, p - 1: p - 1 + width]
        logits = logits.index_fill(-1, torch.as_tensor(self.suppressed, device=logits.device), float("-inf"))
        return token_logprobs(logits, batch["response_tokens"], temperature=temperature)
