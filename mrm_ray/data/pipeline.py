"""Ray Data pipeline: sources -> checked canonical pairs -> mixture -> model-ready rows.

    read (one task per source, reader generator)   canonical rows + rejected rows
      -> CheckPairs (map_batches actors)            image checks, token counts, fit
      -> materialize                                quarantine file, bad-fraction stop
      -> mixture counts, held-out split, seeded shuffle
      -> EncodePairs (map_batches actors, lazy)     processor + chat template -> ids, pixels

The checked canonical set is materialised (images stay encoded bytes, so it is the size
of the data on disk) because the mixture needs exact per-source counts and training needs
the exact number of steps; pixel tensors are only ever produced streaming.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from mrm_ray.config import DataConfig, to_dict, validate
from mrm_ray.data.mixture import MixtureConfig, is_held_out, plan_counts, unit_hash
from mrm_ray.data.quarantine import (BadRecord, NotSupported, Rejected, check_bad_fraction, summarize,
                                     write_quarantine)
from mrm_ray.data.schema import PAIR_SCHEMA, to_chat_messages

logger = logging.getLogger(__name__)

CHECKED_SCHEMA = (PAIR_SCHEMA
                  .append(pa.field("reject_reason", pa.string()))
                  .append(pa.field("reject_stage", pa.string()))
                  .append(pa.field("prompt_tokens", pa.int64()))
                  .append(pa.field("chosen_tokens", pa.int64()))
                  .append(pa.field("rejected_tokens", pa.int64()))
                  .append(pa.field("more_tokens", pa.list_(pa.int64())))
                  .append(pa.field("image_sizes", pa.list_(pa.list_(pa.int64())))))
_READ_CHUNK = 128
SPLIT = "_split"  # a column EncodePairs passes through, when present


# ---------------------------------------------------------------------------- reading
def _row(record: dict | Rejected) -> dict:
    if isinstance(record, Rejected):
        return {"id": record.id or record.position, "source": record.source, "position": record.position,
                "prompt": [], "images": [], "chosen": "", "rejected": "", "margin": None, "more_responses": [],
                "scores": None, "chosen_images": [], "rejected_images": [],
                "reject_reason": record.reason, "reject_stage": record.stage}
    return {**{k: record.get(k) for k in PAIR_SCHEMA.names}, "reject_reason": None, "reject_stage": None}


def _table(rows: list[dict]) -> pa.Table:
    for row in rows:
        row.update({"prompt_tokens": None, "chosen_tokens": None, "rejected_tokens": None, "more_tokens": [],
                    "image_sizes": []})
    return pa.Table.from_pylist(rows, schema=CHECKED_SCHEMA)


def read_source_batch(tasks: dict) -> Iterator[pa.Table]:
    """map_batches UDF: each task row names a source; yields its records in chunks."""
    from mrm_ray.data.readers import get_reader

    for name, reader, path, options in zip(tasks["name"], tasks["reader"], tasks["path"], tasks["options"]):
        records = get_reader(str(reader))(str(path), source=str(name), **json.loads(str(options)))
        chunk: list[dict] = []
        for record in records:
            chunk.append(_row(record))
            if len(chunk) == _READ_CHUNK:
                yield _table(chunk)
                chunk = []
        if chunk:
            yield _table(chunk)


# ---------------------------------------------------------------------------- checking
class CheckPairs:
    """map_batches actor: image checks and exact token counts under the truncation policy."""

    def __init__(self, processor_path: str, data_config: dict) -> None:
        from mrm_ray.model.processor import load_processor

        self.config = validate(DataConfig, data_config)
        self.processor = load_processor(processor_path, min_pixels=self.config.min_pixels,
                                        max_pixels=self.config.max_pixels)
        self.tokenizer = self.processor.tokenizer
        self.merge = self.processor.image_processor.merge_size

    def _image_tokens(self, width: int, height: int) -> int:
        patches = self.processor.image_processor.get_number_of_image_patches(height, width, {})
        return patches // self.merge**2

    def _ids(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def check(self, row: dict) -> dict:
        from mrm_ray.model.inputs import END_OF_TURN
        from mrm_ray.data.schema import ranked_pairs
        from mrm_ray.data.truncation import cut_response, fit_responses
        from mrm_ray.model.images import BadImage, check_image

        if row.get("chosen_images") or row.get("rejected_images"):
            raise NotSupported("images inside responses (training reads text responses; `mrm-ray evaluate` and "
                               "the scorer take them)")
        images, sizes = [], []
        for data in row["images"]:
            try:
                converted, width, height = check_image(data, self.config)
            except BadImage as exc:
                raise BadRecord(exc.reason) from None
            images.append(converted)
            sizes.append([width, height])
        text = self.processor.apply_chat_template(to_chat_messages(row["prompt"]), add_generation_prompt=True,
                                                  tokenize=False)
        prompt = len(self._ids(text)) + sum(self._image_tokens(w, h) - 1 for w, h in sizes)
        texts = [row["chosen"], row["rejected"], *(row.get("more_responses") or [])]
        ids = [self._ids(t + END_OF_TURN) for t in texts]
        keep = fit_responses(prompt, [len(r) for r in ids], self.config)
        kept = [cut_response(r, k) for r, k in zip(ids, keep)]
        if not ranked_pairs(kept, row.get("scores")):
            raise BadRecord(f"identical after truncation: the responses keep the same first {keep[0] - 1} tokens")
        return {"images": images, "image_sizes": sizes, "prompt_tokens": prompt, "chosen_tokens": len(ids[0]),
                "rejected_tokens": len(ids[1]), "more_tokens": [len(r) for r in ids[2:]]}

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            if row["reject_reason"] is not None:
                continue
            try:
                row.update(self.check(row))
            except BadRecord as exc:
                stage = "image" if "image" in exc.reason else "encode"
                row.update({"reject_reason": exc.reason, "reject_stage": stage, "images": [], "chosen_images": [],
                            "rejected_images": []})
        return pa.Table.from_pylist(rows, schema=CHECKED_SCHEMA)


# ---------------------------------------------------------------------------- encoding
class EncodePairs:
    """map_batches actor: canonical rows -> the columns the packed pair forward needs."""

    def __init__(self, processor_path: str, data_config: dict) -> None:
        from mrm_ray.model.inputs import PairEncoder
        from mrm_ray.model.processor import load_processor

        self.config = validate(DataConfig, data_config)
        self.encoder = PairEncoder(load_processor(processor_path, min_pixels=self.config.min_pixels,
                                                  max_pixels=self.config.max_pixels))

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        from mrm_ray.data.truncation import cut_response, fit_responses

        columns: dict[str, list] = {k: [] for k in (
            "id", "source", "margin", "prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids",
            "more_ids", "more_lengths", "scores", "pixel_values", "image_grid_thw")}
        patch_dim = 3 * self.encoder.processor.image_processor.temporal_patch_size * (
            self.encoder.processor.image_processor.patch_size ** 2)
        for row in table.to_pylist():
            more = row.get("more_responses") or []
            feats = self.encoder.encode_group(to_chat_messages(row["prompt"]), row["images"],
                                              [row["chosen"], row["rejected"], *more])
            keep = fit_responses(len(feats["prompt_ids"]), [len(r) for r in feats["responses"]], self.config)
            chosen, rejected, *others = [cut_response(r, k) for r, k in zip(feats["responses"], keep)]
            columns["id"].append(row["id"])
            columns["source"].append(row["source"])
            columns["margin"].append(np.nan if row["margin"] is None else row["margin"])
            columns["prompt_ids"].append(feats["prompt_ids"])
            columns["prompt_mm_token_type_ids"].append(feats["prompt_mm_token_type_ids"])
            columns["chosen_ids"].append(chosen)
            columns["rejected_ids"].append(rejected)
            # a ranked record's further responses, back to back, and their lengths (empty for a pair)
            columns["more_ids"].append(np.concatenate(others) if others else np.zeros(0, np.int64))
            columns["more_lengths"].append(np.array([len(r) for r in others], np.int64))
            columns["scores"].append(np.asarray(row.get("scores") or [], np.float64))
            columns["pixel_values"].append(feats.get("pixel_values", np.zeros((0, patch_dim), np.float32)))
            columns["image_grid_thw"].append(feats.get("image_grid_thw", np.zeros((0, 3), np.int64)))
        if SPLIT in table.column_names:
            columns[SPLIT] = table[SPLIT].to_pylist()
        out = {}
        for key, values in columns.items():
            if key in ("id", "source", "margin", SPLIT):
                out[key] = np.asarray(values)
            else:  # ragged per row: an object array keeps one ndarray per row
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                out[key] = arr
        return out


# ---------------------------------------------------------------------------- the whole
@dataclass
class PreparedData:
    """The checked, mixed and split canonical pairs, ready to encode."""

    train: "object"  # ray.data.Dataset of canonical rows (seeded shuffle)
    held_out: "object"
    counts: dict[str, dict[str, int]]  # source -> {available, rejected, mixture, train, held_out}
    quarantine_path: Path | None
    quarantine_summary: dict[str, dict[str, int]] = field(default_factory=dict)
    processor_path: str = ""
    data_config: DataConfig = field(default_factory=DataConfig)
    _encoded: dict = field(default_factory=dict, repr=False)  # split -> materialised encoded rows (cache)

    def encode(self, dataset, *, concurrency: int | tuple[int, int] = 1, batch_size: int = 16,
               num_cpus: float = 1.0):
        """Lazily encode canonical rows into model-ready rows (one processor per actor)."""
        return dataset.map_batches(
            EncodePairs, fn_constructor_kwargs={"processor_path": self.processor_path,
                                                "data_config": to_dict(self.data_config)},
            batch_size=batch_size, batch_format="pyarrow", compute=_actors(concurrency), num_cpus=num_cpus)

    def encoded(self, split: str, *, cache: bool, concurrency: int | tuple[int, int] = 1, num_cpus: float = 1.0):
        """The `train` or `held_out` split encoded: streaming, or (`cache`) both splits encoded once, in one
        pass, and kept in the object store for every epoch and every trainer built from this data."""
        if not cache:
            return self.encode(getattr(self, split), concurrency=concurrency, num_cpus=num_cpus)
        if not self._encoded:
            from ray.data.expressions import col

            both = _union([getattr(self, name).map_batches(_tag_split, fn_kwargs={"split": name},
                                                           batch_format="pyarrow")
                           for name in ("train", "held_out")])
            encoded = self.encode(both, concurrency=concurrency, num_cpus=num_cpus).materialize()
            for name in ("train", "held_out"):
                self._encoded[name] = encoded.filter(expr=col(SPLIT) == name).drop_columns([SPLIT]).materialize()
        return self._encoded[split]


def _tag_split(table: pa.Table, *, split: str) -> pa.Table:
    return table.append_column(SPLIT, pa.array([split] * table.num_rows, pa.string()))


def _actors(concurrency: int | tuple[int, int]):
    """An actor pool of a fixed size, or autoscaling between (min, max) actors."""
    import ray.data

    if isinstance(concurrency, tuple):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    return ray.data.ActorPoolStrategy(size=concurrency)


def _checked(mixture: MixtureConfig, processor_path: str, config: DataConfig, concurrency, num_cpus: float):
    import ray

    tasks = [{"name": s.name, "reader": s.reader, "path": s.path, "options": json.dumps(s.options)}
             for s in mixture.sources]
    return (ray.data.from_items(tasks, override_num_blocks=len(tasks))
            .map_batches(read_source_batch, batch_size=1, batch_format="numpy")
            .map_batches(CheckPairs, fn_constructor_kwargs={"processor_path": processor_path,
                                                            "data_config": to_dict(config)},
                         batch_size=32, batch_format="pyarrow", compute=_actors(concurrency), num_cpus=num_cpus)
            .materialize())


def _sample(dataset, n: int, *, seed: int, source: str):
    """Exactly `n` rows chosen by a seeded hash of (id, position); repeats rows if n > size."""
    size = dataset.count()
    ranked = dataset.map_batches(
        lambda t: t.append_column("_rank", pa.array([unit_hash("mix", seed, source, i, p) for i, p in
                                                     zip(t["id"].to_pylist(), t["position"].to_pylist())])),
        batch_format="pyarrow")
    if size == 0 or n == 0:
        return dataset.limit(0)
    copies, rest = divmod(n, size)
    parts = [dataset] * copies + ([ranked.sort("_rank").limit(rest).drop_columns(["_rank"])] if rest else [])
    return _union(parts)


def _held_out_flag(table: pa.Table, *, fraction: float, seed: int) -> pa.Table:
    flags = [is_held_out(f"{i}@{p}", src, fraction=fraction, seed=seed) for i, p, src in
             zip(table["id"].to_pylist(), table["position"].to_pylist(), table["source"].to_pylist())]
    return table.append_column("_held_out", pa.array(flags, pa.bool_()))


def prepare_mixture(mixture: MixtureConfig, *, processor_path: str | Path, data_config: DataConfig = DataConfig(),
                    run_dir: str | Path | None = None, concurrency: int | tuple[int, int] = 1,
                    num_cpus: float = 1.0) -> PreparedData:
    """Read, check, quarantine, mix and split; raises TooManyBadRecords past the threshold.

    Sets this driver's Ray Data `preserve_order` from `data_config` (Ray Train's shards inherit it).
    """
    from ray.data import DataContext
    from ray.data.expressions import col

    DataContext.get_current().execution_options.preserve_order = data_config.preserve_order

    checked = _checked(mixture, str(processor_path), data_config, concurrency, num_cpus)
    rejected = [Rejected(r["source"], r["position"], r["reject_reason"], r["id"], r["reject_stage"])
                for r in checked.filter(expr=col("reject_reason").is_not_null())
                .select_columns(["source", "position", "reject_reason", "id", "reject_stage"]).take_all()]
    good = checked.filter(expr=col("reject_reason").is_null()).materialize()
    quarantine_path = write_quarantine(rejected, run_dir) if run_dir is not None else None
    by_source = {s.name: good.filter(expr=col("source") == s.name).materialize() for s in mixture.sources}
    available = {name: ds.count() for name, ds in by_source.items()}
    rejected_by = {s.name: sum(r.source == s.name for r in rejected) for s in mixture.sources}
    for name, n_bad in rejected_by.items():
        if n_bad:
            logger.warning("source %s: %d bad records quarantined", name, n_bad)
    check_bad_fraction(len(rejected), checked.count(), max_fraction=data_config.max_bad_fraction,
                       where=f"mixture {mixture.name!r}" + (f" (see {quarantine_path})" if quarantine_path else ""))
    counts = plan_counts(mixture, available)
    train_parts, held_parts, table = [], [], {}
    for s in mixture.sources:
        mixed = _sample(by_source[s.name], counts[s.name], seed=mixture.seed, source=s.name).map_batches(
            _held_out_flag, fn_kwargs={"fraction": mixture.held_out_fraction, "seed": mixture.seed},
            batch_format="pyarrow").materialize()
        held = mixed.filter(expr=col("_held_out")).drop_columns(["_held_out"]).materialize()
        train = mixed.filter(expr=~col("_held_out")).drop_columns(["_held_out"]).materialize()
        train_parts.append(train)
        held_parts.append(held)
        table[s.name] = {"available": available[s.name], "rejected": rejected_by[s.name],
                         "mixture": counts[s.name], "train": train.count(), "held_out": held.count()}
    train = _union(train_parts).random_shuffle(seed=data_config.shuffle_seed).materialize()
    return PreparedData(train=train, held_out=_union(held_parts).materialize(), counts=table,
                        quarantine_path=quarantine_path, quarantine_summary=summarize(rejected),
                        processor_path=str(processor_path), data_config=data_config)


def _union(parts: list):
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
