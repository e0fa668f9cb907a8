"""What every reader shares: line-by-line JSON, guarded record building, containers, parts. Images, prompts
and responses are read through the one input normaliser (model/inputs.py).

A reader is a generator `read(path, *, source, **options)` yielding canonical rows (dicts
from `canonical_pair`) or `Rejected` entries, never raising for one bad record.

Parts: a source is read by many tasks, each a `FilePart` of it (a range of a JSONL file's
lines, a range of a Parquet file's row groups, or a whole file). The readers do not know:
the record iterators below (`iter_json_lines`, `iter_parquet_rows`, `iter_json_records`,
`iter_saved_rows`) consult the part being read (`reading(part)`) and yield only its records,
with their positions as in the whole file; under `planning()` they yield nothing and note
each file they would read, so `data/parts.py` can cut it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mrm_ray.data.quarantine import BadRecord, NotSupported, Rejected
from mrm_ray.model.inputs import InvalidInput, file_under, frame_files, video_frames

VIDEO_FILE = ("video file (videos are read as folders of frames: decode it to frames first, e.g. "
              "`ffmpeg -i clip.mp4 -vf fps=2 clip/%04d.jpg`)")


def read_video(ref: Any, root: Path) -> list[bytes]:
    """A video's frames (kept as a video, for the run's route: model/inputs.py): a list of frame file names, or a
    folder of frames (sampled evenly to 16), under `root`; checked as `video_frames` checks. A video file is not
    decoded (NotSupported, saying how to make its frames)."""
    if isinstance(ref, str) and ref:
        path = file_under(root, ref)
        if path.is_file():
            raise NotSupported(VIDEO_FILE)
        if not path.is_dir():
            raise BadRecord(f"missing video: {ref} (a folder of frames)")
        return video_frames([p.read_bytes() for p in frame_files(path)])
    if not isinstance(ref, list):
        raise BadRecord(f"bad video: a list of frame names or a folder name, got {type(ref).__name__}")
    return video_frames(ref, root=root)


# ---------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class FilePart:
    """One read task's share of a file: `kind` lines (JSONL bytes [start, stop), its first line numbered
    `first + 1`), rows (Parquet row groups [start, stop), its first row numbered `first`), or whole."""

    file: str
    kind: str = "whole"
    start: int = 0
    stop: int | None = None
    first: int = 0


_PART: ContextVar[FilePart | None] = ContextVar("mrm_ray_part", default=None)
_PLAN: ContextVar[list | None] = ContextVar("mrm_ray_plan", default=None)


@contextlib.contextmanager
def reading(part: FilePart):
    """Within: the record iterators yield only `part`'s records (nothing from other files)."""
    token = _PART.set(part)
    try:
        yield
    finally:
        _PART.reset(token)


@contextlib.contextmanager
def planning():
    """Within: the record iterators yield nothing and note (kind, file) for each file they would read."""
    files: list[tuple[str, str]] = []
    token = _PLAN.set(files)
    try:
        yield files
    finally:
        _PLAN.reset(token)


def _share(path: Path, kind: str) -> FilePart | None:
    """The part of `path` to read now: the whole file (no part is active), the active part, or None
    (planning, or another file's part)."""
    if (plan := _PLAN.get()) is not None:
        plan.append((kind, str(path)))
        return None
    part = _PART.get()
    if part is None:
        return FilePart(str(path), kind)
    return part if part.file == str(path) else None


def guarded(build: Callable[[], dict], *, source: str, position: str, record_id: Any = None) -> dict | Rejected:
    """Run `build`; a bad input (`BadRecord`, the normaliser's `InvalidInput`, a missing key, a wrong type)
    becomes a `Rejected` entry."""
    try:
        return build()
    except InvalidInput as exc:
        return Rejected(source, position, exc.reason, None if record_id is None else str(record_id))
    except KeyError as exc:
        return Rejected(source, position, f"missing field: {exc.args[0]}",
                        None if record_id is None else str(record_id))
    except (TypeError, AttributeError) as exc:
        return Rejected(source, position, f"bad record: {exc}", None if record_id is None else str(record_id))


def build_each(records: Iterator[tuple[str, dict | Rejected]], build: Callable[[dict, str], dict], *,
               source: str, id_keys: tuple[str, ...] = ("id",)) -> Iterator[dict | Rejected]:
    """(position, row) pairs -> canonical pairs via `build(row, position)`; read errors pass through."""
    for position, row in records:
        if isinstance(row, Rejected):
            yield row
            continue
        record_id = next((row[k] for k in id_keys if row.get(k) is not None), None)
        yield guarded(lambda: build(row, position), source=source, position=position, record_id=record_id)


def iter_json_lines(path: Path, source: str) -> Iterator[tuple[str, dict | Rejected]]:
    """(position, parsed object) per non-blank line (of the part being read); malformed lines become
    `Rejected`."""
    if (part := _share(path, "lines")) is None:
        return
    with path.open("rb") as f:
        f.seek(part.start)
        offset, line_no = part.start, part.first
        while part.stop is None or offset < part.stop:
            raw = f.readline()
            if not raw:
                break
            offset, line_no = offset + len(raw), line_no + 1
            position = f"{path.name}:{line_no}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield position, Rejected(source, position, f"malformed JSON: {exc.msg if hasattr(exc, 'msg') else exc}")
                continue
            if not isinstance(row, dict):
                yield position, Rejected(source, position, f"malformed JSON: a line must be an object, got {type(row).__name__}")
                continue
            yield position, row


def iter_json_records(path: Path, source: str) -> Iterator[tuple[str, dict | Rejected]]:
    """JSONL, or a JSON array file (`.json`, read whole), as (position, object) pairs."""
    if path.suffix == ".json":
        if _share(path, "whole") is None:
            return
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            yield f"{path.name}", Rejected(source, path.name, f"malformed JSON: {exc.msg} (whole file)")
            return
        if isinstance(rows, dict):  # one record, or records under a single key (`{"pairs": [...]}`)
            (only,) = rows.values() if len(rows) == 1 else (None,)
            rows = only if isinstance(only, list) else [rows]
        for i, row in enumerate(rows):
            position = f"{path.name}:{i}"
            yield position, row if isinstance(row, dict) else Rejected(
                source, position, f"malformed JSON: an entry must be an object, got {type(row).__name__}")
        return
    yield from iter_json_lines(path, source)


def expand_files(path: str | Path, patterns: tuple[str, ...]) -> list[Path]:
    """A file, or the matching files of a directory, sorted (so positions are stable)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"data path {path} does not exist; check the path given for this source")
    files = sorted(p for pattern in patterns for p in path.rglob(pattern))
    if not files:
        raise FileNotFoundError(f"no {' or '.join(patterns)} files under {path}")
    return files


PARQUET_BATCH_ROWS = 256


def iter_parquet_rows(file: Path, source: str) -> Iterator[tuple[str, dict | Rejected]]:
    """(`file:row`, row dict) per row (of the part being read), batch by batch; an unreadable file is
    one `Rejected`."""
    if (part := _share(file, "rows")) is None:
        return
    row_no = part.first
    try:
        parquet = pq.ParquetFile(file)
        groups = range(part.start, parquet.num_row_groups if part.stop is None else part.stop)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(groups)):
            for row in batch.to_pylist():
                yield f"{file.name}:{row_no}", row
                row_no += 1
    except (pa.ArrowException, OSError) as exc:
        yield f"{file.name}:{row_no}", Rejected(
            source, f"{file.name}:{row_no}", f"malformed Parquet: {exc} (rest of the file from row {row_no})")


def iter_table_records(file: Path, source: str) -> Iterator[tuple[str, dict | Rejected]]:
    """Parquet rows or JSON / JSONL records of one file, as (position, object) pairs."""
    if file.suffix == ".parquet":
        return iter_parquet_rows(file, source)
    return iter_json_records(file, source)


def drop_nulls(value: Any) -> Any:
    """Messages without the null keys Parquet adds when it unifies part structs
    (a text part with `image: None` would otherwise count as an image part)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------- containers
# A Hugging Face `save_to_disk` folder is opened with `datasets.load_from_disk` (imported only then), its
# image columns cast to `Image(decode=False)` so images stay encoded bytes. Parquet / JSON(L): a file, or
# the files of a directory whose file or folder name is the split (`test-00000-of-00001.parquet`), all of
# them where none is (RLAIF-V's hub layout has no split names).
TABLE_PATTERNS = ("*.parquet", "*.jsonl")


def iter_saved_rows(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    """A `save_to_disk` folder (the `split` of a DatasetDict), image columns kept as encoded bytes."""
    import datasets

    if _share(path, "whole") is None:
        return
    data = datasets.load_from_disk(str(path))
    where = path.name
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"split {split!r} is not in {path}; it has {sorted(data)}")
        data, where = data[split], f"{path.name}/{split}"
    def undecoded(feature):
        if isinstance(feature, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(feature, (datasets.List, datasets.LargeList)):
            return type(feature)(undecoded(feature.feature))
        if isinstance(feature, dict):
            return {k: undecoded(v) for k, v in feature.items()}
        return feature
    data = data.cast(datasets.Features({k: undecoded(v) for k, v in data.features.items()}))
    for i, row in enumerate(data):
        yield f"{where}:{i}", row


def table_files(path: Path, split: str, patterns: tuple[str, ...] = TABLE_PATTERNS) -> list[Path]:
    """A file, or a directory's table files named for the split (all of them where none is)."""
    files = expand_files(path, patterns)
    if path.is_file():
        return files
    named = [f for f in files if f.stem == split or f.stem.startswith(f"{split}-")
             or split in f.relative_to(path).parts[:-1]]
    return named or files


def iter_dataset_rows(path: str | Path, split: str, name: str, patterns: tuple[str, ...] = TABLE_PATTERNS
                      ) -> Iterator[tuple[str, dict | Rejected]]:
    """(position, row) of a dataset in any of its published containers: a `save_to_disk` folder, Parquet
    files (images as `{bytes, path}`), JSONL or JSON files."""
    path = Path(path)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        yield from iter_saved_rows(path, split)
        return
    for file in table_files(path, split, patterns):
        yield from iter_table_records(file, name)
