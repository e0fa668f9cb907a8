"""Atomic writes land whole, with the umask's permissions, and leave nothing behind on failure."""

import os
import stat

import pytest

from mrm_ray.atomic import atomic_dir, atomic_file, current_umask


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_dirs_get_the_umask_permissions(tmp_path, umask_027):
    assert current_umask() == 0o027
    with atomic_file(tmp_path / "report.json") as f:
        f.write("{}")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
        (tmp / "sub").mkdir()
    # not the 0600 / 0700 of the temporary file and directory they were written as
    assert _mode(tmp_path / "report.json") == 0o640 and _mode(tmp_path / "model") == 0o750
    assert _mode(tmp_path / "model" / "weights.bin") == 0o640 and _mode(tmp_path / "model" / "sub") == 0o750
    assert (tmp_path / "report.json").read_text() == "{}"


def test_a_failed_write_keeps_the_old_version_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write("half")
            raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and (tmp_path / "model" / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "summary.json"]


def test_a_directory_is_replaced_whole(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]
