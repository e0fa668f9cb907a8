"""Labelling at scale (`mrm-ray label`): unlabelled records labelled by a judge or an ensemble on Ray Data,
written as preference pairs a reward model trains on (`mrm-ray train` with a `canonical` source), so that RL
pays a scalar reward model's price for a judge's or an ensemble's preferences.

    OUT/pairs/part-KEY.parquet   labelled pairs: the canonical schema (data/schema.py) and their provenance
                                 (record_id, labeller, labeller_version, label_margin, order_agreement,
                                 member_agreement)
    OUT/done/part-KEY.json       the records that part holds, and every pair dropped from them, with why
    OUT/quarantine.jsonl         records that could not be read or encoded, with the reason
    OUT/summary.json             counts over every part: records, pairs, dropped by reason, the labeller

Each two responses of a record (i < j) are a candidate pair. Every member routed the record (by modality, as
served) reads it: a reward model or a verdict / critique judge scores each response, a pairwise judge reads
the pair in both orders. The label's margin is the ensemble's aggregate of response i minus that of response
j (its method, weights and normalisation, as `/v1/compare` computes it); the better response is `chosen`.
Ties (margin 0, or no member scored the pair) are dropped, and so is a margin below `min_margin`; each is
counted with its reason. `order_agreement` says whether every pairwise judge read the pair the same way in
both orders, `member_agreement` the fraction of the members that scored it agreeing with the label.

A part's pairs are written before its `done` file, each atomically (an object store's put is); a part
without its `done` file (a crash between the two) is removed on the next run and its records labelled
again, and the records of every `done` file are skipped: a re-run labels what is not written yet. A part
holds `records_per_part` records, so a crash loses at most that much work.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from mrm_ray.config import LabelConfig, MemberServing, to_dict, validate
from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.schema import MESSAGE, PAIR_SCHEMA

RECORDS = pa.schema([("record_id", pa.string()), ("prompt", pa.list_(MESSAGE)), ("images", pa.list_(pa.binary())),
                     ("responses", pa.list_(pa.string())), ("response_images", pa.list_(pa.list_(pa.binary()))),
                     ("videos", pa.list_(pa.list_(pa.binary())))])
LABELS = pa.schema([("record_id", pa.string()), ("first", pa.int64()), ("second", pa.int64()),
                    ("margin", pa.float64()), ("order_agreement", pa.bool_()), ("member_agreement", pa.float64()),
                    ("status", pa.string()), ("reason", pa.string()), ("version", pa.string())])
PROVENANCE = [("record_id", pa.string()), ("labeller", pa.string()), ("labeller_version", pa.string()),
              ("label_margin", pa.float64()), ("order_agreement", pa.bool_()), ("member_agreement", pa.float64())]
LABELLED_SCHEMA = pa.schema([*PAIR_SCHEMA, *PROVENANCE])
SCORED, UNSCORED, ERROR = "scored", "unscored", "error"  # what a labelling actor says of a candidate pair


# ------------------------------------------------------------------------------ records
def as_unlabelled(row: Mapping) -> dict:
    """A canonical pair row (any reader's) as an unlabelled record: its responses, its preference ignored."""
    responses = [row["chosen"], row["rejected"], *(row.get("more_responses") or ())]
    shown = [row.get("chosen_images") or [], row.get("rejected_images") or []] + [[] for _ in responses[2:]]
    return {"id": row["id"], "source": row["source"], "position": row["position"], "prompt": row["prompt"],
            "images": row["images"], "responses": responses, "response_images": shown,
            "videos": row.get("videos") or []}


def read_records(data: Mapping[str, str], *, image_root: str | None = None,
                 limit: int | None = None) -> tuple[list[dict], list[Rejected]]:
    """Good records (each with a `record_id` unique across the data) and the rejected ones, from `unlabelled`
    files (data/readers/unlabelled.py) or any reader's or benchmark's pairs."""
    from mrm_ray.data.readers.unlabelled import read_unlabelled
    from mrm_ray.eval.benchmarks import read_benchmark
    from mrm_ray.storage import local_copy

    records: list[dict] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    root = image_root and str(local_copy(image_root))
    for name, path in data.items():
        local = local_copy(str(path))
        found = read_unlabelled(local, source=name, image_root=root) if name == "unlabelled" else (
            r if isinstance(r, Rejected) else as_unlabelled(r) for r in read_benchmark(name, local, image_root=root))
        kept = 0
        for record in found:
            if isinstance(record, Rejected):
                rejected.append(record)
                continue
            if limit is not None and kept >= limit:
                continue
            rid = f"{name}/{record['id']}"
            if rid in seen:  # a repeated id: the record's position tells it apart
                rid = f"{name}/{record['position']}"
            seen.add(rid)
            records.append({"response_images": [[] for _ in record["responses"]], "videos": [], **record,
                            "record_id": rid})
            kept += 1
    return records, rejected


# ------------------------------------------------------------------------------ labelling
def labeller_version(config, scorers: Sequence) -> str:
    """A short hash of what makes the labels: the method, weights and each member's checkpoint version."""
    key = json.dumps({"method": config.method, "coef": config.uncertainty_coef,
                      "members": {m.name: [m.weight, s.version] for m, s in zip(config.members, scorers)}},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def label_records(records: Sequence[Mapping], config, scorers: Sequence) -> list[dict]:
    """Candidate pairs of `records` (`RECORDS` rows) as `LABELS` rows, read by `config`'s members (`scorers`, in
    process): a margin per pair, or why it has none (a member could not encode the record: `error`)."""
    from mrm_ray.data.schema import to_chat_messages
    from mrm_ray.ensemble import aggregate, routing_mask

    members = config.members
    has_image = [bool(r["images"] or r["videos"]) or any(r["response_images"]) for r in records]
    routed = routing_mask([m.modalities for m in members], has_image) & \
        np.array([[s.takes_images or not h for h in has_image] for s in scorers])
    inputs = [{"prompt": to_chat_messages(r["prompt"]), "images": r["images"], "responses": r["responses"],
               "response_images": r["response_images"], "videos": r["videos"] or []} for r in records]
    pairs_of = [list(itertools.combinations(range(len(r["responses"])), 2)) for r in records]
    offset = np.cumsum([0] + [len(p) for p in pairs_of])
    first, second = (np.full((len(members), int(offset[-1])), np.nan) for _ in range(2))
    consistent = np.ones((len(members), int(offset[-1])), dtype=bool)
    reasons: list[dict[str, str]] = [{} for _ in range(int(offset[-1]))]
    errors: dict[int, str] = {}
    for m, (member, scorer) in enumerate(zip(members, scorers)):
        mine = np.flatnonzero(routed[m]).tolist()
        if member.kind == "judge" and member.judge.mode == "pairwise":
            asked = [(k, n, i, j) for k in mine for n, (i, j) in enumerate(pairs_of[k])]
            read = scorer.compare_orders([{**inputs[k], "chosen": inputs[k]["responses"][i],
                                           "rejected": inputs[k]["responses"][j]} for k, _, i, j in asked])
            for (k, n, _, _), value in zip(asked, read):
                if isinstance(value, str):
                    errors.setdefault(k, f"member {member.name}: {value}")
                else:
                    p = offset[k] + n
                    first[m, p], second[m, p], consistent[m, p] = value[0] / 2, -value[0] / 2, value[1]
            continue
        for k, values in zip(mine, scorer.score_groups([inputs[k] for k in mine])):
            if isinstance(values, str):
                errors.setdefault(k, f"member {member.name}: {values}")
                continue
            for n, (i, j) in enumerate(pairs_of[k]):
                p = offset[k] + n
                if missing := next((v for v in (values[i], values[j]) if isinstance(v, str)), None):
                    reasons[p][member.name] = missing
                else:
                    first[m, p], second[m, p] = values[i], values[j]
    version = labeller_version(config, scorers)
    scored = ~np.isnan(first).all(axis=0)
    margin = np.full(len(scored), np.nan)
    if scored.any():
        how = {"method": config.method, "weights": [m.weight for m in members],
               "means": [s.score_mean for s in scorers], "stds": [s.score_std for s in scorers],
               "uncertainty_coef": config.uncertainty_coef}
        margin[scored] = aggregate(first[:, scored], **how).reward - aggregate(second[:, scored], **how).reward
    own = first - second  # each member's own margin (NaN where it did not score)
    pairwise = np.array([m.kind == "judge" and m.judge.mode == "pairwise" for m in members])
    out = []
    for k, record in enumerate(records):
        if k in errors:
            out.append({"record_id": record["record_id"], "first": -1, "second": -1, "margin": None,
                        "order_agreement": None, "member_agreement": None, "status": ERROR, "reason": errors[k],
                        "version": version})
            continue
        for n, (i, j) in enumerate(pairs_of[k]):
            p = offset[k] + n
            voted = ~np.isnan(own[:, p])
            ok = bool(scored[p])
            out.append({
                "record_id": record["record_id"], "first": i, "second": j, "margin": float(margin[p]) if ok else None,
                "order_agreement": bool(consistent[voted & pairwise, p].all()) if ok else None,
                "member_agreement": float(np.mean(np.sign(own[voted, p]) == np.sign(margin[p]))) if ok else None,
                "status": SCORED if ok else UNSCORED,
                "reason": None if ok else "; ".join(f"{name}: {why}" for name, why in reasons[p].items())
                or "no member routed this record scored it", "version": version})
    return out


class Labeller:
    """A `map_batches` actor holding every member of the labelling ensemble."""

    def __init__(self, ensemble: dict, max_batch_tokens: int) -> None:
        from mrm_ray.config import EnsembleConfig
        from mrm_ray.model.judge import member_scorer

        self.config = validate(EnsembleConfig, ensemble, where="labeller")
        serving = MemberServing(max_batch_tokens=max_batch_tokens)
        self.scorers = [member_scorer(m.settings(serving), name=m.name) for m in self.config.members]

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(label_records(batch.to_pylist(), self.config, self.scorers), schema=LABELS)


# ------------------------------------------------------------------------------ the output folder
class LabelStore:
    """The output folder, local or at an object-store URI, through one pyarrow filesystem."""

    def __init__(self, out: str) -> None:
        import pyarrow.fs

        from mrm_ray import storage

        self.out = out
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(
            out if storage.is_uri(out) else str(Path(out).expanduser().resolve()))
        self.root = self.root.rstrip("/")
        for sub in ("pairs", "done"):
            self.fs.create_dir(f"{self.root}/{sub}", recursive=True)

    def _names(self, sub: str, suffix: str) -> list[str]:
        import pyarrow.fs

        found = self.fs.get_file_info(pyarrow.fs.FileSelector(f"{self.root}/{sub}", allow_not_found=True))
        return sorted(Path(f.path).name for f in found if f.path.endswith(suffix) and not Path(f.path).name.startswith("."))

    def put(self, relative: str, data: bytes) -> None:
        """Write a file whole: a temporary name, then moved into place."""
        final = f"{self.root}/{relative}"
        tmp = f"{final.rpartition('/')[0]}/.tmp-{final.rpartition('/')[2]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)

    def done(self) -> list[dict]:
        out = []
        for name in self._names("done", ".json"):
            with self.fs.open_input_stream(f"{self.root}/done/{name}") as f:
                out.append(json.loads(f.read()))
        return out

    def remove_orphans(self) -> list[str]:
        """Parts whose `done` file never came (a crash between the two writes), removed; their names."""
        committed = {Path(n).stem for n in self._names("done", ".json")}
        orphans = [n for n in self._names("pairs", ".parquet") if Path(n).stem not in committed]
        for name in orphans:
            self.fs.delete_file(f"{self.root}/pairs/{name}")
        return orphans


def _pair_row(record: Mapping, label: Mapping, *, labeller: str) -> dict:
    better, worse = (label["first"], label["second"]) if label["margin"] > 0 else (label["second"], label["first"])
    return {"id": f"{record['record_id']}#{label['first']}-{label['second']}", "source": record["source"],
            "position": record["position"], "prompt": record["prompt"], "images": record["images"],
            "chosen": record["responses"][better], "rejected": record["responses"][worse], "margin": None,
            "more_responses": [], "scores": None, "chosen_images": record["response_images"][better],
            "rejected_images": record["response_images"][worse], "videos": record["videos"] or [],
            "record_id": record["record_id"],
            "labeller": labeller, "labeller_version": label["version"], "label_margin": abs(label["margin"]),
            "order_agreement": label["order_agreement"], "member_agreement": label["member_agreement"]}


def write_part(store: LabelStore, records: Mapping[str, Mapping], labels: Sequence[Mapping], *, labeller: str,
               min_margin: float) -> dict:
    """One part: the kept pairs of these records, then the `done` file naming the records and the dropped pairs."""
    import pyarrow.parquet as pq

    ids = sorted({label["record_id"] for label in labels})
    key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    kept, dropped, errors = [], [], []
    for label in labels:
        record = records[label["record_id"]]
        if label["status"] == ERROR:
            errors.append({"record_id": record["record_id"], "source": record["source"],
                           "position": record["position"], "reason": label["reason"]})
        elif label["status"] == UNSCORED or label["margin"] == 0 or abs(label["margin"]) < min_margin:
            why = "unscored" if label["status"] == UNSCORED else "tie" if label["margin"] == 0 else "low_margin"
            dropped.append({"record_id": record["record_id"], "pair": [label["first"], label["second"]], "why": why,
                            "margin": label["margin"], "reason": label["reason"]})
        else:
            kept.append(_pair_row(record, label, labeller=labeller))
    if kept:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(kept, schema=LABELLED_SCHEMA), sink)
        store.put(f"pairs/part-{key}.parquet", sink.getvalue().to_pybytes())
    done = {"records": ids, "pairs": len(kept), "dropped": dropped, "errors": errors, "min_margin": min_margin,
            "labeller": labeller, "labeller_version": sorted({label["version"] for label in labels}),
            "order_agreement": [bool(p["order_agreement"]) for p in kept].count(True)}
    store.put(f"done/part-{key}.json", json.dumps(done).encode())
    return done


def summarize(done: Sequence[Mapping], rejected: Sequence[Rejected], *, labeller: str, skipped: int) -> dict:
    pairs = sum(d["pairs"] for d in done)
    return {"labeller": labeller, "labeller_versions": sorted({v for d in done for v in d["labeller_version"]}),
            "records_labelled": sum(len(d["records"]) - len(d["errors"]) for d in done),
            "records_skipped_as_written": skipped, "pairs": pairs,
            "dropped": dict(Counter(p["why"] for d in done for p in d["dropped"])),
            "quarantined": {"unreadable": len(rejected), "unencodable": sum(len(d["errors"]) for d in done)},
            "order_agreement": (sum(d["order_agreement"] for d in done) / pairs) if pairs else None,
            "min_margins": sorted({d["min_margin"] for d in done})}


def label(config: LabelConfig) -> dict:
    """Label `config.data` with `config.labeller` into `config.out` (see the module's header); the summary."""
    import ray
    from tqdm.auto import tqdm

    from mrm_ray.ensemble import load_ensemble

    ensemble = load_ensemble(config.labeller)
    records, rejected = read_records(config.data, image_root=config.image_root, limit=config.limit)
    store = LabelStore(config.out)
    store.remove_orphans()
    written = {rid for d in store.done() for rid in d["records"]}
    todo = [r for r in records if r["record_id"] not in written]
    by_id = {r["record_id"]: r for r in todo}
    if todo:
        table = pa.Table.from_pylist([{k: r[k] for k in RECORDS.names} for r in todo], schema=RECORDS)
        step = config.batch_size * 4  # blocks of a few batches, so every actor gets work
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(table), step)]).map_batches(
            Labeller, batch_size=config.batch_size, batch_format="pyarrow",
            fn_constructor_kwargs={"ensemble": ensemble.to_yaml_dict(), "max_batch_tokens": config.max_batch_tokens},
            compute=ray.data.ActorPoolStrategy(size=config.actors), num_gpus=config.gpus_per_actor,
            num_cpus=config.cpus_per_actor)
        expected = {r["record_id"]: len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in todo}
        pending: dict[str, list[dict]] = {}
        complete: list[str] = []
        progress = tqdm(total=len(todo), desc="label", unit="record")
        options = {"labeller": config.labeller, "min_margin": config.min_margin}
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                rows = pending.setdefault(row["record_id"], [])
                rows.append(row)
                if row["status"] == ERROR or len(rows) == expected[row["record_id"]]:
                    complete.append(row["record_id"])
            while len(complete) >= config.records_per_part:
                part, complete = complete[:config.records_per_part], complete[config.records_per_part:]
                write_part(store, by_id, [x for rid in part for x in pending.pop(rid)], **options)
                progress.update(len(part))
        if complete:
            write_part(store, by_id, [x for rid in complete for x in pending.pop(rid)], **options)
            progress.update(len(complete))
        progress.close()
    done = store.done()
    quarantine = [b.to_dict() for b in rejected] + [
        {"source": e["source"], "position": e["position"], "id": e["record_id"], "reason": e["reason"]}
        for d in done for e in d["errors"]]
    store.put("quarantine.jsonl", "".join(json.dumps(q) + "\n" for q in quarantine).encode())
    summary = {**summarize(done, rejected, labeller=config.labeller, skipped=len(records) - len(todo)),
               "config": to_dict(config)}
    store.put("summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
