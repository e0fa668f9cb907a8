"""Evaluation end to end: `mrm-ray ensemble fit` on real preference files, then `ray job submit ...
jobs/evaluate.py` on the real benchmark files with stand-in images, checked pair by pair against
the reward models scored in this process."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.schema import PAIR_SCHEMA, to_chat_messages
from mrm_ray.eval import metrics
from mrm_ray.eval.benchmarks import read_benchmark
from mrm_ray.model.scorer import Scorer

from helpers.ray_head import job_status

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def fitted(ray_cluster, ray_head, shared_data, reward_checkpoints, tmp_path_factory):
    """ensemble.yaml fitted on RLAIF-V (images) + ShareGPT demo pairs (text) saved as canonical shards,
    text routed to member b. (It asks for `ray_head` only to run with the module's job test.)"""
    from mrm_ray.cli import main

    root = tmp_path_factory.mktemp("fit")
    text = [r for r in read_benchmark("sharegpt", shared_data / "text-preference" / "dpo_en_demo.json")
            if not isinstance(r, Rejected)][:40]
    (root / "canonical").mkdir()  # the text pairs as canonical shards, as `mrm-ray data prepare` writes them
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in PAIR_SCHEMA.names} for r in text], schema=PAIR_SCHEMA),
                   root / "canonical" / "part-0.parquet")
    out = root / "ensemble.yaml"
    main(["ensemble", "fit", "--models", f"a={reward_checkpoints[0]}", f"b={reward_checkpoints[1]}",
          "--data", f"chat_messages={shared_data / 'rlaif-v-sample' / 'rlaif-v.jsonl'}",
          "--data", f"canonical={root / 'canonical'}", "--limit", "40",
          "--method", "accuracy_weighted", "--text-members", "b", "--out", str(out)])
    return out


def test_ensemble_fit_writes_weights_normalisation_and_routing(fitted, reward_checkpoints, shared_data):
    config = yaml.safe_load(fitted.read_text())
    assert config["method"] == "accuracy_weighted" and config["fitted_on"]["pairs"] == 50  # 10 RLAIF-V + 40 canonical
    a, b = config["members"]
    assert (a["name"], a["modalities"], b["name"], b["modalities"]) == ("a", ["image"], "b", ["text"])
    # recompute member a's weight (accuracy) and statistics from its own scores of the same pairs
    rows = [r for name, path in (("chat_messages", shared_data / "rlaif-v-sample" / "rlaif-v.jsonl"),
                                 ("canonical", fitted.parent / "canonical"))
            for r in [r for r in read_benchmark(name, path) if not isinstance(r, Rejected)][:40]]
    scores = np.array(Scorer(str(reward_checkpoints[0])).score_pairs(
        [{**r, "prompt": to_chat_messages(r["prompt"])} for r in rows]))
    assert a["weight"] == pytest.approx(metrics.correct(scores[:, 0], scores[:, 1]).mean(), abs=1e-6)
    assert a["score_mean"] == pytest.approx(scores.mean(), abs=1e-4)
    assert a["score_std"] == pytest.approx(scores.std(), abs=1e-4)
    assert config["fitted_on"]["accuracy"]["a"] == pytest.approx(a["weight"], abs=1e-6)


def test_evaluate_job_on_real_benchmarks_with_stand_in_images(ray_head, fitted, shared_data, reward_checkpoints,
                                                             s3):
    """Benchmarks read from, and the report written to, a bucket."""
    from mrm_ray import storage

    bench = shared_data / "benchmarks"
    bucket = s3.bucket()
    mm_rlhf = storage.upload(bench / "mm_rlhf_reward_bench.jsonl", f"{bucket}/bench/mm_rlhf_reward_bench.jsonl")
    result = ray_head.submit(
        "jobs/evaluate.py", "--ensemble", str(fitted), "--bench", f"mm_rlhf={mm_rlhf}",
        "--bench", f"vl_rewardbench={bench / 'vl_rewardbench_pairs.jsonl'}",
        "--stand-in-images", str(shared_data / "real-images"), "--out", f"{bucket}/report",
        "--limit", "150", timeout=900)  # all of MM-RLHF's 145 image pairs, VL-RewardBench's first 150 (CI time)
    log = result.stdout + result.stderr
    assert job_status(log) == "SUCCEEDED", log[-4000:]
    assert f"report: {bucket}/report/report.json and {bucket}/report/report.md" in log
    out = storage.local_copy(f"{bucket}/report")
    report = json.loads((out / "report.json").read_text())
    mm, vl = report["benchmarks"]["mm_rlhf"], report["benchmarks"]["vl_rewardbench"]
    # MM-RLHF: the 25 video rows are bad rows, visibly out of the denominators
    assert mm["counts"] == {"read": 170, "scored": 145, "bad_rows": 25, "unscorable": 0, "stand_in_images": 145}
    assert mm["bad_reasons"] == {"unsupported media": 25}
    assert vl["counts"]["scored"] == 150 and vl["results"]["a"]["published_sizes_met"] is False  # a subset
    assert sum(vl["results"]["a"]["counts"].get(c, 0) for c in ("general", "hallucination", "reasoning")) == 150
    assert set(vl["results"]) == {"a", "b", "ensemble: mean", "ensemble: z_mean", "ensemble.yaml (accuracy_weighted)"}
    markdown = (out / "report.md").read_text()
    assert "145 pairs were scored with stand-in images" in markdown and "| ensemble: mean |" in markdown

    # every metric follows from the per-pair scores, which equal the members scored in this process
    pairs = pq.read_table(out / "scores.parquet").to_pandas()
    mm_pairs = pairs[pairs.benchmark == "mm_rlhf"]
    ok = metrics.correct(mm_pairs["a/chosen"], mm_pairs["a/rejected"])
    expected = metrics.mm_rlhf(ok, list(mm_pairs.group_id), list(mm_pairs.category))
    assert mm["results"]["a"]["Acc"] == pytest.approx(expected["Acc"]) and mm["results"]["a"]["Acc+"] == pytest.approx(
        expected["Acc+"])
    mean_ok = metrics.correct((mm_pairs["a/chosen"] + mm_pairs["b/chosen"]) / 2,
                              (mm_pairs["a/rejected"] + mm_pairs["b/rejected"]) / 2)
    assert mm["results"]["ensemble: mean"]["Acc"] == pytest.approx(mean_ok.mean())
    # the fitted ensemble routes image pairs to member a alone: its accuracy is a's
    assert mm["results"]["ensemble.yaml (accuracy_weighted)"]["Acc"] == pytest.approx(expected["Acc"])
    rows = [r for r in read_benchmark("mm_rlhf", bench / "mm_rlhf_reward_bench.jsonl",
                                      stand_in_images=shared_data / "real-images") if not isinstance(r, Rejected)][:4]
    offline = Scorer(str(reward_checkpoints[1])).score_pairs([{**r, "prompt": to_chat_messages(r["prompt"])}
                                                             for r in rows])
    by_id = mm_pairs.set_index("id")
    for row, (c, r) in zip(rows, offline):
        assert math.isclose(by_id.loc[row["id"], "b/chosen"], c, abs_tol=1e-4)
        assert math.isclose(by_id.loc[row["id"], "b/rejected"], r, abs_tol=1e-4)
