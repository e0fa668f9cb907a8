"""A backbone of any supported family + MLP reward head: a scalar reward read at the last real token.

The family (model/families.py) comes from the checkpoint's config: Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, Qwen3.5, or a text-only Qwen2 / Qwen3 LM. `from_pretrained` takes a plain
checkpoint of the family (fresh head), a reward checkpoint written by `save_pretrained`, or a
Hugging Face `*ForSequenceClassification` reward model (model/checkpoints.py tells them apart
and holds the reward checkpoint's format). No pickle, no remote code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrm_ray.config import HeadConfig, to_dict, validate
from mrm_ray.model import checkpoints, families
from mrm_ray.model.attention import GroupPlan, choose_kernel, use_grouped_attention
from mrm_ray.model.head import RewardHead
from mrm_ray.model.packing import SEG_PROMPT, VIDEO_FEATURES, dense_attention_mask, last_index

logger = logging.getLogger(__name__)
_SAID: set[str] = set()  # families whose layout fallback was logged in this process


class RewardModel(nn.Module):
    """rewards (B,) float32 for sequences; (chosen, rejected) for packed or paired batches."""

    def __init__(self, backbone: nn.Module, head_config: HeadConfig = HeadConfig(), *,
                 score_mean: float = 0.0, score_std: float = 1.0,
                 provenance: Mapping[str, Any] | None = None, packed_attention: str = "auto",
                 head: nn.Module | None = None) -> None:
        """`head`: a readout of the last token's hidden state in place of the MLP head (a judge's verdict,
        model/judge.py); the MLP of `head_config` otherwise."""
        super().__init__()
        self.family = families.family_of(backbone.config)
        if not self.family.shares_prompt and self.family.name not in _SAID:
            _SAID.add(self.family.name)
            logger.warning("%s: its linear-attention layers carry a state along the row, so responses cannot share "
                           "a prompt exactly; each response runs in its own row with its own copy of the prompt "
                           "(the two-sequence layout)", self.family.name)
        use_grouped_attention(families.language_model(backbone))
        self.packed_attention = packed_attention  # attention.KERNELS: auto | varlen | sdpa | dense
        self.backbone = backbone
        self.head = head if head is not None else RewardHead(families.text_config(backbone.config).hidden_size,
                                                             head_config)
        self.head_config = head_config
        self.score_mean = float(score_mean)
        self.score_std = float(score_std)
        self.provenance = dict(provenance or {})

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, head: HeadConfig | None = None,
                        dtype: torch.dtype | str = torch.float32, attn_implementation: str = "sdpa",
                        vision_attention: str = "batched", packed_attention: str = "auto") -> "RewardModel":
        """Load a reward checkpoint, a `*ForSequenceClassification` one (model/seq_cls.py), or wrap a plain
        checkpoint of a supported family with a new head.

        `vision_attention="batched"` runs the vision tower's windowed SDPA attention as one
        call per layer (model/attention.py); "windows" keeps transformers' loop.
        `packed_attention` is the kernel for packed groups: auto (flash varlen on CUDA in half
        precision, padded SDPA elsewhere), varlen, sdpa, or dense (the 4D-mask reference)."""
        path = Path(path)
        options = dict(dtype=dtype, attn_implementation=attn_implementation, vision_attention=vision_attention,
                       packed_attention=packed_attention)
        found = checkpoints.kind(path)
        if found == checkpoints.BACKBONE:
            return cls._wrap(path, head=head or HeadConfig(), **options)
        meta = checkpoints.info(path)  # ValueError for a directory that is no checkpoint
        saved_head = validate(HeadConfig, meta.head)
        if head is not None and (head != saved_head if found == checkpoints.REWARD else head.num_layers != 1):
            raise ValueError(f"{path} is a {'sequence-classification' if found == checkpoints.SEQ_CLS else 'reward'} "
                             f"checkpoint with head {meta.head}; do not pass a different head config when loading it")
        model = cls._wrap(path, head=saved_head, **options)
        model.score_mean, model.score_std, model.provenance = meta.score_mean, meta.score_std, dict(meta.provenance)
        if found == checkpoints.SEQ_CLS:
            from mrm_ray.model.seq_cls import score_head

            weight, bias = score_head(path)
            linear = model.head.mlp[-1]
            with torch.no_grad():
                linear.weight.copy_(weight.reshape(linear.weight.shape).to(linear.weight.dtype))
                linear.bias.fill_(bias)
        else:
            from safetensors.torch import load_file

            model.head.load_state_dict(load_file(path / checkpoints.HEAD_WEIGHTS))
        return model.to(model.dtype)

    @classmethod
    def _wrap(cls, path: Path, *, head: HeadConfig, dtype: torch.dtype | str, attn_implementation: str,
              vision_attention: str, packed_attention: str) -> "RewardModel":
        """The family's backbone from `path` (its LM or score head left out) under a fresh `head`."""
        from transformers import AutoConfig

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        family = families.family_of(AutoConfig.from_pretrained(path, trust_remote_code=False))
        backbone = family.transformers_class().from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=False,
            use_safetensors=True)
        _set_vision_attention(backbone, attn_implementation, vision_attention)
        model = cls(backbone, head, provenance={"base_model": str(path)}, packed_attention=packed_attention)
        return model.to(dtype)

    @classmethod
    def from_config(cls, path: str | os.PathLike, *, head: HeadConfig | None = None,
                    dtype: torch.dtype | str = torch.float32, attn_implementation: str = "sdpa",
                    vision_attention: str = "batched", packed_attention: str = "auto") -> "RewardModel":
        """The architecture in `path/config.json` with random weights: for sizing and speed runs
        of a full-size model before (or without) its checkpoint. Partitioned at construction
        under ZeRO-3, as `from_pretrained` is."""
        from transformers import AutoConfig

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        backbone = families.family_of(config).transformers_class()._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation)
        _set_vision_attention(backbone, attn_implementation, vision_attention)
        model = cls(backbone, head or HeadConfig(), provenance={"base_model": f"{path} (random init)"},
                    packed_attention=packed_attention)
        return model.to(dtype)

    def meta(self, extra: Mapping[str, Any] | None = None) -> dict:
        """What this model's `reward_config.json` holds (provenance updated with `extra`)."""
        return checkpoints.reward_meta(head=to_dict(self.head_config), score_mean=self.score_mean,
                                       score_std=self.score_std, provenance={**self.provenance, **dict(extra or {})})

    def save_pretrained(self, out_dir: str | os.PathLike, *, processor=None, extra: Mapping[str, Any] | None = None,
                        report: Mapping[str, Any] | None = None, report_member: str | None = None) -> Path:
        """Write the reward checkpoint atomically (temp dir, then rename; model/checkpoints.py's format), with its
        model card (`report`: an evaluation report whose `report_member` is this model)."""
        return checkpoints.write_reward_checkpoint(out_dir, backbone=self.backbone, head_state=self.head.state_dict(),
                                                   meta=self.meta(extra), processor=processor, report=report,
                                                   report_member=report_member)

    # -------------------------------------------------------------------------- forward
    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """Rewards z-normalised by the statistics stored with the checkpoint."""
        return (rewards - self.score_mean) / self.score_std

    @property
    def shares_prompt(self) -> bool:
        """Whether packed groups are exact for this family (model/families.py); else one response per row."""
        return self.family.shares_prompt

    def _positions(self, input_ids, mm_token_type_ids, image_grid_thw, keep: torch.Tensor,
                   video: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(A, B, L) positions of the tokens where `keep` is True, by the model's own rule: M-RoPE's three
        axes for vision families (`get_rope_index`, videos' temporal axis from `video_grid_thw` and Qwen2.5-VL's
        `second_per_grid_ts`), one axis counting the kept tokens for text-only ones."""
        if not self.family.vision:
            return (keep.long().cumsum(-1) - 1).clamp(min=0)[None]
        positions, _ = self.backbone.get_rope_index(
            input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw,
            attention_mask=keep.long(), **{k: v for k, v in video.items() if k != "pixel_values_videos"})
        return positions

    def _group_positions(self, input_ids, mm_token_type_ids, image_grid_thw, segment_ids, group_ids,
                         token_offset, video: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(A, R, L) positions of packed groups: each prompt's by the model's rule over the prompts
        alone (one per row of a (G, longest prompt) batch, images and videos in order), each response's
        continuing from its prompt's next position, as if it were the only one."""
        flat_ids, flat_seg, flat_group = input_ids.reshape(-1), segment_ids.reshape(-1), group_ids.reshape(-1)
        flat_offset = token_offset.reshape(-1)
        at = torch.nonzero(flat_seg == SEG_PROMPT).squeeze(1)  # prompt tokens, groups in placement order
        g, off = flat_group[at], flat_offset[at]
        n_groups, longest = int(flat_group.max()) + 1, int(off.max()) + 1
        ids = flat_ids.new_zeros(n_groups, longest)
        mm = mm_token_type_ids.new_zeros(n_groups, longest)
        valid = torch.zeros(n_groups, longest, dtype=torch.bool, device=input_ids.device)
        ids[g, off], mm[g, off], valid[g, off] = flat_ids[at], mm_token_type_ids.reshape(-1)[at], True
        prompt_pos = self._positions(ids, mm, image_grid_thw, valid, video)  # (A, G, longest)
        next_pos = torch.where(valid[None], prompt_pos, -1).amax(dim=(0, 2)) + 1  # (G,)
        positions = torch.zeros(len(prompt_pos), flat_ids.numel(), dtype=prompt_pos.dtype, device=input_ids.device)
        positions[:, at] = prompt_pos[:, g, off]
        resp = torch.nonzero(flat_seg > SEG_PROMPT).squeeze(1)
        positions[:, resp] = (next_pos[flat_group[resp]] + flat_offset[resp])[None]
        return positions.reshape(len(prompt_pos), *input_ids.shape)

    def _hidden(self, input_ids, attention_mask, position_ids, pixel_values, image_grid_thw,
                video: Mapping[str, torch.Tensor], **kwargs) -> torch.Tensor:
        if self.family.vision:
            kwargs.update(pixel_values=pixel_values, image_grid_thw=image_grid_thw)
            if "pixel_values_videos" in video:  # the tower's inputs; second_per_grid_ts only moves positions
                kwargs.update(pixel_values_videos=video["pixel_values_videos"],
                              video_grid_thw=video["video_grid_thw"])
        else:
            if pixel_values is not None or video:
                raise ValueError(f"a text-only {self.family.name} reward model takes no images or videos")
            position_ids = position_ids[0]  # one axis: (B, L)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kwargs)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                **batch: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Packed groups (`collate_groups`, with `segment_ids`) -> rewards (N,) per response, or
        (chosen (P,), rejected (P,)) when the batch names pairs; padded sequences (B, L), either
        padding side (`collate_sequences`, the reference) -> rewards (B,) at each last real token.

        One entry point for every layout, so a DeepSpeed engine wrapping the model runs any.
        """
        if segment_ids is not None:
            rewards = self.forward_groups(input_ids, segment_ids, mm_token_type_ids, pixel_values, image_grid_thw,
                                          **batch)
            if "chosen_index" in batch:
                return rewards[batch["chosen_index"]], rewards[batch["rejected_index"]]
            return rewards
        keep, video = attention_mask.bool(), _video(batch)
        positions = self._positions(input_ids, mm_token_type_ids, image_grid_thw, keep, video)
        mask = dense_attention_mask(keep.long() * SEG_PROMPT, torch.zeros_like(input_ids), self.dtype)
        hidden = self._hidden(input_ids, mask, positions, pixel_values, image_grid_thw, video)
        index = last_index(keep)
        return self.head(hidden[torch.arange(len(index), device=index.device), index])

    def forward_groups(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, mm_token_type_ids: torch.Tensor,
                       pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                       **batch: Any) -> torch.Tensor:
        """A `collate_groups` batch -> rewards (N,) per response, in the groups' order."""
        if not self.shares_prompt:
            groups = batch["group_ids"]
            several = (groups.amax(dim=1) != torch.where(groups < 0, groups.amax(), groups).amin(dim=1)).any()
            if bool(several) or int(segment_ids.max()) > SEG_PROMPT + 1:
                raise ValueError(f"a {self.family.name} reward model cannot share a prompt or a row between "
                                 "responses (model/families.py): collate with share_prompt=model.shares_prompt")
        video = _video(batch)
        positions = self._group_positions(input_ids, mm_token_type_ids, image_grid_thw, segment_ids,
                                          batch["group_ids"], batch["token_offset"], video)
        kernel = choose_kernel(self.packed_attention, device=input_ids.device, dtype=self.dtype)
        if kernel == "dense":
            mask = dense_attention_mask(segment_ids, batch["group_ids"], self.dtype)
            hidden = self._hidden(input_ids, mask, positions, pixel_values, image_grid_thw, video)
        else:
            plan = GroupPlan.build(batch, kernel=kernel)
            hidden = self._hidden(input_ids, None, positions, pixel_values, image_grid_thw, video, group_plan=plan)
        return self.head(hidden.reshape(-1, hidden.shape[-1])[batch["reward_index"]])

    def forward_pairs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) rewards for a `collate_packed` or `collate_two_sequence` batch."""
        out = self(**batch)
        if isinstance(out, tuple):
            return out
        half = len(out) // 2
        return out[:half], out[half:]


def _video(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A batch's video inputs (packing.VIDEO_FEATURES), those it has."""
    return {k: batch[k] for k in VIDEO_FEATURES if batch.get(k) is not None}


def _set_vision_attention(backbone, attn_implementation: str, vision_attention: str) -> None:
    if vision_attention not in ("batched", "windows"):
        raise ValueError(f"vision_attention must be batched or windows, got {vision_attention!r}")
    if families.vision_tower(backbone) is None:
        return
    if vision_attention == "batched" and attn_implementation == "sdpa":  # eager stays eager (debugging)
        from mrm_ray.model.attention import use_for_vision_tower

        use_for_vision_tower(backbone)
