"""Evaluate reward models and their ensembles on benchmarks; write the JSON and Markdown report.

Bad rows (a missing image, a malformed line, a pair a member cannot encode) are listed per
benchmark with their reasons and left out of every denominator, so all members and
ensembles are compared on the same pairs. Rows scored with stand-in images are counted and
the report says their accuracy means nothing about the model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrm_ray.ensemble import EnsembleConfig, aggregate, routing_mask
from mrm_ray.eval import metrics
from mrm_ray.eval.benchmarks import benchmark, read_benchmark

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    image_root: str | None = None
    stand_in_images: str | None = None
    batch_size: int = 16
    concurrency: int = 1  # actors per member
    num_gpus: float = 0.0  # per actor
    num_cpus: float = 1.0
    limit: int | None = None  # first N good rows per benchmark (smoke runs)
    methods: tuple[str, ...] = ("mean", "z_mean")  # equal-weight methods; weighted ones come from ensemble.yaml


def member_stats(path: str) -> tuple[float, float]:
    """(score_mean, score_std) from a reward checkpoint's reward_config.json."""
    from mrm_ray.model.reward_checkpoint import REWARD_CONFIG, resolve

    meta = json.loads((resolve(path) / REWARD_CONFIG).read_text())
    return float(meta.get("score_mean", 0.0)), float(meta.get("score_std", 1.0))


def load_benchmarks(specs: Sequence[tuple[str, str]], options: EvalOptions) -> tuple[dict, list[dict]]:
    """Per benchmark: good rows and bad entries; all good rows with globally unique ids."""
    from mrm_ray.data.quarantine import Rejected

    from mrm_ray.storage import local_copy

    per: dict[str, dict] = {}
    every: list[dict] = []
    image_root = options.image_root and str(local_copy(options.image_root))  # s3:// folders: copied once
    stand_in = options.stand_in_images and str(local_copy(options.stand_in_images))
    for name, path in specs:
        good, bad = [], []
        for record in read_benchmark(name, local_copy(str(path)), image_root=image_root, stand_in_images=stand_in):
            if isinstance(record, Rejected):
                bad.append({"position": record.position, "reason": record.reason, "id": record.id})
            elif options.limit is None or len(good) < options.limit:
                good.append({**record, "id": f"{name}/{record['id']}"})
        per[name] = {"path": str(path), "rows": good, "bad": bad}
        every += good
    return per, every


def evaluate(specs: Sequence[tuple[str, str]], members: Mapping[str, str], *, options: EvalOptions = EvalOptions(),
             ensemble: EnsembleConfig | None = None) -> tuple[dict, "pa.Table"]:
    """Score every benchmark with every member on Ray Data.

    Returns the report (metrics per member and ensemble method, counts, bad rows) and a
    per-pair table of every member's chosen/rejected scores, for error analysis.
    """
    import pyarrow as pa

    from mrm_ray.eval.scoring import score_pairs_on_ray

    if ensemble is not None:
        members = {m.name: m.path for m in ensemble.members}
    names = list(members)
    per, every = load_benchmarks(specs, options)
    scores = score_pairs_on_ray(every, members, batch_size=options.batch_size, concurrency=options.concurrency,
                                num_gpus=options.num_gpus, num_cpus=options.num_cpus)
    stats = [member_stats(members[n]) for n in names]
    if ensemble is not None:  # the ensemble file's normalisation wins over the checkpoints'
        stats = [(m.score_mean if m.score_mean is not None else s[0], m.score_std if m.score_std is not None else s[1])
                 for m, s in zip(ensemble.members, stats)]
    index = {r["id"]: i for i, r in enumerate(every)}
    table = {"benchmark": [r["id"].split("/", 1)[0] for r in every], "id": [r["id"].split("/", 1)[1] for r in every],
             "group_id": [r.get("group_id") for r in every], "category": [r.get("category") for r in every],
             "stand_in": [bool(r.get("stand_in")) for r in every]}
    for n in names:
        table[f"{n}/chosen"], table[f"{n}/rejected"] = scores[n]["chosen"], scores[n]["rejected"]
        table[f"{n}/error"] = scores[n]["errors"]
    report = {"members": {n: {"path": members[n], "score_mean": s[0], "score_std": s[1]} for n, s in zip(names, stats)},
              "methods": list(options.methods) + ([f"ensemble.yaml ({ensemble.method})"] if ensemble else []),
              "benchmarks": {}}
    for name, data in per.items():
        bench = benchmark(name)
        rows = data["rows"]
        idx = np.array([index[r["id"]] for r in rows], dtype=int)
        failed = Counter()
        keep = np.ones(len(rows), dtype=bool)
        for n in names:
            for j, i in enumerate(idx):
                if scores[n]["errors"][i] is not None:
                    keep[j] = False
                    failed[f"{n}: {scores[n]['errors'][i][:120]}"] += 1
        kept = [r for r, k in zip(rows, keep) if k]
        chosen = np.stack([scores[n]["chosen"][idx[keep]] for n in names])
        rejected = np.stack([scores[n]["rejected"][idx[keep]] for n in names])
        results = {n: bench.score(metrics.correct(chosen[m], rejected[m]), kept) for m, n in enumerate(names)}
        methods = [(f"ensemble: {method}", method, np.ones(len(names)), np.ones((len(names), len(kept)), bool))
                   for method in options.methods]
        if ensemble is not None:
            has_image = [bool(r["images"]) for r in kept]
            methods.append((f"ensemble.yaml ({ensemble.method})", ensemble.method,
                            np.array([m.weight for m in ensemble.members]),
                            routing_mask([m.modalities for m in ensemble.members], has_image)))
        for label, method, weights, mask in methods:
            means, stds = [s[0] for s in stats], [s[1] for s in stats]
            c = aggregate(np.where(mask, chosen, np.nan), method=method, weights=weights, means=means, stds=stds)
            r = aggregate(np.where(mask, rejected, np.nan), method=method, weights=weights, means=means, stds=stds)
            results[label] = bench.score(metrics.correct(c.reward, r.reward), kept)
        bad_reasons = Counter(b["reason"].split(":")[0] for b in data["bad"])
        report["benchmarks"][name] = {
            "title": bench.title, "path": data["path"], "headline": list(bench.headline),
            "counts": {"read": len(rows) + len(data["bad"]), "scored": int(keep.sum()),
                       "bad_rows": len(data["bad"]), "unscorable": int((~keep).sum()),
                       "stand_in_images": sum(bool(r.get("stand_in")) for r in kept)},
            "bad_reasons": dict(bad_reasons), "unscorable_reasons": dict(failed),
            "bad_examples": data["bad"][:20], "results": results}
    return report, pa.table(table)


def write_report(report: dict, out_dir: str | Path, *, pairs: "pa.Table | None" = None) -> tuple[str, str]:
    """report.json, report.md and (with `pairs`) scores.parquet, each written atomically (and uploaded when
    `out_dir` is a URI); returns where report.json and report.md are."""
    from mrm_ray.atomic import atomic_file
    from mrm_ray.storage import RunFolder

    folder = RunFolder(out_dir)
    out = folder.local
    if pairs is not None:
        import pyarrow.parquet as pq

        with atomic_file(out / "scores.parquet", "wb") as f:
            pq.write_table(pairs, f)
    with atomic_file(out / "report.json") as f:
        json.dump(report, f, indent=2, default=float)
        f.write("\n")
    with atomic_file(out / "report.md") as f:
        f.write(markdown(report))
    for name in ("scores.parquet", "report.json", "report.md"):
        folder.push(name)
    return folder.uri("report.json"), folder.uri("report.md")


def markdown(report: dict) -> str:
    lines = ["# Reward model evaluation", ""]
    lines += ["| member | path | score mean | score std |", "|---|---|---|---|"]
    lines += [f"| {n} | `{m['path']}` | {m['score_mean']:.4f} | {m['score_std']:.4f} |"
              for n, m in report["members"].items()]
    for name, bench in report["benchmarks"].items():
        counts = bench["counts"]
        lines += ["", f"## {bench['title']} (`{name}`)", "",
                  f"{counts['scored']} pairs scored of {counts['read']} read; {counts['bad_rows']} bad rows and "
                  f"{counts['unscorable']} unscorable pairs left out of every denominator."]
        if bench["bad_reasons"] or bench["unscorable_reasons"]:
            reasons = {**bench["bad_reasons"], **bench["unscorable_reasons"]}
            lines.append("Left out: " + "; ".join(f"{r} ({n})" for r, n in reasons.items()) + ".")
        if counts["stand_in_images"]:
            lines += ["", f"**{counts['stand_in_images']} pairs were scored with stand-in images** (the benchmark's "
                          "own images were absent): the scoring path ran end to end, but these accuracies say "
                          "nothing about the model."]
        headline = bench["headline"]
        categories = sorted({c for r in bench["results"].values() for c in r.get("per_category", r.get("per_source", {}))})
        lines += ["", "| model | " + " | ".join(headline + categories) + " |",
                  "|---" * (1 + len(headline) + len(categories)) + "|"]
        for label, result in bench["results"].items():
            per = result.get("per_category", result.get("per_source", {}))
            cells = [metrics.percent(result[h]) for h in headline] + [metrics.percent(per.get(c, float("nan")))
                                                                       for c in categories]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        sizes = {c: n for c, n in next(iter(bench["results"].values()))["counts"].items()}
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + "."]
    return "\n".join(lines) + "\n"
