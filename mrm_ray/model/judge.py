"""A generative checkpoint read as a reward model: a judge member (`kind: judge`, config/ensemble.py).

Any checkpoint of a supported family with its LM head (model/families.py) is asked, through its own chat
template, whether a response is good (`verdict`), which of two is better (`pairwise`), or to critique a
response and then say whether it is good (`critique`); the reward is read from the LM head at the first
token of its reply, never parsed from text:

    verdict    log P(yes_token) - log P(no_token), one forward
    pairwise   log P(first_token) - log P(second_token), in both orders: the pair's margin is the mean of the two
               (chosen first, minus rejected first), so a bias towards a position cancels; whether the two
               orders agree is the judge's position consistency
    critique   up to `max_critique_tokens` generated greedily (transformers' `generate`), the template's
               `verdict` text after them, then the verdict read as in `verdict`; a generation that passes
               `critique_timeout_s` or fails gives no score for that response (NaN and the reason)

The reading runs the reward model's own packed forward (model/reward_model.py, model/packing.py) with the
LM head's verdict readout (`VerdictHead`) in place of the MLP head: a judge batches, packs and shares its
prompt exactly as a scalar member. `JudgeEncoder` renders each question the judge is asked (one per
response, or per order) with the chat template, and the group's prompt is the token prefix every rendering
shares (the system turn, the prompt's images and text, and whatever else is the same), so each rendering's
tokens are exactly the template's, whatever the tokenizer merges at the response's edges.

`Judge` answers like the `Scorer` (model/scorer.py): a response it gives no score is a string (the reason)
in place of its value.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrm_ray.config import MAX_BATCH_TOKENS, JudgeConfig, to_dict
from mrm_ray.model.inputs import (InvalidInput, frames_as_images, is_image_part, load_image, prompt_text,
                                  response_text)
from mrm_ray.model.scorer import Scorer, device_and_dtype


class VerdictHead(nn.Module):
    """The LM head's log-probability of one token minus another's, at each reward position."""

    def __init__(self, lm_head: nn.Module, good: int, bad: int) -> None:
        super().__init__()
        self.lm_head = lm_head
        self.good, self.bad = good, bad

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.lm_head(hidden).float(), dim=-1)
        return logp[:, self.good] - logp[:, self.bad]


# ------------------------------------------------------------------------------ what the judge is asked
def prompt_as_text(prompt: str | Sequence[Mapping]) -> str:
    """The prompt's text for the template's {prompt}: a string as it is, one user turn's text, or a
    conversation's turns as `Role: text` lines (its images go before the judge's text)."""
    if isinstance(prompt, str):
        return prompt.replace("<image>", "").strip()
    turns = []
    for m in prompt:
        if not isinstance(m, Mapping):
            raise InvalidInput(f"bad prompt: a message must be a mapping, got {type(m).__name__}")
        content = m.get("content")
        text = content if isinstance(content, str) else "".join(
            str(p.get("text") or "") for p in content or () if isinstance(p, Mapping) and not is_image_part(p))
        turns.append((str(m.get("role", "user")), text.replace("<image>", "").strip()))
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n".join(f"{role.capitalize()}: {text}" for role, text in turns)


class JudgeEncoder:
    """Questions to a judge as groups for the packed forward: one group per prompt, one response segment per
    question, each ending where the judge's reply starts (the token its verdict is read at)."""

    def __init__(self, processor, config: JudgeConfig) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_token_id = self.tokenizer.pad_token_id
        self.config = config
        self.template = config.prompt

    def rendering(self, n_images: int, **fields: str) -> str:
        """The chat template's text of one question, up to where the judge's reply starts."""
        user = self.template.user.format(**fields)
        messages = [{"role": "system", "content": self.template.system}] if self.template.system else []
        messages.append({"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": user}]})
        return prompt_text(self.processor, messages)

    def questions(self, prompt, responses: Sequence[Any]) -> list[dict[str, str]]:
        """The template's fields per question: one per response (verdict, critique), or both orders of a pair
        (pairwise: [chosen first, rejected first])."""
        text = prompt_as_text(prompt)
        if self.config.mode == "pairwise":
            first, second = (response_text(r) for r in responses)
            return [{"prompt": text, "first": first, "second": second},
                    {"prompt": text, "first": second, "second": first}]
        return [{"prompt": text, "response": response_text(r)} for r in responses]

    def encode(self, images: Sequence[Any], questions: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """One group: the token prefix the questions' renderings share (with the images) as its prompt, the
        rest of each rendering as a response. A single question keeps all but its last token as the prompt."""
        pil = [load_image(im) for im in images]
        texts = [self.rendering(len(pil), **q) for q in questions]
        enc = self.processor(text=[texts[0]], images=pil or None, return_tensors="np")
        ids = [list(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        shared = min(len(x) for x in ids) - 1  # every question keeps at least its last token
        for x in ids[1:]:
            shared = next((i for i in range(shared) if x[i] != ids[0][i]), shared)
        expanded = enc["input_ids"][0]
        extra = len(expanded) - len(ids[0])  # the image placeholders' expansion, all inside the prompt
        image_ids = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")}
        if any(t in image_ids for x in ids for t in x[shared:]):
            raise InvalidInput("an image placeholder after the text the questions share; images go in the prompt")
        group = {"prompt_ids": expanded[:shared + extra].astype(np.int64),
                 "prompt_mm_token_type_ids": enc["mm_token_type_ids"][0][:shared + extra].astype(np.int64),
                 "responses": [np.asarray(x[shared:], dtype=np.int64) for x in ids]}
        if pil:
            group["pixel_values"] = enc["pixel_values"].astype(np.float32)
            group["image_grid_thw"] = enc["image_grid_thw"].astype(np.int64)
        return group

    video_route = "frames"

    def encode_groups(self, prompt, images, responses: Sequence[Any],
                      response_images: Sequence[Sequence[Any]] | None = None,
                      videos: Sequence[Sequence[Any]] = ()) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """The `PairEncoder.encode_groups` interface: one group, question k at (0, k)."""
        if any(response_images or ()):
            raise InvalidInput("a judge reads text responses; images inside a response go to scalar members")
        prompt, images = frames_as_images(prompt, images or [], videos)  # a judge reads videos as their frames
        questions = self.questions(prompt, responses)
        return [self.encode(images or [], questions)], [(0, k) for k in range(len(questions))]


# ------------------------------------------------------------------------------ loading
def single_token(tokenizer, text: str, *, member: str, setting: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(f"member {member}: judge.{setting} {text!r} is {len(ids)} tokens in this checkpoint's "
                         f"tokenizer ({pieces}); give a single token (its vocabulary spells the word, e.g. 'Yes')")
    return ids[0]


def has_lm_head(path: Path, config) -> bool:
    """Whether the checkpoint's weights (its `config`) hold an LM head, or tie it to the input embeddings."""
    from mrm_ray.model.families import text_config

    if getattr(config, "tie_word_embeddings", False) or getattr(text_config(config), "tie_word_embeddings", False):
        return True
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = json.loads(index.read_text())["weight_map"]
    else:
        from safetensors import safe_open

        names = [k for f in sorted(path.glob("*.safetensors")) for k in safe_open(str(f), "pt").keys()]
    return any(k.endswith("lm_head.weight") for k in names)


def load_generator(ref: str, *, member: str, dtype: torch.dtype | str = torch.float32):
    """(the family's generative model with its LM head, its local path) for a judge; ValueError naming the member
    for a reward checkpoint or a checkpoint without an LM head."""
    from transformers import AutoConfig

    from mrm_ray.model import checkpoints, families

    path = checkpoints.resolve(ref, want=checkpoints.BACKBONE)
    found = checkpoints.kind(path)
    if found != checkpoints.BACKBONE:
        what = "reward" if found == checkpoints.REWARD else "sequence-classification"
        raise ValueError(f"member {member}: {ref} is a {what} checkpoint, which has no LM head to judge with; serve "
                         "it as `kind: scalar`, or give a judge a generative checkpoint (an instruction-tuned model)")
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if not has_lm_head(path, config):
        raise ValueError(f"member {member}: {ref} has no LM head (no lm_head.weight, embeddings not tied); a judge "
                         "reads its verdict from the LM head: give the full generative checkpoint")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    family = families.family_of(config)
    generator = family.transformers_class("generator").from_pretrained(
        path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=False, use_safetensors=True)
    return generator.eval(), path


class Judge(Scorer):
    """A judge member on a device: `score_groups`, `score_items` and `score_pairs` as the `Scorer`'s, each
    response or pair a value or, where this judge gives it no score, the reason (a string)."""

    def __init__(self, path: str, judge: JudgeConfig = JudgeConfig(), *, name: str = "judge",
                 max_batch_tokens: int = MAX_BATCH_TOKENS, dtype: str = "auto", score_mean: float | None = None,
                 score_std: float | None = None) -> None:
        from mrm_ray.model.processor import load_processor
        from mrm_ray.model.reward_model import RewardModel, _set_vision_attention

        if problems := judge.problems():
            raise ValueError(f"member {name}: " + "; ".join(problems))
        device, dtype = device_and_dtype(dtype)
        generator, local = load_generator(path, member=name, dtype=dtype)
        processor = load_processor(local)
        good, bad = (single_token(processor.tokenizer, t, member=name, setting=s)
                     for t, s in zip(judge.tokens, ("first_token", "second_token") if judge.mode == "pairwise"
                                              else ("yes_token", "no_token")))
        _set_vision_attention(generator.model, "sdpa", "batched")
        model = RewardModel(generator.model, head=VerdictHead(generator.lm_head, good, bad),
                            provenance={"judge": str(path)}).to(device).eval()
        self.generator = generator.to(device)
        self.judge = judge
        self.name = name
        self._setup(model, JudgeEncoder(processor, judge), max_batch_tokens=max_batch_tokens, path=str(local),
                    version=self._version(local, judge), score_mean=0.0 if score_mean is None else score_mean,
                    score_std=1.0 if score_std is None else score_std)

    @staticmethod
    def _version(path: Path, judge: JudgeConfig) -> str:
        """A short hash of the checkpoint's config, its weight files' names and sizes, and the judge's settings."""
        digest = hashlib.sha256(json.dumps(to_dict(judge), sort_keys=True).encode())
        digest.update((path / "config.json").read_bytes())
        for f in sorted(path.glob("*.safetensors")):
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
        return digest.hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": "judge", "judge": to_dict(self.judge)}

    # ---------------------------------------------------------------------------- scoring
    def score_groups(self, groups: Sequence[dict], *, progress: bool = False) -> list[list[float | str] | str]:
        if self.judge.mode == "pairwise":
            reason = "a pairwise judge compares pairs (/v1/compare, evaluation); it gives single responses no score"
            return [[reason] * len(g["responses"]) for g in groups]
        if self.judge.mode == "critique":
            return [self._critique_group(g) for g in groups]
        return self._score(groups, progress=progress)

    def score_pairs(self, pairs: Sequence[dict], *, progress: bool = False) -> list[tuple[float, float] | str]:
        """(chosen, rejected) per pair. Pairwise: half the margin each way, the margin the mean over both orders
        of the judge's preference for the chosen response; verdict and critique: each response's verdict."""
        if self.judge.mode != "pairwise":
            return [out if isinstance(out, str) else (out[0], out[1]) for out in self.score_groups(
                [{**p, "responses": [p["chosen"], p["rejected"]]} for p in pairs], progress=progress)]
        return [out if isinstance(out, str) else (out[0] / 2, -out[0] / 2) for out in self.compare_orders(pairs)]

    def compare_orders(self, pairs: Sequence[dict], *, progress: bool = False) -> list[tuple[float, bool] | str]:
        """Pairwise judges, per pair: (the margin for the chosen response: half its reading with the chosen first
        minus its reading with the rejected first; whether both orders prefer the same response), or an error."""
        out: list[tuple[float, bool] | str] = []
        for scored in self._score([{**p, "responses": [p["chosen"], p["rejected"]]} for p in pairs], progress=progress):
            if isinstance(scored, str):
                out.append(scored)
            else:
                chosen_first, rejected_first = scored  # each: log P(first) - log P(second)
                out.append(((chosen_first - rejected_first) / 2, (chosen_first > 0) == (rejected_first < 0)))
        return out

    def _critique_group(self, group: Mapping) -> list[float | str] | str:
        """Each response critiqued, then its verdict read; a timed-out or failed generation is that response's
        reason, the rest are scored."""
        shown = group.get("response_images") or [()] * len(group["responses"])
        out: list[float | str] = []
        for response, images in zip(group["responses"], shown):
            try:
                (question,), _ = self.encoder.encode_groups(group["prompt"], group.get("images") or [], [response],
                                                            [images], videos=group.get("videos") or ())
            except Exception as exc:
                return f"cannot encode: {type(exc).__name__}: {str(exc)[:200]}"
            out.append(self._critique(question))
        return out

    def _critique(self, question: dict) -> float | str:
        tokenizer = self.encoder.tokenizer
        ids = np.concatenate([question["prompt_ids"], question["responses"][0]])
        mm = np.concatenate([question["prompt_mm_token_type_ids"], np.zeros(len(question["responses"][0]), np.int64)])
        inputs = {"input_ids": torch.as_tensor(ids)[None], "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                  "mm_token_type_ids": torch.as_tensor(mm)[None]}
        if "pixel_values" in question:
            inputs |= {"pixel_values": torch.as_tensor(question["pixel_values"]),
                       "image_grid_thw": torch.as_tensor(question["image_grid_thw"])}
        if not self.model.family.vision:
            inputs.pop("mm_token_type_ids")
        limit = self.judge.critique_timeout_s
        start = time.monotonic()
        try:
            with torch.inference_mode():
                generated = self.generator.generate(
                    **{k: v.to(self.device) for k, v in inputs.items()}, max_new_tokens=self.judge.max_critique_tokens,
                    do_sample=False, max_time=limit, pad_token_id=self.encoder.pad_token_id)
        except Exception as exc:  # this response only: no score, and why
            return f"critique failed: {type(exc).__name__}: {str(exc)[:200]}"
        critique = generated[0, len(ids):].tolist()
        ended = tokenizer.eos_token_id in critique
        if time.monotonic() - start >= limit and not ended and len(critique) < self.judge.max_critique_tokens:
            return f"critique timed out after {limit:g} s (judge.critique_timeout_s)"
        if ended:
            critique = critique[:critique.index(tokenizer.eos_token_id)]
        verdict = tokenizer(self.judge.prompt.verdict, add_special_tokens=False)["input_ids"]
        tail = np.asarray(critique + verdict, dtype=np.int64)
        read = {**question, "prompt_ids": np.concatenate([ids, tail[:-1]]),
                "prompt_mm_token_type_ids": np.concatenate([mm, np.zeros(len(tail) - 1, np.int64)]),
                "responses": [tail[-1:]]}
        return self.score_encoded([read])[0][0]


def member_scorer(settings, *, name: str) -> Scorer:
    """What one ensemble member scores with, from its `MemberSettings`: a `Scorer` for a reward model, a `Judge`
    for a judge (here, beside the `Judge`, so that the scorer imports nothing of judges)."""
    options = dict(max_batch_tokens=settings.max_batch_tokens, dtype=settings.dtype, score_mean=settings.score_mean,
                   score_std=settings.score_std)
    if settings.kind == "judge":
        return Judge(settings.path, settings.judge, name=name, **options)
    return Scorer(settings.path, video_route=settings.video_route, **options)
