"""Benchmark definitions: which reader reads a benchmark and which metrics score it.

Any other reader name evaluates a preference dataset with plain pairwise accuracy per source.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrm_ray.eval import metrics


@dataclass(frozen=True)
class Benchmark:
    title: str
    reader: str
    headline: tuple[str, ...]  # the published figures, in the published order
    score: Callable[[Sequence[bool], Sequence[dict]], dict]
    # published numbers to compare with: (label, {headline or category: fraction}), in the paper's order
    reference: tuple[tuple[str, dict[str, float]], ...] = ()


BENCHMARKS: dict[str, Benchmark] = {
    "mm_rlhf": Benchmark("MM-RLHF-RewardBench", "mm_rlhf_rewardbench", ("Acc", "Acc+"),
                         lambda ok, rows: metrics.mm_rlhf(ok, [r["group_id"] for r in rows],
                                                          [r["category"] for r in rows]),
                         reference=(("BaseReward", {"Acc": 0.9176, "Acc+": 0.8043}),
                                    ("BaseReward ensemble", {"Acc": 0.9294, "Acc+": 0.8043}))),
    "vl_rewardbench": Benchmark("VL-RewardBench", "vl_rewardbench", ("Overall", "Macro"),
                                lambda ok, rows: metrics.vl_rewardbench(ok, [r["category"] for r in rows]),
                                reference=(("BaseReward", {"Overall": 0.8216, "Macro": 0.8085}),
                                           ("BaseReward ensemble", {"Overall": 0.8441, "Macro": 0.8291}))),
    "multimodal_rewardbench": Benchmark(
        "Multimodal RewardBench", "multimodal_rewardbench", ("Overall",),
        lambda ok, rows: metrics.multimodal_rewardbench(ok, [r["category"] for r in rows]),
        reference=(("BaseReward", {"Overall": 0.728}), ("BaseReward ensemble", {"Overall": 0.736}))),
    # the reasoning task; reference = judges in the MMRB2 README (arXiv 2512.16899): no reward model is reported there
    "mmrb2": Benchmark("Multimodal RewardBench 2 (reasoning)", "mmrb2", ("Reasoning",),
                       lambda ok, rows: metrics.mmrb2(ok, [r["category"] for r in rows]),
                       reference=(("GPT-5 (judge)", {"Reasoning": 0.702}), ("Gemini 2.5 Pro (judge)", {"Reasoning": 0.666}),
                                  ("Qwen3-VL-32B (judge)", {"Reasoning": 0.566}))),
}


def parse_named(spec: str) -> tuple[str, str]:
    """`NAME=PATH`, or `PATH` named after its last folder (command lines: models, benchmarks)."""
    name, sep, path = spec.partition("=")
    return (name, path) if sep else (Path(spec.rstrip("/")).name or spec, spec)


def benchmark(name: str) -> Benchmark:
    """A published benchmark, or any reader scored with pairwise accuracy per source."""
    from mrm_ray.data.readers import READERS

    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name in READERS:
        return Benchmark(name, name, ("accuracy",),
                         lambda ok, rows: metrics.pairwise(ok, [r["source"] for r in rows]))
    raise ValueError(f"unknown benchmark {name!r}: use one of {sorted(BENCHMARKS)} or a reader "
                     f"({', '.join(sorted(READERS))})")


def read_benchmark(name: str, path: str | Path, *, image_root: str | Path | None = None,
                   stand_in_images: str | Path | None = None) -> Iterator:
    """Rows and `Rejected` entries; a reader that needs an image root gets the file's folder by default."""
    from mrm_ray.data.readers import get_reader

    reader = get_reader(benchmark(name).reader)
    accepted = inspect.signature(reader).parameters
    if image_root is None and "image_root" in accepted and accepted["image_root"].default is inspect.Parameter.empty:
        image_root = Path(path).parent
    options = {"image_root": image_root, "stand_in_images": stand_in_images}
    return reader(path, source=name, **{k: v for k, v in options.items() if k in accepted and v is not None})
