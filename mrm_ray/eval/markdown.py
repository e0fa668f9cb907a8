"""The evaluation report as text: `report.md`, and the headline summary `mrm-ray evaluate` prints last.

Both read only the report dict (`eval/report.py::evaluate`), so they show exactly what
report.json holds: percentages with two decimals, the way papers print them, and the
paper's reference numbers beside ours.
"""

from __future__ import annotations

from mrm_ray.eval.metrics import percent


def categories(bench: dict) -> list[str]:
    """The per-category (or per-source) keys any result of a benchmark has, sorted."""
    return sorted({c for r in bench["results"].values() for c in r.get("per_category", r.get("per_source", {}))})


def value(result: dict, key: str) -> float:
    """A headline figure, else a category's accuracy; NaN where the result has neither."""
    if key in result:
        return result[key]
    return result.get("per_category", result.get("per_source", {})).get(key, float("nan"))


def inputs(member: dict) -> str:
    """What a member scores: a text-only backbone scores only the text-only pairs."""
    return "images and text" if member.get("takes_images", True) else "text only"


def sizes(bench: dict) -> dict:
    """The counts of the benchmark's scored pairs (an ensemble's result: a text-only member's covers fewer)."""
    results = list(bench["results"].values())
    return max((r.get("counts", {}) for r in results), key=lambda c: c.get("pairs", 0), default={})


def left_out(bench: dict) -> str:
    counts = bench["counts"]
    text = (f"{counts['scored']} pairs scored of {counts['read']} read; {counts['bad_rows']} bad rows, "
            f"{counts['not_supported']} not supported and {counts['unscorable']} unscorable pairs left out of "
            "every denominator.")
    reasons = {**bench["bad_reasons"], **bench["not_supported_reasons"], **bench["unscorable_reasons"]}
    if reasons:
        text += " Left out: " + "; ".join(f"{r} ({n})" for r, n in reasons.items()) + "."
    if bench.get("not_applicable"):
        text += (" Text-only members scored the text-only pairs only (their figures are over those): "
                 + "; ".join(f"{n} skipped {k} with images" for n, k in bench["not_applicable"].items()) + ".")
    return text


STAND_IN = ("pairs were scored with stand-in images (the benchmark's own images were absent): the scoring path "
            "ran end to end, but these accuracies say nothing about the model.")
VIDEO_ROUTES = {"frames": "each video given as its frames, in order, each an image",  # what each route shows
                "video": "the family's own video path: its video processor's patches and M-RoPE's temporal axis"}


def markdown(report: dict) -> str:
    lines = ["# Reward model evaluation", ""]
    lines += ["| member | path | scores | score mean | score std |", "|---|---|---|---|---|"]
    lines += [f"| {n}{' (judge: ' + m['mode'] + ')' if m.get('kind') == 'judge' else ''} | `{m['path']}` | {inputs(m)} | {m['score_mean']:.4f} | {m['score_std']:.4f} |"
              for n, m in report["members"].items()]
    for name, bench in report["benchmarks"].items():
        lines += ["", f"## {bench['title']} (`{name}`)", "", left_out(bench)]
        if "message" in bench:
            lines += ["", f"**Nothing scored.** {bench['message']}"]
            continue
        for route, n in bench.get("video_routes", {}).items():
            lines += ["", f"{n} video pairs scored on the {route} route ({VIDEO_ROUTES[route]}; model/inputs.py)."]
        if bench["counts"]["stand_in_images"]:
            lines += ["", f"**{bench['counts']['stand_in_images']} {STAND_IN}**"]
        keys = bench["headline"] + categories(bench)
        lines += ["", "| model | " + " | ".join(keys) + " | ECE |", "|---" * (2 + len(keys)) + "|"]
        for label, result in bench["results"].items():
            cells = [percent(value(result, k)) for k in keys]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {percent(bench['calibration'][label]['ece'])} |")
        for label, ref in bench["reference"].items():
            cells = [percent(ref[k]) if k in ref else "" for k in keys]
            lines.append(f"| *paper: {label}* | " + " | ".join(cells) + " | |")
        for n, c in bench.get("position_consistency", {}).items():
            lines += ["", f"Position consistency of {n} (a pairwise judge, each pair read in both orders): "
                          f"{percent(c['consistent'])} of {c['pairs']} pairs pick the same response either way."]
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in sizes(bench).items()) + "."]
        lines += ["", "ECE: expected calibration error of prob_chosen = sigmoid(margin), each pair counted in both "
                      "orders (report.html draws the reliability diagrams)."]
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    """Per benchmark, its headline figures for every member and ensemble next to the paper's."""
    lines = []
    for name, bench in report["benchmarks"].items():
        counts = bench["counts"]
        lines.append(f"{bench['title']} ({name}): {counts['scored']} of {counts['read']} pairs scored"
                     + (f", {counts['stand_in_images']} with stand-in images" if counts["stand_in_images"] else ""))
        if "message" in bench:
            lines.append(f"  NOTHING SCORED: {bench['message']}")
            continue
        rows = [(label, [percent(result[h]) for h in bench["headline"]]) for label, result in bench["results"].items()]
        rows += [(f"paper: {label}", [percent(ref[h]) if h in ref else "-" for h in bench["headline"]])
                 for label, ref in bench["reference"].items()]
        width = max(len(label) for label, _ in rows)
        lines.append("  " + " " * width + "".join(f"{h:>9}" for h in bench["headline"]))
        lines += ["  " + label.ljust(width) + "".join(f"{c:>9}" for c in cells) for label, cells in rows]
    return "\n".join(lines)
