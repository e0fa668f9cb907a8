"""The grammar of a model reference: what a `model.path`, a policy, an ensemble member or `--models` value says.

    /data/Qwen2.5-VL-7B-Instruct     a local directory (relative ones are anchored where they were written)
    s3://bucket/runs/tiny/reward_model   an object-store URI (storage.py), copied locally on first use
    tiny[:FAMILY][@SEED]             a tiny random checkpoint, built on first use: `tiny` (Qwen2.5-VL, seed 0),
                                     `tiny:qwen3`, `tiny@1`, `tiny:qwen3_vl@2`; `tiny:SEED` (digits) is the
                                     older spelling of `tiny@SEED`

Only the syntax lives here, so that configs can be checked and anchored before anything is loaded; what a
reference *is* (a reward checkpoint, a `*ForSequenceClassification` one, a backbone, which family) is
model/checkpoints.py's to say, and a tiny reference's family is checked there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mrm_ray.storage import is_uri, join

TINY = "tiny"
_TINY = re.compile(r"^tiny(?::(?P<family>[A-Za-z0-9_]+))?(?:@(?P<seed>-?\d+))?$")


@dataclass(frozen=True)
class TinyRef:
    family: str | None  # None: the default family (model/families.py)
    seed: int = 0


def is_tiny(ref: str) -> bool:
    """Whether `ref` is written as a tiny reference (well formed or not)."""
    return isinstance(ref, str) and (ref == TINY or ref.startswith((TINY + ":", TINY + "@")))


def parse_tiny(ref: str) -> TinyRef | None:
    """The tiny reference `ref` spells, None for any other reference; ValueError for a malformed tiny one."""
    if not is_tiny(ref):
        return None
    match = _TINY.match(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not a tiny reference: write tiny[:FAMILY][@SEED], e.g. tiny, tiny:qwen3, "
                         "tiny@1 or tiny:qwen3_vl@2")
    family, seed = match["family"], match["seed"]
    if family is not None and family.isdigit() and seed is None:  # tiny:SEED, the older spelling
        return TinyRef(None, int(family))
    return TinyRef(family, int(seed or 0))


def is_local(ref: str) -> bool:
    """A local path: neither a URI nor a tiny reference."""
    return not (is_uri(ref) or is_tiny(ref))


def anchored(ref: str, base: str | Path | None = None) -> str:
    """A local path made absolute, against `base` (a folder or its URI) or the current directory; URIs and
    tiny references unchanged. Ray workers and submitted jobs run elsewhere, so configs hold anchored paths."""
    if not is_local(ref):
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    if base is not None and is_uri(str(base)):
        return join(str(base), ref)
    return str((Path(base) / path if base is not None else path).resolve())
