"""Object-store URIs through pyarrow.fs, against a local S3-compatible server (moto's)."""

import pytest

from mrm_ray import storage
from mrm_ray.model import checkpoints
from mrm_ray.run_folder import RunFolder


def test_what_counts_as_a_uri():
    assert storage.is_uri("s3://bucket/key") and storage.is_uri("gs://b/k")
    assert not storage.is_uri("/data/x") and not storage.is_uri("runs") and not storage.is_uri("file:///data")
    assert not storage.is_uri("tiny:0")
    assert storage.join("s3://b/runs/", "name", "/x") == "s3://b/runs/name/x"


def test_a_folder_round_trips_and_a_changed_object_is_fetched_again(s3, tmp_path):
    bucket = s3.bucket()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    (src / "marker.json").write_text("{}")
    storage.upload(src, f"{bucket}/dir", last="marker.json")
    first = storage.local_copy(f"{bucket}/dir", cache=tmp_path / "cache")
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()) == [
        "marker.json", "sub/weights.bin"]
    assert storage.local_copy(f"{bucket}/dir", cache=tmp_path / "cache") == first  # unchanged: not fetched again
    (src / "marker.json").write_text('{"v": 2}')
    storage.upload(src, f"{bucket}/dir", replace=True)
    second = storage.local_copy(f"{bucket}/dir", cache=tmp_path / "cache")
    assert second != first and (second / "marker.json").read_text() == '{"v": 2}'
    assert storage.exists(f"{bucket}/dir/marker.json") and not storage.exists(f"{bucket}/nothing")
    with pytest.raises(FileNotFoundError):
        storage.local_copy(f"{bucket}/nothing", cache=tmp_path / "cache")


def test_a_run_folder_writes_locally_and_uploads(s3, tmp_path):
    folder = RunFolder(f"{s3.bucket()}/runs/a")
    (folder.local / "metrics.jsonl").write_text("1\n")
    assert folder.push("metrics.jsonl") == f"{folder.location}/metrics.jsonl"
    (folder.local / "metrics.jsonl").unlink()
    folder.pull("metrics.jsonl")
    assert (folder.local / "metrics.jsonl").read_text() == "1\n"
    local = RunFolder(tmp_path / "run")
    assert not local.remote and local.push("x") == str(tmp_path / "run" / "x")


def test_a_reward_checkpoint_in_a_bucket_resolves_and_a_plain_folder_is_refused(s3, reward_checkpoints, tmp_path):
    bucket = s3.bucket()
    storage.upload(reward_checkpoints[0], f"{bucket}/rm", last=checkpoints.REWARD_CONFIG)
    local = checkpoints.resolve(f"{bucket}/rm")
    assert (local / checkpoints.HEAD_WEIGHTS).read_bytes() == \
        (reward_checkpoints[0] / checkpoints.HEAD_WEIGHTS).read_bytes()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    storage.upload(tmp_path / "plain", f"{bucket}/plain")
    with pytest.raises(ValueError, match="not a reward checkpoint"):
        checkpoints.resolve(f"{bucket}/plain")
    with pytest.raises(ValueError, match="no tiny checkpoint of family .zero.; tiny:FAMILY takes one of"):
        checkpoints.check("tiny:zero")


def test_a_mixture_in_a_bucket_resolves_its_relative_paths_in_the_bucket(s3, tmp_path):
    """As an ensemble file's members do (they resolved to local paths under the working directory)."""
    from mrm_ray.data.mixture import load_mixture

    bucket = s3.bucket()
    (tmp_path / "m.yaml").write_text("sources:\n  - {name: a, reader: trl, path: data/a.jsonl, "
                                     "options: {image_root: imgs}}\n  - {name: b, reader: trl, path: /abs/b.jsonl}\n")
    mixture = load_mixture(storage.upload(tmp_path / "m.yaml", f"{bucket}/mixtures/m.yaml"))
    a, b = mixture.sources
    assert (a.path, a.options["image_root"]) == (f"{bucket}/mixtures/data/a.jsonl", f"{bucket}/mixtures/imgs")
    assert b.path == "/abs/b.jsonl"
