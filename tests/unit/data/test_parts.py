"""A source cut into parts reads, part by part, exactly the records of the whole read: the same rows, the
same positions, the same rejections, in order; every format's files are cut where they can be."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrm_ray.config import SourceConfig
from mrm_ray.data.parts import plan_parts, read_part
from mrm_ray.data.readers import get_reader


def _rows(tables):
    return [{k: r[k] for k in ("id", "position", "chosen", "reject_reason", "_part", "_row")}
            for t in tables for r in t.to_pylist()]


def _whole(spec):
    from mrm_ray.data.parts import record_row

    return [{k: record_row(r)[k] for k in ("id", "position", "chosen", "reject_reason")}
            for r in get_reader(spec.reader)(str(spec.path), source=spec.name, **spec.options)]


def _jsonl_source(tmp_path, n=23):
    lines = []
    for i in range(n):
        if i == 7:
            lines.append("{not json")
        elif i == 11:
            lines.append("")  # blank lines are skipped, and still counted
        else:
            lines.append(json.dumps({"conversations": [{"from": "human", "value": f"q{i}"}],
                                     "chosen": {"from": "gpt", "value": f"good {i}"},
                                     "rejected": {"from": "gpt", "value": f"bad {i}"}}))
    folder = tmp_path / "sg"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[:3]))  # no newline at the end
    return SourceConfig(name="sg", reader="sharegpt", path=str(folder))


@pytest.mark.parametrize("rows_per_part", [1, 5, 1000])
def test_jsonl_parts_read_exactly_the_whole(tmp_path, rows_per_part):
    spec = _jsonl_source(tmp_path)
    parts = plan_parts([spec], rows_per_part=rows_per_part)
    expected_parts = {1: 23 + 3, 5: 5 + 1, 1000: 2}[rows_per_part]
    assert len(parts) == expected_parts and [p.id for p in parts] == list(range(expected_parts))
    got = _rows(t for p in parts for t in read_part(p))
    whole = _whole(spec)
    assert [{k: r[k] for k in whole[0]} for r in got] == whole
    assert [r["position"] for r in got][:9] == [f"a.jsonl:{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
    assert whole[7]["reject_reason"].startswith("malformed JSON")
    # copies: only the selected rows of a part, as many times as asked
    first = parts[0]
    picked = _rows(read_part(first, {0: 2, 1: 0}))
    assert [(r["_part"], r["_row"]) for r in picked] == [(0, 0), (0, 0)]


def test_parquet_parts_follow_row_groups_and_json_arrays_read_whole(tmp_path):
    folder = tmp_path / "trl"
    folder.mkdir()
    table = pa.table({"prompt": [f"q{i}" for i in range(10)], "chosen": [f"c{i}" for i in range(10)],
                      "rejected": [f"r{i}" for i in range(10)]})
    pq.write_table(table, folder / "train-0.parquet", row_group_size=3)  # groups of 3, 3, 3, 1
    spec = SourceConfig(name="t", reader="trl", path=str(folder))
    parts = plan_parts([spec], rows_per_part=5)
    assert [(p.file_part.start, p.file_part.stop, p.file_part.first) for p in parts] == [(0, 2, 0), (2, None, 6)]
    got = _rows(t for p in parts for t in read_part(p))
    assert [{k: r[k] for k in ("id", "position", "chosen", "reject_reason")} for r in got] == _whole(spec)
    assert [r["position"] for r in got] == [f"train-0.parquet:{i}" for i in range(10)]

    array = tmp_path / "demo.json"
    array.write_text(json.dumps([{"conversations": [{"from": "human", "value": "q"}],
                                  "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}}]
                                * 4))
    (part,) = plan_parts([SourceConfig(name="d", reader="sharegpt", path=str(array))], rows_per_part=1)
    assert part.file_part.kind == "whole" and len(_rows(read_part(part))) == 4


def test_benchmark_sources_are_one_part(tmp_path):
    """Their readers number repeated ids across the whole source."""
    bench = tmp_path / "vl.jsonl"
    bench.write_text("".join(json.dumps({"id": "x", "prompt": "p", "chosen": "a", "rejected": "b", "image": "i.png"})
                             + "\n" for _ in range(5)))
    spec = SourceConfig(name="vl", reader="vl_rewardbench", path=str(bench),
                      options={"image_root": str(tmp_path)})
    (part,) = plan_parts([spec], rows_per_part=1)
    assert part.file_part is None and len(_rows(read_part(part))) == 5


def test_a_missing_source_fails_when_planned(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_parts([SourceConfig(name="x", reader="sharegpt", path=str(tmp_path / "nope"))])
