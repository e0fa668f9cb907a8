"""What a mixture holds: per-source counts, image sizes and token lengths, bad records."""

from __future__ import annotations

import numpy as np

PERCENTILES = (5, 50, 95, 100)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}


def mixture_stats(prepared) -> dict:
    """Percentiles over the mixed pairs (train and held-out, repeated rows as often as mixed), per source
    and overall, from the light index (no image is read again)."""
    values: dict[str, dict[str, list]] = {}
    for row in prepared.mixed.select(["source", "prompt_tokens", "chosen_tokens", "rejected_tokens",
                                      "image_sizes"]).to_pylist():
        for key in (row["source"], "all"):
            v = values.setdefault(key, {"prompt": [], "response": [], "packed": [], "megapixels": [], "images": []})
            v["prompt"].append(row["prompt_tokens"])
            v["response"] += [row["chosen_tokens"], row["rejected_tokens"]]
            v["packed"].append(row["prompt_tokens"] + row["chosen_tokens"] + row["rejected_tokens"])
            v["megapixels"] += [w * h / 1e6 for w, h in row["image_sizes"]]
            v["images"].append(len(row["image_sizes"]))
    order = [name for name in prepared.counts if name in values] + ["all"]
    return {key: {name: _percentiles(vals) for name, vals in values[key].items()} for key in order if key in values}


def format_report(prepared, stats: dict) -> str:
    """A plain-text table a person reads in a terminal."""
    lines = [f"{'source':<28} {'available':>9} {'bad':>6} {'mixture':>8} {'train':>8} {'held-out':>8}"]
    for name, c in prepared.counts.items():
        lines.append(f"{name:<28} {c['available']:>9} {c['rejected']:>6} {c['mixture']:>8} {c['train']:>8} "
                     f"{c['held_out']:>8}")
    lines.append("")
    lines.append(f"{'source':<28} {'measure':<11} " + " ".join(f"{'p' + str(p):>9}" for p in PERCENTILES))
    for key, measures in stats.items():
        for name in ("prompt", "response", "packed", "megapixels", "images"):
            if measures.get(name):
                label = {"prompt": "prompt tok", "response": "resp. tok", "packed": "packed tok",
                         "megapixels": "image MP", "images": "images"}[name]
                lines.append(f"{key:<28} {label:<11} " + " ".join(
                    f"{measures[name][f'p{p}']:>9.2f}" if name == "megapixels" else
                    f"{measures[name][f'p{p}']:>9.0f}" for p in PERCENTILES))
    if prepared.quarantine_summary:
        lines.append("")
        lines.append("bad records by reason:")
        for source, kinds in prepared.quarantine_summary.items():
            for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {source:<26} {n:>6}  {kind}")
        if prepared.quarantine_path:
            lines.append(f"each bad record, with its position and reason: {prepared.quarantine_path}")
    return "\n".join(lines)
