"""What a reward-checkpoint reference names, and where its files are: the one place that knows.

A reference is a directory written by `RewardModel.save_pretrained` (what a training run
exports) or a Hugging Face `*ForSequenceClassification` reward model (model/seq_cls.py),
an object-store URI of one (`s3://bucket/run/reward_model`, copied to a local
cache on first use), or `tiny:SEED`: a tiny random reward checkpoint built on first use
(demos and tests). Serving members, evaluation, ensemble fitting and the GRPO job all
resolve references here.
"""

from __future__ import annotations

import os
from pathlib import Path

REWARD_CONFIG = "reward_config.json"
HEAD_WEIGHTS = "reward_head.safetensors"
TINY_PREFIX = "tiny:"
TINY_ROOT = Path.home() / "mrm-ray-runs" / "serve"  # where `tiny:SEED` members are built


def is_reward_checkpoint(path: str | os.PathLike) -> bool:
    """A local directory holding a reward checkpoint (not a plain backbone)."""
    return (Path(path) / REWARD_CONFIG).is_file()


def is_seq_cls(path: str | os.PathLike) -> bool:
    """A local directory holding a `*ForSequenceClassification` checkpoint (config.json names one)."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file() or is_reward_checkpoint(path):
        return False
    architectures = json.loads(config.read_text()).get("architectures") or ()
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def is_reward_model(path: str | os.PathLike) -> bool:
    """Either kind of scoring checkpoint."""
    return is_reward_checkpoint(path) or is_seq_cls(path)


def tiny_seed(ref: str) -> int | None:
    """SEED of a `tiny:SEED` reference, None for any other reference; ValueError for a bad seed."""
    if not ref.startswith(TINY_PREFIX):
        return None
    try:
        return int(ref[len(TINY_PREFIX):])
    except ValueError:
        raise ValueError(f"{ref!r}: a tiny member is tiny:SEED with an integer seed, e.g. tiny:0") from None


def check_reference(ref: str, *, modalities: tuple[str, ...] = ("image", "text"), name: str = "") -> None:
    """Refuse, before anything is deployed, a reference that cannot be a reward checkpoint, or a text-only
    checkpoint asked to score images."""
    family = reference_family(ref)
    if family is not None and "image" in modalities and not family.vision:
        raise ValueError(f"member {name or ref}: {ref} is a text-only {family.name} reward model and cannot score "
                         "images; set its `modalities: [text]` (image items then go to the vision-language members)")


def reference_family(ref: str):
    """The backbone family of a local reward checkpoint (model/families.py); None for one built or fetched on
    first use (`tiny:SEED`: Qwen2.5-VL; a URI: checked when fetched). ValueError if it is not a reward model."""
    import json

    from mrm_ray import storage
    from mrm_ray.model.families import family_of

    if tiny_seed(ref) is not None or storage.is_uri(ref):
        return None
    path = Path(ref).expanduser()
    if not is_reward_model(path):
        raise ValueError(_not_a_reward_checkpoint(ref))
    return family_of(json.loads((path / "config.json").read_text()))


def resolve(ref: str) -> Path:
    """The local directory of a reference, building or downloading it on first use."""
    from mrm_ray import storage

    seed = tiny_seed(ref)
    if seed is not None:
        out = TINY_ROOT / f"tiny-reward-{seed}"
        if not is_reward_checkpoint(out):
            from mrm_ray.model.tiny import build_tiny_reward_checkpoint

            build_tiny_reward_checkpoint(out, seed=seed)
        return out
    out = storage.local_copy(ref) if storage.is_uri(ref) else Path(ref).expanduser()
    if not is_reward_model(out):
        raise ValueError(_not_a_reward_checkpoint(ref))
    return out


def _not_a_reward_checkpoint(ref: str) -> str:
    return (f"{ref} is not a reward checkpoint (no {REWARD_CONFIG}, and no *ForSequenceClassification config): use "
            "the `reward_model` directory a training run exports or a Hugging Face sequence-classification reward "
            "model (a path or s3:// URI), or `tiny:SEED` for a random demo member")
