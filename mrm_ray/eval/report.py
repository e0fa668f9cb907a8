"""Evaluate reward models and their ensembles on benchmarks; write the report (JSON, Markdown, HTML).

Bad rows (a missing image, a malformed line, a pair a member cannot encode) are listed per
benchmark with their reasons and left out of every denominator, so all members and
ensembles are compared on the same pairs; rows of a kind not supported (a video pair) are
counted apart with theirs. Rows scored with stand-in images are counted and the report says
their accuracy means nothing about the model. A benchmark with nothing scored (a path that
does not exist, every record bad) gets a `message` saying so, with the file and the reasons,
and the other benchmarks are scored as usual.

The report folder is a run folder (run_folder.py, local or s3://): the config that made it
(run_config.json), report.json / .md / .html, scores.parquet (every pair's scores), summary.json
(the headline figures), metrics.jsonl and TensorBoard (the same figures as events), every bad row in
quarantine.jsonl, and the driver's log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrm_ray.config import EvalConfig, to_dict
from mrm_ray.data.quarantine import Rejected, reason_kind
from mrm_ray.ensemble import EnsembleConfig, aggregate, load_ensemble, routing_mask
from mrm_ray.eval import metrics
from mrm_ray.eval.benchmarks import benchmark, read_benchmark

if TYPE_CHECKING:
    import pyarrow as pa


def member_stats(path: str) -> tuple[float, float]:
    """(score_mean, score_std) of a reward model, as model/checkpoints.py reads them (a reward checkpoint's
    reward_config.json, a sequence classifier's config)."""
    from mrm_ray.model import checkpoints

    meta = checkpoints.info(checkpoints.resolve(path))
    return meta.score_mean, meta.score_std


def load_benchmarks(specs: Mapping[str, str], *, image_root: str | None = None, stand_in_images: str | None = None,
                    limit: int | None = None) -> tuple[dict, list[dict]]:
    """Per benchmark (name -> its file): good rows, bad entries, rows of a kind not supported, and the read
    error that stopped it (a missing file, say); all good rows with globally unique ids."""
    from mrm_ray.data.quarantine import is_not_supported
    from mrm_ray.storage import local_copy

    for name in specs:  # an unknown name fails before anything is read
        benchmark(name)
    per: dict[str, dict] = {}
    every: list[dict] = []
    image_root = image_root and str(local_copy(image_root))  # s3:// folders: copied once
    stand_in = stand_in_images and str(local_copy(stand_in_images))
    for name, path in specs.items():
        good, bad, unsupported, error = [], [], [], None
        try:
            for record in read_benchmark(name, local_copy(str(path)), image_root=image_root,
                                         stand_in_images=stand_in):
                if isinstance(record, Rejected):
                    (unsupported if is_not_supported(record.reason) else bad).append(record)
                elif limit is None or len(good) < limit:
                    good.append({**record, "id": f"{name}/{record['id']}"})
        except (OSError, ValueError) as exc:  # the benchmark stops here; the others are still scored
            error = f"{type(exc).__name__}: {exc}"
        per[name] = {"path": str(path), "rows": good, "bad": bad, "unsupported": unsupported, "error": error}
        every += good
    return per, every


def _nothing_scored(name: str, data: dict, unscorable: Counter) -> str:
    """What to tell the user about a benchmark none of whose pairs could be scored."""
    where = f"{name} ({data['path']})"
    if data["error"]:
        return f"{where}: could not be read: {data['error']}"
    if not (data["bad"] or data["unsupported"] or unscorable):
        return f"{where}: no records"
    reasons = Counter(reason_kind(b.reason) for b in data["bad"])
    reasons.update(b.reason for b in data["unsupported"])
    reasons.update(unscorable)
    listed = "; ".join(f"{r} ({n})" for r, n in reasons.most_common(5))
    return (f"{where}: nothing readable: {len(data['bad'])} bad, {len(data['unsupported'])} not supported and "
            f"{sum(unscorable.values())} unscorable records: {listed}")


def _route(scores: dict, names: Sequence[str], members: dict, i: int) -> str | None:
    """The route pair `i`'s videos took: the scalar members' (one per run), a judge's where only judges scored it."""
    taken = [scores[n]["routes"][i] for n in names if scores[n]["routes"][i]]
    scalar = [scores[n]["routes"][i] for n in names if scores[n]["routes"][i] and members[n].get("kind") != "judge"]
    return (scalar or taken or [None])[0]


def evaluate(config: EvalConfig) -> tuple[dict, "pa.Table"]:
    """Score every benchmark with every member on Ray Data.

    Returns the report (metrics and calibration per member and ensemble method, counts, bad
    and unsupported rows, and for a benchmark with nothing scored the message why) and a
    per-pair table of every member's chosen/rejected scores, for error analysis. A text-only
    member scores the text-only pairs only: its results are over those (`not_applicable`
    counts the rest), and the ensembles take each pair from the members that scored it. With
    `config.ensemble`, its members are the members and its method, weights and routing one more row.
    """
    import pyarrow as pa

    from mrm_ray.eval.scoring import has_images, score_pairs_on_ray

    ensemble: EnsembleConfig | None = load_ensemble(config.ensemble) if config.ensemble else None
    members = {m.name: {"path": m.path, "kind": m.kind, "judge": to_dict(m.judge), "video_route": config.video_route}
               for m in ensemble.members} if ensemble is not None else \
        {n: {"path": p, "video_route": config.video_route} for n, p in config.models.items()}
    names = list(members)
    per, every = load_benchmarks(config.bench, image_root=config.image_root,
                                 stand_in_images=config.stand_in_images, limit=config.limit)
    scores = score_pairs_on_ray(every, members, batch_size=config.batch_size, concurrency=config.actors_per_model,
                                num_gpus=config.gpus_per_model, num_cpus=config.cpus_per_model,
                                max_batch_tokens=config.max_batch_tokens) if every else {
        n: {"chosen": np.zeros(0), "rejected": np.zeros(0), "errors": [], "applicable": np.zeros(0, bool),
            "routes": [], "takes_images": True} for n in names}
    # a judge has no stored statistics: its log-odds as they are, unless ensemble.yaml gives them
    stats = [(0.0, 1.0) if members[n].get("kind") == "judge" else member_stats(members[n]["path"]) for n in names]
    if ensemble is not None:  # the ensemble file's normalisation wins over the checkpoints'
        stats = [(m.score_mean if m.score_mean is not None else s[0], m.score_std if m.score_std is not None else s[1])
                 for m, s in zip(ensemble.members, stats)]
    index = {r["id"]: i for i, r in enumerate(every)}
    table = {"benchmark": [r["id"].split("/", 1)[0] for r in every], "id": [r["id"].split("/", 1)[1] for r in every],
             "group_id": [r.get("group_id") for r in every], "category": [r.get("category") for r in every],
             "stand_in": [bool(r.get("stand_in")) for r in every],
             # how a video pair's videos reached the scalar members' models (video or frames; a judge reads frames)
             "route": [_route(scores, names, members, i) for i in range(len(every))]}
    for n in names:
        table[f"{n}/chosen"], table[f"{n}/rejected"] = scores[n]["chosen"], scores[n]["rejected"]
        table[f"{n}/error"] = scores[n]["errors"]
    report = {"members": {n: {"path": members[n]["path"], "kind": members[n].get("kind", "scalar"),
                              **({"mode": members[n]["judge"]["mode"]} if members[n].get("kind") == "judge" else {}),
                              "score_mean": s[0], "score_std": s[1],
                              "takes_images": scores[n]["takes_images"]} for n, s in zip(names, stats)},
              "methods": list(config.methods) + ([f"ensemble.yaml ({ensemble.method})"] if ensemble else []),
              "benchmarks": {}, "config": to_dict(config)}
    applicable = np.stack([scores[n]["applicable"] for n in names])  # (members, pairs)
    if ensemble is not None:  # what ensemble.yaml routes to whom, of what each member can take
        routed = applicable & routing_mask([m.modalities for m in ensemble.members], [has_images(r) for r in every])
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
        nobody = ~applicable[:, idx].any(axis=0)
        if ensemble is not None:
            nobody |= ~routed[:, idx].any(axis=0)
        if (nobody & keep).any():
            failed["no member takes images (every member routed these pairs is text-only)"] += int(
                (nobody & keep).sum())
        keep &= ~nobody
        kept = [r for r, k in zip(rows, keep) if k]
        entry = {
            "title": bench.title, "path": data["path"], "headline": list(bench.headline),
            "reference": {label: dict(values) for label, values in bench.reference},
            "counts": {"read": len(rows) + len(data["bad"]) + len(data["unsupported"]), "scored": int(keep.sum()),
                       "bad_rows": len(data["bad"]), "not_supported": len(data["unsupported"]),
                       "unscorable": int((~keep).sum()),
                       "stand_in_images": sum(bool(r.get("stand_in")) for r in kept),
                       "videos": sum(bool(r.get("videos")) for r in kept)},
            "video_routes": dict(Counter(table["route"][i] for i in idx[keep] if table["route"][i])),
            "bad_reasons": dict(Counter(reason_kind(b.reason) for b in data["bad"])),
            "not_supported_reasons": dict(Counter(b.reason for b in data["unsupported"])),
            "unscorable_reasons": dict(failed), "bad_examples": [_example(b) for b in data["bad"][:20]],
            "not_applicable": {n: int((~applicable[m, idx[keep]]).sum()) for m, n in enumerate(names)
                               if (~applicable[m, idx[keep]]).any()},
            "results": {}, "calibration": {}, "position_consistency": {}}
        report["benchmarks"][name] = entry
        if not kept:
            entry["message"] = _nothing_scored(name, data, failed)
            continue
        for label, (c, r, scored) in _rewards(names, stats, scores, idx[keep], applicable[:, idx[keep]],
                                              routed[:, idx[keep]] if ensemble else None, config.methods,
                                              ensemble, config.uncertainty_coef).items():
            entry["results"][label] = bench.score(metrics.correct(c, r), [x for x, s in zip(kept, scored) if s])
            entry["calibration"][label] = metrics.reliability(c - r)
        for n in names:  # pairwise judges: how often both orders pick the same response
            orders = [scores[n]["consistent"][i] for i in idx[keep]]
            if any(o is not None for o in orders):
                read = [o for o in orders if o is not None]
                entry["position_consistency"][n] = {"consistent": float(np.mean(read)), "pairs": len(read)}
    report["quarantine"] = [b.to_dict() for data in per.values() for b in data["bad"] + data["unsupported"]]
    return report, pa.table(table)


def _example(bad: Rejected) -> dict:
    return {"position": bad.position, "reason": bad.reason, "id": bad.id}


def _rewards(names: list[str], stats: list[tuple[float, float]], scores: dict, idx: np.ndarray,
             applicable: np.ndarray, routed: np.ndarray | None, methods: Sequence[str],
             ensemble: EnsembleConfig | None,
             uncertainty_coef: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(chosen, rejected, which kept pairs they are) per member (over the pairs it scored; a member that
    scored none is left out) and per ensemble method (every kept pair, from the members that scored it)."""
    chosen = np.stack([scores[n]["chosen"][idx] for n in names])
    rejected = np.stack([scores[n]["rejected"][idx] for n in names])
    out = {n: (chosen[m][applicable[m]], rejected[m][applicable[m]], applicable[m])
           for m, n in enumerate(names) if applicable[m].any()}
    methods = [(f"ensemble: {method}", method, np.ones(len(names)), applicable, uncertainty_coef)
               for method in methods]
    if ensemble is not None:
        methods.append((f"ensemble.yaml ({ensemble.method})", ensemble.method,
                        np.array([m.weight for m in ensemble.members]), routed, ensemble.uncertainty_coef))
    means, stds = [s[0] for s in stats], [s[1] for s in stats]
    every = np.ones(len(idx), dtype=bool)
    for label, method, weights, mask, coef in methods:
        how = {"method": method, "weights": weights, "means": means, "stds": stds, "uncertainty_coef": coef}
        c = aggregate(np.where(mask, chosen, np.nan), **how)
        r = aggregate(np.where(mask, rejected, np.nan), **how)
        out[label] = (c.reward, r.reward, every)
    return out


REPORT_FILES = ("report.json", "report.md", "report.html", "scores.parquet")


def write_report(report: dict, out_dir: str | Path, *, pairs: "pa.Table | None" = None, tracking=None) -> dict[str, str]:
    """The report folder (a run folder: see the module's header), each file written atomically and uploaded when
    `out_dir` is a URI; returns where each report file is. `tracking` (config/tracking.py's): the headline
    figures, the config and the report files also go to MLflow / W&B."""
    from mrm_ray.atomic import atomic_file
    from mrm_ray.data.quarantine import write_quarantine
    from mrm_ray.eval.markdown import markdown
    from mrm_ray.eval.page import html_page
    from mrm_ray.run_folder import SUMMARY, RunFolder

    folder = RunFolder(out_dir)
    out = folder.local
    body = {k: v for k, v in report.items() if k != "quarantine"}
    if "config" in body:
        folder.write_config(body["config"])
    if pairs is not None:
        import pyarrow.parquet as pq

        with atomic_file(out / "scores.parquet", "wb") as f:
            pq.write_table(pairs, f)
    with atomic_file(out / "report.json") as f:
        json.dump(body, f, indent=2, default=float)
        f.write("\n")
    with atomic_file(out / "report.md") as f:
        f.write(markdown(body))
    with atomic_file(out / "report.html") as f:
        f.write(html_page(body))
    write_quarantine([Rejected(**r) for r in report.get("quarantine", [])], out)
    log = folder.metrics(tracking=tracking, name=Path(str(out_dir).rstrip("/")).name or "eval",
                         params=body.get("config"))
    headline = {}
    for name, bench in body["benchmarks"].items():
        headline[name] = {label: {h: result[h] for h in bench["headline"] if h in result}
                          for label, result in bench["results"].items()}
        for label, figures in headline[name].items():
            log.event("benchmark", 0, {"benchmark": name, "model": label, **figures}, scalars=f"eval/{name}/{label}")
    if tracking is not None and tracking.artifacts:
        for name in REPORT_FILES:
            if (out / name).is_file():
                log.artifact(out / name, kind="report")
    log.close()
    written = [name for name in REPORT_FILES if name != "scores.parquet" or pairs is not None]
    for name in [*written, "quarantine.jsonl"]:
        folder.push(name)
    folder.write_json(SUMMARY, {"benchmarks": headline,
                                "counts": {name: bench["counts"] for name, bench in body["benchmarks"].items()},
                                "report": {name: folder.uri(name) for name in written}})
    return {name: folder.uri(name) for name in written}
