"""A mixture's sources cut into parts, each one Ray Data read task (a custom `Datasource`).

`plan_parts` asks each source's reader which files it reads (`readers/base.py::planning`) and
cuts each file: a JSONL file into ranges of `rows_per_part` lines (found by one scan of its
line ends, so positions stay `file:line` of the whole file), a Parquet file into ranges of
row groups, a JSON array or a `save_to_disk` folder read whole. A reader whose records
depend on each other (the benchmark readers number repeated ids) reads its source as one
part. `PartsDatasource` reads the parts in parallel; each row carries `_part` and `_row`
(its place in its part), so a later pass can read exactly the rows a plan selected, as
many times as the plan says, without anything but that small index held in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.base import FilePart, planning, reading
from mrm_ray.data.schema import PAIR_SCHEMA

CHECKED_SCHEMA = (PAIR_SCHEMA
                  .append(pa.field("reject_reason", pa.string()))
                  .append(pa.field("reject_stage", pa.string()))
                  .append(pa.field("prompt_tokens", pa.int64()))
                  .append(pa.field("chosen_tokens", pa.int64()))
                  .append(pa.field("rejected_tokens", pa.int64()))
                  .append(pa.field("more_tokens", pa.list_(pa.int64())))
                  .append(pa.field("image_sizes", pa.list_(pa.list_(pa.int64()))))  # the images', then the frames
                  .append(pa.field("_part", pa.int64()))
                  .append(pa.field("_row", pa.int64())))
PLACE = ("_part", "_row")  # a row's part and its index there
ROWS_PER_PART = 256
BLOCK_ROWS = 128
BLOCK_BYTES = 4 << 20  # image bytes per block: blocks stay small beside a small object store
# Ray Data merges a task's outputs into blocks of up to its target_max_block_size (128 MiB by default): a whole
# part of images, or a batch of encoded pixels, would be one block far past the store's budget, which then spills
BLOCK_TARGET = 2 * BLOCK_BYTES


@dataclass(frozen=True)
class SourcePart:
    """One read task: a source's reader over `file_part` (None: the whole source)."""

    id: int
    source: str
    reader: str
    path: str
    options: str  # JSON
    file_part: FilePart | None = None

    def describe(self) -> str:
        if self.file_part is None:
            return f"{self.source}: {self.path}"
        fp = self.file_part
        return f"{self.source}: {Path(fp.file).name} {fp.kind} {fp.start}..{'end' if fp.stop is None else fp.stop}"


def part_json(part: SourcePart) -> str:
    """A part as a string a Ray Dataset row can carry."""
    fp = part.file_part
    return json.dumps({"id": part.id, "source": part.source, "reader": part.reader, "path": part.path,
                       "options": part.options, "file_part": None if fp is None else
                       [fp.file, fp.kind, fp.start, fp.stop, fp.first]})


def part_from_json(text: str) -> SourcePart:
    data = json.loads(text)
    fp = data.pop("file_part")
    return SourcePart(**data, file_part=None if fp is None else FilePart(*fp))


def _line_parts(file: str, rows: int) -> list[FilePart]:
    """Byte ranges of `rows` lines each, found by one scan of the file's line ends."""
    parts, start, first, lines, offset = [], 0, 0, 0, 0
    with open(file, "rb") as f:
        for raw in f:
            offset += len(raw)
            lines += 1
            if lines - first == rows:
                parts.append(FilePart(file, "lines", start, offset, first))
                start, first = offset, lines
    if offset > start or not parts:
        parts.append(FilePart(file, "lines", start, None, first))
    return parts


def _row_group_parts(file: str, rows: int) -> list[FilePart]:
    """Ranges of whole row groups of about `rows` rows each (a row group is never split)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(file).metadata
    except (pa.ArrowException, OSError):
        return [FilePart(file, "rows")]  # unreadable: read as one part, which quarantines it with the reason
    parts, start, first, count = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        count += meta.row_group(g).num_rows
        if count - first >= rows:
            parts.append(FilePart(file, "rows", start, g + 1, first))
            start, first = g + 1, count
    if start < meta.num_row_groups or not parts:
        parts.append(FilePart(file, "rows", start, None, first))
    return parts


def plan_parts(sources: Sequence, *, rows_per_part: int = ROWS_PER_PART) -> list[SourcePart]:
    """Every source's parts, in source order then file order. `sources`: the mixture's `SourceConfig`s."""
    from mrm_ray.data.readers import get_reader

    out: list[SourcePart] = []
    for s in sources:
        reader, options = get_reader(s.reader), json.dumps(s.options)
        base = dict(source=s.name, reader=s.reader, path=str(s.path), options=options)
        if not getattr(reader, "splittable", True):
            out.append(SourcePart(len(out), **base))
            continue
        with planning() as files:
            for _ in reader(str(s.path), source=s.name, **s.options):
                pass
        for kind, file in files:
            cut = (_line_parts(file, rows_per_part) if kind == "lines" else
                   _row_group_parts(file, rows_per_part) if kind == "rows" else [FilePart(file, "whole")])
            out += [SourcePart(len(out) + i, **base, file_part=fp) for i, fp in enumerate(cut)]
    return out


# ---------------------------------------------------------------------------- reading
def record_row(record: dict | Rejected) -> dict:
    """A reader's record (or rejection) as a row of the checked schema, before checking."""
    if isinstance(record, Rejected):
        return {"id": record.id or record.position, "source": record.source, "position": record.position,
                "prompt": [], "images": [], "chosen": "", "rejected": "", "margin": None, "more_responses": [],
                "scores": None, "chosen_images": [], "rejected_images": [], "videos": [],
                "reject_reason": record.reason, "reject_stage": record.stage}
    return {**{k: record.get(k) for k in PAIR_SCHEMA.names}, "reject_reason": None, "reject_stage": None}


def rows_table(rows: list[dict]) -> pa.Table:
    for row in rows:
        row.update({"prompt_tokens": None, "chosen_tokens": None, "rejected_tokens": None, "more_tokens": [],
                    "image_sizes": []})
        row.setdefault("_part", -1)
        row.setdefault("_row", -1)
    return pa.Table.from_pylist(rows, schema=CHECKED_SCHEMA)


def read_part(part: SourcePart, copies: Mapping[int, int] | None = None, *,
              shuffle_seed: int | None = None) -> Iterator[pa.Table]:
    """The part's records as checked-schema tables; with `copies` ({row: n}), only those rows, n times each;
    with `shuffle_seed`, in an order seeded by it and the part (the part's rows are then held until
    all are read: one part, never the source)."""
    from mrm_ray.data.readers import get_reader

    def selected() -> Iterator[dict]:
        with reading(part.file_part) if part.file_part is not None else nullcontext():
            records = get_reader(part.reader)(part.path, source=part.source, **json.loads(part.options))
            for i, record in enumerate(records):
                n = 1 if copies is None else copies.get(i, 0)
                if n:
                    row = {**record_row(record), "_part": part.id, "_row": i}
                    yield from [row] + [dict(row) for _ in range(n - 1)]

    rows: Iterator[dict] = selected()
    if shuffle_seed is not None:
        held = list(rows)
        rows = iter([held[i] for i in np.random.default_rng([shuffle_seed, part.id]).permutation(len(held))])
    block: list[dict] = []
    size = 0
    for row in rows:
        block.append(row)
        size += sum(len(b) for b in row["images"] or ()) + sum(len(f) for v in row["videos"] or () for f in v)
        if len(block) >= BLOCK_ROWS or size >= BLOCK_BYTES:
            yield rows_table(block)
            block, size = [], 0
    if block:
        yield rows_table(block)


def parts_dataset(parts: Sequence[SourcePart], copies: Mapping[int, Mapping[int, int]] | None = None, *,
                  num_cpus: float = 1.0, shuffle_seed: int | None = None, concurrency: int | None = None):
    """A Ray Dataset reading `parts`, one read task of `num_cpus` each, at most `concurrency` at once (with
    `copies`, only the parts it names, and only their selected rows); with `shuffle_seed`, the parts in a seeded
    order and each part's rows too (block order plus a shuffle within each part: no all-to-all shuffle of the
    rows)."""
    import ray.data

    if copies is not None:
        parts = [p for p in parts if copies.get(p.id)]
    if shuffle_seed is not None:
        parts = [parts[i] for i in np.random.default_rng(shuffle_seed).permutation(len(parts))]
    compute = ray.data.TaskPoolStrategy(size=concurrency) if concurrency else None
    return ray.data.read_datasource(PartsDatasource(parts, copies, shuffle_seed),
                                    override_num_blocks=max(1, len(parts)), num_cpus=num_cpus, compute=compute)


def _parts_datasource_class():
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _PartsDatasource(Datasource):
        """One read task per part, in order (Ray Data's datasource API)."""

        def __init__(self, parts: Sequence[SourcePart], copies: Mapping[int, Mapping[int, int]] | None,
                     shuffle_seed: int | None) -> None:
            self.parts, self.copies, self.shuffle_seed = list(parts), copies, shuffle_seed

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context=None) -> list:
            tasks = []
            for part in self.parts:
                chosen = None if self.copies is None else dict(self.copies[part.id])
                rows = None if chosen is None else int(sum(chosen.values()))
                files = (part.file_part.file,) if part.file_part is not None else (part.path,)
                tasks.append(ReadTask(lambda part=part, chosen=chosen: read_part(part, chosen,
                                                                                 shuffle_seed=self.shuffle_seed),
                                      BlockMetadata(num_rows=rows, size_bytes=None, input_files=files,
                                                    exec_stats=None),
                                      schema=CHECKED_SCHEMA, per_task_row_limit=per_task_row_limit))
            return tasks

        def get_name(self) -> str:
            return "MixtureParts"

    return _PartsDatasource


def PartsDatasource(parts, copies=None, shuffle_seed=None):  # noqa: N802 - a class built on first use
    return _parts_datasource_class()(parts, copies, shuffle_seed)


def selection(counts: Mapping[tuple[int, int], int]) -> dict[int, dict[int, int]]:
    """{part: {row: copies}} from {(part, row): copies}."""
    out: dict[int, dict[int, int]] = {}
    for (part, row), n in counts.items():
        if n:
            out.setdefault(int(part), {})[int(row)] = int(n)
    return out
