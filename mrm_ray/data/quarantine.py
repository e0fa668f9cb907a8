"""Bad records: why each was set aside, where it came from, and the quarantine file.

Every stage that can meet a bad record (reading, image checks, encoding) turns it into a
`Rejected` entry instead of raising, so one corrupt image or malformed line never costs
the good records around it. The run stops only when the bad fraction passes a threshold.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from mrm_ray.atomic import atomic_file
from mrm_ray.model.inputs import InvalidInput

QUARANTINE_FILE = "quarantine.jsonl"
DEFAULT_MAX_BAD_FRACTION = 0.01


class BadRecord(InvalidInput):
    """A record that cannot become a training pair; `reason` says why in a few words. Readers raise it; the
    model's normaliser raises its base class, `InvalidInput`, and both are quarantined alike."""


NOT_SUPPORTED = "not supported"


class NotSupported(BadRecord):
    """A well-formed record of a kind this tool cannot score (a video pair, a generation task):
    reported apart from bad data, with what it is and why."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{NOT_SUPPORTED}: {what}")


def is_not_supported(reason: str) -> bool:
    return reason.startswith(f"{NOT_SUPPORTED}:")


@dataclass(frozen=True)
class Rejected:
    """One quarantined record: its source, its position there (file:line or file:row), why."""

    source: str
    position: str
    reason: str
    id: str | None = None
    stage: str = "read"  # read | image | encode

    def to_dict(self) -> dict:
        return asdict(self)


class TooManyBadRecords(RuntimeError):
    pass


def reason_kind(reason: str) -> str:
    """The reason's leading phrase (before ':'), used to count bad records by kind."""
    return reason.split(":", 1)[0].strip()


def summarize(rejected: Iterable[Rejected]) -> dict[str, dict[str, int]]:
    """{source: {reason kind: count}}."""
    out: dict[str, Counter] = {}
    for r in rejected:
        out.setdefault(r.source, Counter())[reason_kind(r.reason)] += 1
    return {source: dict(counts) for source, counts in out.items()}


def write_quarantine(rejected: Iterable[Rejected], run_dir: str | os.PathLike) -> Path:
    """Write all entries to `run_dir/quarantine.jsonl` atomically; return its path."""
    target = Path(run_dir) / QUARANTINE_FILE
    with atomic_file(target) as f:
        for r in rejected:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return target


def check_bad_fraction(n_bad: int, n_total: int, *, max_fraction: float, where: str) -> None:
    """Stop with a clear message when more than `max_fraction` of the records are bad."""
    if n_total and n_bad / n_total > max_fraction:
        raise TooManyBadRecords(
            f"{n_bad} of {n_total} records ({n_bad / n_total:.2%}) were bad in {where}, above the "
            f"limit of {max_fraction:.2%}. Read the quarantine file for each record's reason; fix the "
            f"data or raise data.max_bad_fraction if this is expected.")
