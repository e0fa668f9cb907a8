"""What a model reference is and where its files are: the one reader every consumer asks.

A reference (references.py: a local directory, an object-store URI, or `tiny[:FAMILY][@SEED]`) names a
directory of one of three kinds:

    reward     written by `RewardModel.save_pretrained` (what a training run exports): the backbone in
               Hugging Face safetensors, `reward_head.safetensors`, and `reward_config.json` (head settings,
               score statistics for ensemble normalisation, provenance)
    seq_cls    a Hugging Face `*ForSequenceClassification` reward model (model/seq_cls.py): config.json names
               the architecture, `score.weight` is its linear head
    backbone   any other checkpoint of a supported family (model/families.py): what a reward model is
               trained from, and what a GRPO policy is

A URI is copied to a local cache on first use (storage.py). A tiny reference is built on first use in the
tiny cache: as a backbone, the tiny random checkpoint of its family and seed (model/tiny.py); as a reward
model, that backbone under a random head of the same seed. Training (`model.path`), the `Scorer` (Serve
members, evaluation, ensemble fitting, `mrm-ray score`), GRPO (its policy and members) and `mrm-ray export`
all resolve and read references here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mrm_ray import references, storage
from mrm_ray.model.families import DEFAULT, TINY_FAMILIES, Family, family_of

REWARD_CONFIG = "reward_config.json"
HEAD_WEIGHTS = "reward_head.safetensors"
FORMAT_VERSION = 1
REWARD, SEQ_CLS, BACKBONE = "reward", "seq_cls", "backbone"


# ------------------------------------------------------------------------------ local directories
def _config_json(path: Path) -> dict | None:
    file = path / "config.json"
    return json.loads(file.read_text()) if file.is_file() else None


def kind(path: str | os.PathLike) -> str | None:
    """REWARD, SEQ_CLS or BACKBONE for a local checkpoint directory; None for anything else."""
    path = Path(path)
    if (path / REWARD_CONFIG).is_file():
        return REWARD
    config = _config_json(path)
    if config is None:
        return None
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or ()):
        return SEQ_CLS
    return BACKBONE


def is_reward_model(path: str | os.PathLike) -> bool:
    """A local directory a reward can be read from (a reward checkpoint or a sequence classifier)."""
    return kind(path) in (REWARD, SEQ_CLS)


@dataclass(frozen=True)
class Info:
    """A reward model's metadata, read without loading its weights."""

    path: Path
    kind: str
    family: Family
    head: dict  # HeadConfig's fields (a sequence classifier's: one linear layer)
    score_mean: float  # what ensembles z-normalise with
    score_std: float
    provenance: dict
    version: str  # a short content hash of what makes its rewards: the head and its settings


def info(path: str | os.PathLike) -> Info:
    """The metadata of a local reward checkpoint or sequence classifier; ValueError for anything else."""
    from mrm_ray.model import seq_cls

    path = Path(path)
    found = kind(path)
    if found == REWARD:
        meta = json.loads((path / REWARD_CONFIG).read_text())
        return Info(path, REWARD, family_of(_config_json(path) or {}), meta["head"], float(meta["score_mean"]),
                    float(meta["score_std"]), meta.get("provenance", {}), version(path))
    if found == SEQ_CLS:
        config = _config_json(path)
        stats = config.get(seq_cls.SCORE_STATS) or {}
        return Info(path, SEQ_CLS, family_of(config), {"num_layers": 1}, float(stats.get("mean", 0.0)),
                    float(stats.get("std", 1.0)), {"base_model": str(path), "format": "hf-seq-cls",
                                                   "architecture": config.get("architectures")}, version(path))
    raise ValueError(_not_a_reward_model(str(path)))


def version(path: str | os.PathLike) -> str:
    """A short content hash of what makes a reward model's rewards beyond its backbone: a reward checkpoint's
    head and config (which records when it was saved), a sequence classifier's config and score weights."""
    from mrm_ray.model import seq_cls

    path = Path(path)
    digest = hashlib.sha256()
    if kind(path) == REWARD:
        for name in (REWARD_CONFIG, HEAD_WEIGHTS):
            digest.update((path / name).read_bytes())
    else:
        digest.update((path / "config.json").read_bytes())
        digest.update(seq_cls.score_weight(path).float().numpy().tobytes())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------------ references
def tiny_family(ref: str) -> str | None:
    """The family a tiny reference builds (checked against those with a tiny checkpoint), None for any
    other reference; ValueError for a malformed one."""
    tiny = references.parse_tiny(ref)
    if tiny is None:
        return None
    family = tiny.family or DEFAULT
    if family not in TINY_FAMILIES:
        raise ValueError(f"{ref!r}: no tiny checkpoint of family {family!r}; tiny:FAMILY takes one of "
                         f"{', '.join(TINY_FAMILIES)}")
    return family


def reference_family(ref: str) -> Family | None:
    """The backbone family a reference names, without building or fetching anything: a local directory's
    or a tiny reference's; None for a URI (read when it is fetched). ValueError for a local path that is no
    checkpoint."""
    from mrm_ray.model.families import family_named

    if (family := tiny_family(ref)) is not None:
        return family_named(family)
    if storage.is_uri(ref):
        return None
    path = Path(ref).expanduser()
    if kind(path) is None:
        raise ValueError(_not_a_checkpoint(ref))
    return family_of(_config_json(path))


def check(ref: str, *, modalities: Iterable[str] = ("image", "text"), name: str = "", reward: bool = True) -> None:
    """Refuse, before anything is deployed or trained, a reference that cannot be what it is used as (a reward
    model, with `reward`), or a text-only one asked to score images (ValueError naming it and what to change)."""
    if reward and references.is_local(ref) and not is_reward_model(Path(ref).expanduser()):
        raise ValueError(_not_a_reward_model(ref))
    family = reference_family(ref)
    if family is not None and "image" in modalities and not family.vision:
        raise ValueError(f"member {name or ref}: {ref} is a text-only {family.name} reward model and cannot score "
                         "images; set its `modalities: [text]` (image items then go to the vision-language members)")


def check_members(members: Iterable[Any]) -> None:
    """`check` every ensemble member (anything with name, path and modalities; a judge's `kind` reads any
    checkpoint, model/judge.py checks its LM head when it loads)."""
    for m in members:
        check(m.path, modalities=m.modalities, name=m.name, reward=getattr(m, "kind", "scalar") == "scalar")


def resolve(ref: str, *, want: str = REWARD) -> Path:
    """The local directory of a reference, building (tiny) or fetching (a URI) it on first use. `want`:
    REWARD (a reward checkpoint or sequence classifier; ValueError otherwise) or BACKBONE (any checkpoint)."""
    if want not in (REWARD, BACKBONE):
        raise ValueError(f"want must be {REWARD!r} or {BACKBONE!r}, got {want!r}")
    family = tiny_family(ref)
    if family is not None:
        return _tiny(references.parse_tiny(ref).seed, family, reward=want == REWARD)
    out = storage.local_copy(ref) if storage.is_uri(ref) else Path(ref).expanduser()
    found = kind(out)
    if found is None or (want == REWARD and found == BACKBONE):
        raise ValueError(_not_a_reward_model(ref) if want == REWARD else _not_a_checkpoint(ref))
    return out


def _not_a_checkpoint(ref: str) -> str:
    return (f"{ref} is not a checkpoint (no config.json): give a checkpoint directory of a supported family, its "
            "s3:// URI, or tiny[:FAMILY][@SEED] for a tiny random one")


def _not_a_reward_model(ref: str) -> str:
    return (f"{ref} is not a reward checkpoint (no {REWARD_CONFIG}, and no *ForSequenceClassification config): use "
            "the `reward_model` directory a training run exports or a Hugging Face sequence-classification reward "
            "model (a path or s3:// URI), or tiny[:FAMILY][@SEED] for a random demo member")


# ------------------------------------------------------------------------------ the reward checkpoint format
def reward_meta(*, head: Mapping[str, Any], score_mean: float, score_std: float,
                provenance: Mapping[str, Any]) -> dict:
    """What `reward_config.json` holds."""
    return {"format_version": FORMAT_VERSION, "head": dict(head), "score_mean": float(score_mean),
            "score_std": float(score_std), "reward_token": "last real token (<|im_end|> closing the response)",
            "provenance": {**provenance, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "mrm_ray_version": _version()}}


def write_reward_checkpoint(out_dir: str | os.PathLike, *, backbone, head_state: Mapping[str, Any], meta: dict,
                            processor=None, report: Mapping[str, Any] | None = None,
                            report_member: str | None = None) -> Path:
    """A reward checkpoint written atomically (temp dir, then rename): the backbone, the head, its config, and its
    model card (model/card.py; `report`: an evaluation report whose `report_member` is this model)."""
    from safetensors.torch import save_file

    from mrm_ray.atomic import atomic_dir
    from mrm_ray.model.card import CARD, model_card
    from mrm_ray.model.families import family_of

    with atomic_dir(out_dir) as tmp:
        backbone.save_pretrained(tmp, safe_serialization=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in head_state.items()}, tmp / HEAD_WEIGHTS,
                  metadata={"format": "pt"})
        if processor is not None:
            processor.save_pretrained(tmp)
        family = family_of(backbone.config)
        (tmp / CARD).write_text(model_card(meta, family=family.name, vision=family.vision, report=report,
                                           member=report_member))
        (tmp / REWARD_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(out_dir).resolve()


def _version() -> str:
    try:
        from importlib.metadata import version as package_version

        return package_version("mrm-ray")
    except Exception:
        return "unknown"


# ------------------------------------------------------------------------------ tiny references
@lru_cache(maxsize=None)
def tiny_root() -> Path:
    """Where tiny references are built, keyed by the code that builds them (a changed builder builds anew)."""
    import transformers

    from mrm_ray.model import families, head, tiny

    digest = hashlib.sha256(transformers.__version__.encode())
    for module in (families, tiny, head):
        digest.update(Path(module.__file__).read_bytes())
    return storage.CACHE.parent / "tiny" / digest.hexdigest()[:10]


def _tiny(seed: int, family: str, *, reward: bool) -> Path:
    out = tiny_root() / f"{family}@{seed}{'-reward' if reward else ''}"
    if kind(out) is None:
        if reward:
            build_tiny_reward_checkpoint(out, seed=seed, family=family)
        else:
            from mrm_ray.model.tiny import build_tiny_checkpoint

            build_tiny_checkpoint(out, seed=seed, family=family)
    return out


def build_tiny_reward_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, family: str = DEFAULT,
                                 text_hidden: int = 64, vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """A tiny reward checkpoint of `family`: its tiny random backbone of `seed` under a random head of the same
    seed (what `tiny[:FAMILY][@SEED]` is as a reward model), for serving demos and tests."""
    import tempfile

    import torch

    from mrm_ray.config import HeadConfig, to_dict
    from mrm_ray.model.families import family_named, text_config
    from mrm_ray.model.head import RewardHead
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.tiny import build_tiny_checkpoint

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        base = build_tiny_checkpoint(Path(tmp) / "base", seed=seed, family=family, text_hidden=text_hidden,
                                     vision_hidden=vision_hidden, text_layers=text_layers)
        backbone = family_named(family).transformers_class().from_pretrained(
            base, dtype=torch.float32, trust_remote_code=False, use_safetensors=True)
        config = HeadConfig(init_seed=seed)
        head = RewardHead(text_config(backbone.config).hidden_size, config)
        meta = reward_meta(head=to_dict(config), score_mean=0.0, score_std=1.0,
                           provenance={"base_model": f"tiny random {family} (seed {seed})"})
        return write_reward_checkpoint(out_dir, backbone=backbone, head_state=head.state_dict(), meta=meta,
                                       processor=load_processor(base))
