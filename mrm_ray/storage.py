"""Local paths and object-store URIs (`s3://bucket/key`, `gs://...`) behind one set of calls.

Through `pyarrow.fs`, as Ray Train's own storage is: credentials and endpoints come from
the usual environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL` for S3-compatible stores
such as MinIO, a node's instance role). A URI is read by copying it once to a local cache
keyed by its contents' listing, so a changed object is fetched again and an unchanged one
is not; a directory is written by uploading a finished local copy, its marker file last,
so a reader never takes a half-uploaded directory for a whole one. A run's folder built on this is
run_folder.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_URI = re.compile(r"^[a-z][a-z0-9+.-]+://")
CACHE = Path(os.environ.get("MRM_CACHE_DIR", Path.home() / ".cache" / "mrm-ray")) / "objects"


def is_uri(path: str | os.PathLike) -> bool:
    """True for `scheme://...` (s3, gs, hdfs, ...), False for local paths (file:// counts as local)."""
    text = str(path)
    return bool(_URI.match(text)) and not text.startswith("file://")


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a URI or a local path."""
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def exists(ref: str) -> bool:
    import pyarrow.fs

    if not is_uri(ref):
        return Path(ref).exists()
    fs, path = filesystem(ref)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _listing(fs, path: str) -> list[tuple[str, int, int]]:
    import pyarrow.fs

    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        return [("", info.size, info.mtime_ns or 0)]
    if info.type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(f"nothing at {path}")
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    return sorted((f.path[len(path):].lstrip("/"), f.size, f.mtime_ns or 0) for f in found
                  if f.type == pyarrow.fs.FileType.File)


def local_copy(ref: str, *, cache: Path | None = None) -> Path:
    """A local path holding what `ref` holds (a file or a directory): `ref` itself when local."""
    import pyarrow.fs

    if not is_uri(ref):
        return Path(ref).expanduser()
    fs, path = filesystem(ref)
    listing = _listing(fs, path)
    key = hashlib.sha256(repr((ref, listing)).encode()).hexdigest()[:16]
    name = Path(path.rstrip("/")).name or "object"
    out = (cache or CACHE) / key / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fetch-") as tmp:
        staged = Path(tmp) / name
        if not listing or listing[0][0]:  # a directory
            staged.mkdir()
        pyarrow.fs.copy_files(path, str(staged), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        try:
            staged.rename(out)
        except OSError:  # another process fetched it first
            if not out.exists():
                raise
    return out


def upload(local: str | os.PathLike, uri: str, *, last: str | None = None, replace: bool = False) -> str:
    """Copy a local file or directory to `uri`; `last` is uploaded after the rest; `replace` first removes
    what the directory held (else files are added or overwritten)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    local = Path(local)
    if local.is_file():
        fs.create_dir(path.rpartition("/")[0], recursive=True)
        pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=fs)
        return uri
    if replace and fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir_contents(path, missing_dir_ok=True)
    for file in sorted(p for p in local.rglob("*") if p.is_file() and p.name != last):
        _put(fs, file, f"{path}/{file.relative_to(local).as_posix()}")
    if last and (local / last).is_file():
        _put(fs, local / last, f"{path}/{last}")
    return uri


def _put(fs, file: Path, dest: str) -> None:
    with open(file, "rb") as src, fs.open_output_stream(dest) as out:
        shutil.copyfileobj(src, out, length=8 << 20)
