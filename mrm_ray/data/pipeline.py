"""Ray Data pipeline: sources -> checked canonical pairs -> mixture -> model-ready rows, streaming.

    light pass (once, before training)
      IndexParts (map_batches actors over the parts of data/parts.py, many per source): each reads
        its parts, checks them (CheckPairs: images, token counts, fit) and keeps the light index:
        id, source, position, part/row, reason, lengths, mixture rank, held-out flag; no image
        byte of this pass enters the object store
      -> quarantine file, bad-fraction stop, per-source counts, the mixture's rows and copies,
         the held-out split, steps per epoch: all from the index, on the driver
    heavy pass (streaming, every epoch)
      read the selected rows of the parts (train: parts and their rows in a seeded order)
        -> image conversion (tasks)                as the check converted them
        -> EncodePairs (map_batches actors)        processor + chat template -> ids, pixels
        -> the trainers (streaming_split)

Nothing but the light index is ever held whole, so memory stays bounded whatever the size
of the images. Training rows are shuffled by part order and within each part (seeded), plus the
trainers' local shuffle buffer, not by an all-to-all shuffle of the heavy rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from mrm_ray.config import DataConfig, to_dict, validate
from mrm_ray.data.mixture import MixtureConfig, is_held_out, plan_counts, unit_hash
from mrm_ray.data.quarantine import (BadRecord, NotSupported, Rejected, check_bad_fraction, summarize,
                                     write_quarantine)
from mrm_ray.model.inputs import InvalidInput
from mrm_ray.data.parts import (BLOCK_TARGET, CHECKED_SCHEMA, PLACE, part_from_json, part_json, parts_dataset,
                                plan_parts, read_part, selection)
from mrm_ray.data.schema import to_chat_messages

logger = logging.getLogger(__name__)

SPLIT = "_split"  # a column EncodePairs passes through, when present
# The held-out split's read tasks and encoding actors hold no CPU of their own (and run as many at once as the
# train stream's actors, `preprocess_workers`). It is read only while the trainers wait for it (an evaluation), so
# it runs in their time. Holding CPUs, it could not start while the train stream's actors and queued tasks hold the
# rest of a small cluster (training hung at its first evaluation on 2 CPUs), nor the train stream again after it.
HELD_OUT_CPUS = 0.0


# ---------------------------------------------------------------------------- checking
class CheckPairs:
    """map_batches actor: image checks and exact token counts under the truncation policy, decided from the
    images' sizes by the encoder's own count (`PairEncoder.count_prompt_tokens`), as `EncodePairs` decides it."""

    def __init__(self, processor_path: str, data_config: dict) -> None:
        from mrm_ray.model.inputs import PairEncoder
        from mrm_ray.model.processor import load_processor

        self.config = validate(DataConfig, data_config)
        self.encoder = PairEncoder(load_processor(processor_path, min_pixels=self.config.min_pixels,
                                                  max_pixels=self.config.max_pixels),
                                   video_route=self.config.video_route)
        self.vision = self.encoder.processor.image_processor is not None  # False: a text-only backbone

    def _image(self, data: bytes) -> tuple[bytes, list[int]]:
        from mrm_ray.model.images import BadImage, check_image

        try:
            converted, width, height = check_image(data, self.config)
        except BadImage as exc:
            raise BadRecord(exc.reason) from None
        return converted, [width, height]

    def check(self, row: dict) -> dict:
        from mrm_ray.data.schema import ranked_pairs
        from mrm_ray.model.truncation import cut_response, fit_responses

        if row.get("chosen_images") or row.get("rejected_images"):
            raise NotSupported("images inside responses (training reads text responses; `mrm-ray evaluate` and "
                               "the scorer take them)")
        videos = row.get("videos") or []
        if (row["images"] or videos) and not self.vision:
            raise NotSupported(f"{'images' if row['images'] else 'videos'}, by a text-only backbone (a "
                               "vision-language member scores them)")
        shown = [self._image(data) for data in row["images"]]
        checked = [[self._image(frame) for frame in video] for video in videos]  # frames converted as images
        images, sizes = [data for data, _ in shown], [size for _, size in shown]
        videos = [[data for data, _ in video] for video in checked]
        ids = [self.encoder.encode_response(t) for t in (row["chosen"], row["rejected"], *(row.get("more_responses")
                                                                                          or []))]
        prompt = self.encoder.count_prompt_tokens(to_chat_messages(row["prompt"]), sizes, videos)
        keep = fit_responses(prompt, [len(r) for r in ids], self.config)
        if not ranked_pairs([cut_response(r, k) for r, k in zip(ids, keep)], row.get("scores")):
            raise BadRecord(f"identical after truncation: the responses keep the same first {keep[0] - 1} tokens")
        lengths = [len(r) for r in ids]
        return {"images": images, "videos": videos, "image_sizes": sizes + [size for v in checked for _, size in v],
                "prompt_tokens": prompt, "chosen_tokens": lengths[0],
                "rejected_tokens": lengths[1], "more_tokens": lengths[2:]}

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            if row["reject_reason"] is not None:
                continue
            try:
                row.update(self.check(row))
            except InvalidInput as exc:
                stage = "image" if "image" in exc.reason else "encode"
                row.update({"reject_reason": exc.reason, "reject_stage": stage, "images": [], "chosen_images": [],
                            "rejected_images": [], "videos": []})
        return pa.Table.from_pylist(rows, schema=CHECKED_SCHEMA)


# ---------------------------------------------------------------------------- encoding
class EncodePairs:
    """map_batches actor: canonical rows -> the columns the packed pair forward needs, each record truncated as
    the light pass decided it (the same counts, the same policy: a record the check passed cannot fail here)."""

    def __init__(self, processor_path: str, data_config: dict) -> None:
        from mrm_ray.model.inputs import PairEncoder
        from mrm_ray.model.processor import load_processor

        self.config = validate(DataConfig, data_config)
        self.encoder = PairEncoder(load_processor(processor_path, min_pixels=self.config.min_pixels,
                                                  max_pixels=self.config.max_pixels),
                                   video_route=self.config.video_route)

    def _encode(self, row: dict) -> dict:
        from mrm_ray.model.images import image_size
        from mrm_ray.model.truncation import cut_response, fit_responses

        messages, videos = to_chat_messages(row["prompt"]), row.get("videos") or []
        feats = self.encoder.encode_group(messages, row["images"], [row["chosen"], row["rejected"],
                                                                    *(row.get("more_responses") or [])], videos=videos)
        if videos and self.encoder.video_route == "video":  # the count is this encoding's length: not encoded twice
            prompt = len(feats["prompt_ids"])
        else:
            prompt = self.encoder.count_prompt_tokens(messages, [image_size(b) for b in row["images"]], videos)
        try:
            keep = fit_responses(prompt, [len(r) for r in feats["responses"]], self.config)
        except InvalidInput as exc:  # only if the record changed on disk after the light pass checked it
            raise RuntimeError(f"{row['source']} {row['id']}: {exc.reason}, though the check passed it: did the "
                               "data change while the run was reading it?") from None
        if len(feats["prompt_ids"]) != prompt:
            logger.warning("%s %s: the prompt encodes to %d tokens, counted %d from its image sizes; truncated as "
                           "counted", row["source"], row["id"], len(feats["prompt_ids"]), prompt)
        feats["responses"] = [cut_response(r, k) for r, k in zip(feats["responses"], keep)]
        return feats

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        columns: dict[str, list] = {k: [] for k in (
            "id", "source", "margin", "prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids",
            "more_ids", "more_lengths", "scores", "pixel_values", "image_grid_thw", "pixel_values_videos",
            "video_grid_thw", "second_per_grid_ts")}
        images = self.encoder.processor.image_processor  # None: a text-only backbone
        patch_dim = 0 if images is None else 3 * images.temporal_patch_size * images.patch_size ** 2
        for row in table.to_pylist():
            feats = self._encode(row)
            chosen, rejected, *others = feats["responses"]
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
            # the video route's features (empty on the frames route, where a video's frames are images)
            columns["pixel_values_videos"].append(feats.get("pixel_values_videos",
                                                            np.zeros((0, patch_dim), np.float32)))
            columns["video_grid_thw"].append(feats.get("video_grid_thw", np.zeros((0, 3), np.int64)))
            columns["second_per_grid_ts"].append(feats.get("second_per_grid_ts", np.zeros(0, np.float32)))
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
    """The checked, mixed and split canonical pairs, streaming (read again each time they are iterated)."""

    train: "object"  # ray.data.Dataset of canonical rows (the train parts, and their rows, in a seeded order)
    held_out: "object"
    counts: dict[str, dict[str, int]]  # source -> {available, rejected, mixture, train, held_out}
    quarantine_path: Path | None
    quarantine_summary: dict[str, dict[str, int]] = field(default_factory=dict)
    processor_path: str = ""
    data_config: DataConfig = field(default_factory=DataConfig)
    mixed: pa.Table | None = None  # the light columns of every mixed row (copies repeated): statistics
    parts: int = 0  # read tasks per pass
    _encoded: dict = field(default_factory=dict, repr=False)  # split -> materialised encoded rows (cache)

    @property
    def n_train(self) -> int:
        return sum(c["train"] for c in self.counts.values())

    @property
    def n_held_out(self) -> int:
        return sum(c["held_out"] for c in self.counts.values())

    def encode(self, dataset, *, concurrency: int | tuple[int, int] = 1, batch_size: int = 16,
               num_cpus: float = 1.0):
        """Lazily encode canonical rows into model-ready rows (one processor per actor)."""
        return dataset.map_batches(
            EncodePairs, fn_constructor_kwargs={"processor_path": self.processor_path,
                                                "data_config": to_dict(self.data_config)},
            batch_size=batch_size, batch_format="pyarrow", compute=_actors(concurrency), num_cpus=num_cpus)

    def both_splits(self):
        """Train and held-out rows as one dataset, each tagged with its split (column SPLIT): one pass, one
        actor pool, encodes both."""
        return _union([getattr(self, name).map_batches(_tag_split, fn_kwargs={"split": name}, batch_format="pyarrow")
                       for name in ("train", "held_out")])

    def encoded(self, split: str, *, cache: bool, concurrency: int | tuple[int, int] = 1, num_cpus: float = 1.0):
        """The `train` or `held_out` split encoded: streaming (the held-out split by one actor holding no CPU,
        HELD_OUT_CPUS), or (`cache`) both splits encoded once, in one pass, and kept in the object store for
        every epoch and every trainer built from this data."""
        if not cache:
            if split == "held_out":  # as many at once as the train stream has actors (0 CPU: nothing caps them)
                return self.encode(self.held_out, concurrency=_most(concurrency), num_cpus=HELD_OUT_CPUS)
            return self.encode(self.train, concurrency=concurrency, num_cpus=num_cpus)
        if not self._encoded:
            from ray.data.expressions import col

            encoded = self.encode(self.both_splits(), concurrency=concurrency, num_cpus=num_cpus).materialize()
            for name in ("train", "held_out"):
                self._encoded[name] = encoded.filter(expr=col(SPLIT) == name).drop_columns([SPLIT]).materialize()
        return self._encoded[split]


def _tag_split(table: pa.Table, *, split: str) -> pa.Table:
    return table.append_column(SPLIT, pa.array([split] * table.num_rows, pa.string()))


def _most(concurrency: int | tuple[int, int]) -> int:
    return concurrency[1] if isinstance(concurrency, tuple) else concurrency


def _actors(concurrency: int | tuple[int, int]):
    """An actor pool of a fixed size, or autoscaling between (min, max) actors."""
    import ray.data

    if isinstance(concurrency, tuple):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    return ray.data.ActorPoolStrategy(size=concurrency)


LIGHT = ("id", "source", "position", "reject_reason", "reject_stage", "prompt_tokens", "chosen_tokens",
         "rejected_tokens", "image_sizes", *PLACE)


def _light(table: pa.Table, *, seed: int, fraction: float) -> pa.Table:
    """The light index of checked rows: small columns, each row's mixture rank and held-out flag (the
    heavy columns are dropped here, as the rows stream past)."""
    ids, positions, sources = (table[k].to_pylist() for k in ("id", "position", "source"))
    rank = [unit_hash("mix", seed, s, i, p) for i, p, s in zip(ids, positions, sources)]
    held = [is_held_out(f"{i}@{p}", s, fraction=fraction, seed=seed) for i, p, s in zip(ids, positions, sources)]
    return (table.select(list(LIGHT)).append_column("_rank", pa.array(rank, pa.float64()))
            .append_column("_held", pa.array(held, pa.bool_())))


class IndexParts(CheckPairs):
    """map_batches actor of the light pass: reads its parts itself, checks them and keeps only the light index,
    so no image byte of the light pass ever enters the object store."""

    def __init__(self, processor_path: str, data_config: dict, seed: int, fraction: float) -> None:
        super().__init__(processor_path, data_config)
        self.seed, self.fraction = seed, fraction

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for described in batch["part"].to_pylist():
            for table in read_part(part_from_json(described)):
                yield _light(super().__call__(table), seed=self.seed, fraction=self.fraction)


def _convert_images(table: pa.Table, *, data_config: dict) -> pa.Table:
    """The heavy pass's image step: each image and video frame converted as the check converted it (modes,
    alpha)."""
    from mrm_ray.model.images import check_image

    config = validate(DataConfig, data_config)
    images = [[check_image(data, config)[0] for data in row] for row in table["images"].to_pylist()]
    videos = [[[check_image(data, config)[0] for data in video] for video in row or ()]
              for row in table["videos"].to_pylist()]
    table = table.set_column(table.schema.get_field_index("images"), "images", pa.array(images, pa.list_(pa.binary())))
    table = table.set_column(table.schema.get_field_index("videos"), "videos",
                             pa.array(videos, pa.list_(pa.list_(pa.binary()))))
    return table.drop_columns(list(PLACE))


def _mix(index: pa.Table, mixture: MixtureConfig, counts: dict[str, int]) -> tuple[dict, dict, dict]:
    """(train copies, held-out copies) per (part, row), and per-source split counts: every good row of a
    source `n // size` times, plus the `n % size` of lowest mixture rank once more (repeated rows
    share their held-out flag)."""
    train: dict = {}
    held: dict = {}
    table: dict = {}
    for s in mixture.sources:
        rows = index.filter(pa.compute.equal(index["source"], s.name))
        size, n = rows.num_rows, counts[s.name]
        copies = np.zeros(size, np.int64)
        if size and n:
            whole, rest = divmod(n, size)
            copies[:] = whole
            copies[np.argsort(rows["_rank"].to_numpy(), kind="stable")[:rest]] += 1
        flags = rows["_held"].to_numpy(zero_copy_only=False)
        for part, row, c, h in zip(rows["_part"].to_pylist(), rows["_row"].to_pylist(), copies, flags):
            (held if h else train)[(part, row)] = int(c)
        table[s.name] = {"train": int(copies[~flags].sum()), "held_out": int(copies[flags].sum())}
    return train, held, table


def prepare_mixture(mixture: MixtureConfig, *, processor_path: str | Path, data_config: DataConfig = DataConfig(),
                    run_dir: str | Path | None = None, concurrency: int | tuple[int, int] = 1,
                    num_cpus: float = 1.0) -> PreparedData:
    """Read, check, quarantine, mix and split (the light pass); raises TooManyBadRecords past the threshold.
    The returned splits stream the heavy rows.

    Sets this driver's Ray Data `preserve_order` from `data_config`, and its target block size to parts.py's
    BLOCK_TARGET (Ray Train's shards inherit both).
    """
    import ray
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = data_config.preserve_order
    context.target_max_block_size = BLOCK_TARGET
    parts = plan_parts(mixture.sources, rows_per_part=data_config.rows_per_part)
    index_refs = (ray.data.from_items([{"part": part_json(p)} for p in parts], override_num_blocks=len(parts))
                  .map_batches(IndexParts, fn_constructor_kwargs={
                      "processor_path": str(processor_path), "data_config": to_dict(data_config),
                      "seed": mixture.seed, "fraction": mixture.held_out_fraction},
                      batch_size=1, batch_format="pyarrow", compute=_actors(concurrency), num_cpus=num_cpus)
                  .to_arrow_refs())
    tables = [t for t in ray.get(index_refs) if t.num_rows]
    index = pa.concat_tables(tables) if tables else pa.table(  # every source empty: an empty index
        {**{k: pa.array([], CHECKED_SCHEMA.field(k).type) for k in LIGHT},
         "_rank": pa.array([], pa.float64()), "_held": pa.array([], pa.bool_())})
    if index.num_rows:  # the order the records were read in (parts in order): quarantine and sampling are exact
        index = index.sort_by([("_part", "ascending"), ("_row", "ascending")])
    bad_rows = index.filter(pa.compute.is_valid(index["reject_reason"]))
    rejected = [Rejected(r["source"], r["position"], r["reject_reason"], r["id"], r["reject_stage"])
                for r in bad_rows.select(["source", "position", "reject_reason", "id", "reject_stage"]).to_pylist()]
    good = index.filter(pa.compute.is_null(index["reject_reason"]))
    quarantine_path = write_quarantine(rejected, run_dir) if run_dir is not None else None
    available = {s.name: int(pa.compute.sum(pa.compute.equal(good["source"], s.name)).as_py() or 0)
                 for s in mixture.sources}
    rejected_by = {s.name: sum(r.source == s.name for r in rejected) for s in mixture.sources}
    for name, n_bad in rejected_by.items():
        if n_bad:
            logger.warning("source %s: %d bad records quarantined", name, n_bad)
    check_bad_fraction(len(rejected), index.num_rows, max_fraction=data_config.max_bad_fraction,
                       where=f"mixture {mixture.name!r}" + (f" (see {quarantine_path})" if quarantine_path else ""))
    counts = plan_counts(mixture, available)
    train_copies, held_copies, splits = _mix(good, mixture, counts)
    table = {s.name: {"available": available[s.name], "rejected": rejected_by[s.name], "mixture": counts[s.name],
                      **splits[s.name]} for s in mixture.sources}
    convert = dict(fn_kwargs={"data_config": to_dict(data_config)}, batch_format="pyarrow", num_cpus=num_cpus)
    train = parts_dataset(parts, selection(train_copies), num_cpus=num_cpus,
                          shuffle_seed=data_config.shuffle_seed).map_batches(_convert_images, **convert)
    held_out = parts_dataset(parts, selection(held_copies), num_cpus=HELD_OUT_CPUS, concurrency=_most(concurrency)
                             ).map_batches(_convert_images, **{**convert, "num_cpus": HELD_OUT_CPUS},
                                           compute=ray.data.TaskPoolStrategy(size=_most(concurrency)))
    return PreparedData(train=train, held_out=held_out, counts=table, quarantine_path=quarantine_path,
                        quarantine_summary=summarize(rejected), processor_path=str(processor_path),
                        data_config=data_config, mixed=_mixed_rows(good, train_copies, held_copies),
                        parts=len(parts))


def _mixed_rows(good: pa.Table, train: dict, held: dict) -> pa.Table:
    """The light columns of every mixed row, each repeated as many times as the mixture takes it."""
    repeat = [train.get((p, r), 0) + held.get((p, r), 0) for p, r in zip(good["_part"].to_pylist(),
                                                                       good["_row"].to_pylist())]
    return good.take(pa.array(np.repeat(np.arange(good.num_rows), repeat), pa.int64()))


def _union(parts: list):
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
