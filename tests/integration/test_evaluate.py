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
from mrm_ray.data.readers.base import VIDEO_FILE
from mrm_ray.data.schema import PAIR_SCHEMA, to_chat_messages
from mrm_ray.eval import metrics
from mrm_ray.eval.benchmarks import read_benchmark
from mrm_ray.model.scorer import Scorer

from helpers.images import transformers_score
from helpers.ray_head import job_status
from helpers.trackers import (mlflow_artifacts, mlflow_history, mlflow_run, run_ids, tracking_config, wandb_history,
                              wandb_records)

ENSEMBLE_ROWS = {f"ensemble: {m}" for m in ("mean", "z_mean", "min", "uwo", "lcb")}  # the default rows

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
    # recompute member a's weight (accuracy) and statistics from its own scores of the pairs routed to it,
    # the image pairs (its z-normalisation is of what it will be given)
    rows = [r for r in read_benchmark("chat_messages", shared_data / "rlaif-v-sample" / "rlaif-v.jsonl")
            if not isinstance(r, Rejected)][:40]
    assert len(rows) == 10 and all(r["images"] for r in rows)
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
        "--limit", "170", timeout=900)  # all of MM-RLHF's 170 pairs (25 of them videos), VL-RewardBench's first 170
    log = result.stdout + result.stderr
    assert job_status(log) == "SUCCEEDED", log[-4000:]
    assert f"report: {bucket}/report/report.json, {bucket}/report/report.md, {bucket}/report/report.html, " in log
    assert "MM-RLHF-RewardBench (mm_rlhf): 170 of 170 pairs scored, 170 with stand-in images" in log
    assert "  paper: BaseReward ensemble" in log  # the headline summary, next to the paper's numbers
    out = storage.local_copy(f"{bucket}/report")
    report = json.loads((out / "report.json").read_text())
    mm, vl = report["benchmarks"]["mm_rlhf"], report["benchmarks"]["vl_rewardbench"]
    # MM-RLHF: the 25 video rows scored on the frames route (stand-in frames here), counted in Acc / Acc+
    assert mm["counts"] == {"read": 170, "scored": 170, "bad_rows": 0, "not_supported": 0, "unscorable": 0,
                            "stand_in_images": 170, "videos": 25}
    assert mm["bad_reasons"] == {} and mm["not_supported_reasons"] == {} and mm["video_routes"] == {"frames": 25}
    assert mm["results"]["a"]["counts"]["video"] == 25
    assert vl["counts"]["scored"] == 170 and vl["results"]["a"]["published_sizes_met"] is False  # a subset
    assert sum(vl["results"]["a"]["counts"].get(c, 0) for c in ("general", "hallucination", "reasoning")) == 170
    assert set(vl["results"]) == {"a", "b", *ENSEMBLE_ROWS, "ensemble.yaml (accuracy_weighted)"}
    markdown = (out / "report.md").read_text()
    assert "170 pairs were scored with stand-in images" in markdown and "| ensemble: mean |" in markdown
    assert "25 video pairs scored on the frames route" in markdown

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
    good = [r for r in read_benchmark("mm_rlhf", bench / "mm_rlhf_reward_bench.jsonl",
                                      stand_in_images=shared_data / "real-images") if not isinstance(r, Rejected)]
    rows = good[:4] + [r for r in good if r.get("videos")][:1]  # four image pairs and a video pair
    assert (mm_pairs.route == "frames").sum() == 25 and mm_pairs.route.isna().sum() == 145
    offline = Scorer(str(reward_checkpoints[1])).score_pairs([{**r, "prompt": to_chat_messages(r["prompt"])}
                                                             for r in rows])
    by_id = mm_pairs.set_index("id")
    for row, (c, r) in zip(rows, offline):
        assert math.isclose(by_id.loc[row["id"], "b/chosen"], c, abs_tol=1e-4)
        assert math.isclose(by_id.loc[row["id"], "b/rejected"], r, abs_tol=1e-4)


def _mmrb2_file(folder):
    """A small reasoning.json in MMRB2's released layout; half the chosen responses draw an image
    (synthetic pictures: the tiny models are random, so only the arithmetic of the scores is checked)."""
    from mrm_ray.data.synthetic import image_grounded_pairs

    pairs = []
    for i, p in enumerate(image_grounded_pairs(8, seed=5, size=56)):
        for name, data in ((f"input_images/{i}.png", p["images"][0]), (f"images/{i}_a.png", p["images"][0])):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        drawn = [["text", p["chosen"]], ["image", f"images/{i}_a.png"], ["text", " That is my answer."]]
        good = {"model_name": "agent", "response_content": drawn if i % 2 == 0 else [["text", p["chosen"]]]}
        bad = {"model_name": "gpt-4o", "response_content": [["text", p["rejected"]]]}
        pairs.append({"id": f"pair-{i}", "prompt_source": ("blink", "vstar")[i % 2],
                      "prompt_content": [["image", f"input_images/{i}.png"], ["text", p["prompt"]]],
                      "response_a": good if i % 3 else bad, "response_b": bad if i % 3 else good,
                      "chosen": "A" if i % 3 else "B", "human_annotations": {}})
    (folder / "reasoning.json").write_text(json.dumps({"pairs": pairs}))
    return folder / "reasoning.json"


def test_report_page_mmrb2_and_benchmarks_with_nothing_readable(ray_cluster, reward_checkpoints, shared_data,
                                                               tmp_path):
    """One run: MM-RLHF (stand-in images and frames), MMRB2 (images inside responses), a file
    whose every record is bad and a path that does not exist. The page is rendered in a real headless
    browser and the numbers it shows are read back."""
    from PIL import Image

    from helpers.browser import render, shown
    from mrm_ray.eval.markdown import summary
    from mrm_ray.config import EvalConfig
    from mrm_ray.eval.report import evaluate, write_report

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a"}\n{"id": "b", "prompt": "p", "chosen": "c"}\n{not json\n')
    # MM-RLHF's first 11 image rows after a video row (its frames missing here: stand-in frames) and a video
    # given as a file (not supported: frames are read from folders)
    lines = (shared_data / "benchmarks" / "mm_rlhf_reward_bench.jsonl").read_text().splitlines()
    video = next(json.loads(line) for line in lines if json.loads(line).get("video"))
    (tmp_path / "mm" / "video").mkdir(parents=True)
    (tmp_path / "mm" / "video" / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42")
    (tmp_path / "mm" / "bench.jsonl").write_text("\n".join(
        [json.dumps(video), json.dumps({**video, "id": "file_1", "video": "video/clip.mp4"}), *lines[:11]]) + "\n")
    bench = {"mm_rlhf": str(tmp_path / "mm" / "bench.jsonl"),
             "mmrb2": str(_mmrb2_file(tmp_path / "mmrb2")), "vl_rewardbench": str(broken),
             "multimodal_rewardbench": str(tmp_path / "absent" / "all_data.json")}
    members = {"a": str(reward_checkpoints[0]), "b": str(reward_checkpoints[1])}
    config = EvalConfig(models=members, bench=bench, stand_in_images=str(shared_data / "real-images"), limit=12,
                        tracking=tracking_config(tmp_path / "trackers"))
    report, table = evaluate(config)
    benches = report["benchmarks"]
    assert benches["mm_rlhf"]["counts"] == {"read": 13, "scored": 12, "bad_rows": 0, "not_supported": 1,
                                            "unscorable": 0, "stand_in_images": 12, "videos": 1}
    assert list(benches["mm_rlhf"]["not_supported_reasons"]) == [f"not supported: {VIDEO_FILE}"]
    assert "message" not in benches["mm_rlhf"] and "message" not in benches["mmrb2"]
    assert benches["vl_rewardbench"]["results"] == {} and benches["vl_rewardbench"]["message"] == (
        f"vl_rewardbench ({broken}): nothing readable: 3 bad, 0 not supported and 0 unscorable records: "
        "missing image (2); malformed JSON (1)")
    assert benches["multimodal_rewardbench"]["message"].startswith(
        f"multimodal_rewardbench ({tmp_path / 'absent' / 'all_data.json'}): could not be read: FileNotFoundError")

    # MMRB2 with images inside responses: every figure follows from the members scored in this process
    rows = [r for r in read_benchmark("mmrb2", bench["mmrb2"]) if not isinstance(r, Rejected)]
    assert sum(bool(r["chosen_images"]) for r in rows) == 4
    scored = {}
    for name, path in members.items():
        offline = scored[name] = np.array(Scorer(path).score_pairs([{**r, "prompt": to_chat_messages(r["prompt"])}
                                                                    for r in rows]))
        expected = metrics.mmrb2(metrics.correct(offline[:, 0], offline[:, 1]), [r["category"] for r in rows])
        result = benches["mmrb2"]["results"][name]
        assert result["Reasoning"] == pytest.approx(expected["Reasoning"]) and result["per_category"] == pytest.approx(
            expected["per_category"])
        got, want = benches["mmrb2"]["calibration"][name], metrics.reliability(offline[:, 0] - offline[:, 1])
        assert got["ece"] == pytest.approx(want["ece"], abs=1e-4)
        assert [(b["count"], b["observed"]) for b in got["bins"]] == [(b["count"], b["observed"]) for b in want["bins"]]
    # every ensemble method has its row and its calibration, the conservative ones included
    from mrm_ray.ensemble import aggregate
    from mrm_ray.eval.report import member_stats

    stats = [member_stats(path) for path in members.values()]
    how = {"means": [m for m, _ in stats], "stds": [s for _, s in stats], "uncertainty_coef": 0.5}
    assert report["methods"] == ["mean", "z_mean", "min", "uwo", "lcb"]
    for method in report["methods"]:
        c, r = (aggregate(np.stack([scored[n][:, k] for n in members]), method=method, **how).reward for k in (0, 1))
        label = f"ensemble: {method}"
        assert benches["mmrb2"]["results"][label]["Reasoning"] == pytest.approx(metrics.correct(c, r).mean())
        assert benches["mmrb2"]["calibration"][label]["ece"] == pytest.approx(metrics.reliability(c - r)["ece"],
                                                                               abs=1e-4)

    written = write_report(report, tmp_path / "report", pairs=table, tracking=config.tracking)
    assert sorted(written) == ["report.html", "report.json", "report.md", "scores.parquet"]
    # the report folder is a run folder: its config, headline figures (summary, metrics, TensorBoard), bad rows
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mrm_ray.run_folder import read_metrics

    folder = tmp_path / "report"
    assert json.loads((folder / "run_config.json").read_text())["models"] == members
    headline = {name: {label: {h: result[h] for h in bench["headline"] if h in result}
                       for label, result in bench["results"].items()} for name, bench in benches.items()}
    assert json.loads((folder / "summary.json").read_text())["benchmarks"] == headline
    events = [e for e in read_metrics(folder) if e["event"] == "benchmark"]
    assert {(e["benchmark"], e["model"]): {k: v for k, v in e.items() if k not in ("event", "step", "time",
                                                                                  "benchmark", "model")}
            for e in events} == {(n, label): f for n, by in headline.items() for label, f in by.items()}
    board = EventAccumulator(str(folder / "tensorboard"))
    board.Reload()
    for name, by in headline.items():
        for label, figures in by.items():
            for h, value in figures.items():
                assert board.Scalars(f"eval/{name}/{label}/{h}")[0].value == pytest.approx(value, abs=1e-6)
    # and in the trackers: the same figures, the evaluation's config, the report files
    from mrm_ray.tracking import mlflow_name

    root, ids = tmp_path / "trackers", run_ids(folder)
    client, tracked = mlflow_run(root, ids["mlflow_run_id"])
    records = wandb_records(root / "wandb", ids["wandb_run_id"])
    for name, by in headline.items():
        for label, figures in by.items():
            for h, value in figures.items():
                key = f"eval/{name}/{label}/{h}"
                assert mlflow_history(client, ids["mlflow_run_id"], mlflow_name(key)) == {0: value}
                assert wandb_history(records, key) == {0: value}
    assert tracked.data.params["models.a"] == members["a"] and tracked.info.run_name == "report"
    assert mlflow_artifacts(client, ids["mlflow_run_id"], "report") == sorted(written)
    quarantined = [json.loads(line) for line in (folder / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == sum(b["counts"]["bad_rows"] + b["counts"]["not_supported"] for b in benches.values())
    assert sum(q["source"] == "vl_rewardbench" for q in quarantined) == 3
    dom, screenshot = render(tmp_path / "report" / "report.html", tmp_path)
    page = shown(dom)
    expected_shown = {}
    for name, bench in benches.items():
        for label, result in bench["results"].items():
            for key in bench["headline"]:
                expected_shown[("text", "value", name, label, key)] = metrics.percent(result[key])
                expected_shown[("td", "number", name, label, key)] = metrics.percent(result[key])
            for category, value in result["per_category"].items():
                expected_shown[("text", "value", name, label, category)] = metrics.percent(value)
            expected_shown[("b", "ece", name, label, None)] = metrics.percent(bench["calibration"][label]["ece"])
        for label, ref in bench["reference"].items() if bench["results"] else ():  # no chart without results
            for key, value in ref.items():
                expected_shown[("text", "value reference", name, f"paper: {label}", key)] = metrics.percent(value)
    assert {k: page.values.get(k) for k in expected_shown} == expected_shown
    assert page.values[("td", "number", "mm_rlhf", "paper: BaseReward", "Acc")] == "91.76"
    assert page.classes.count("stand-in") == 1  # MM-RLHF's flag (MMRB2's images are all there)
    assert page.classes.count("nothing") == 2 and page.classes.count("not-supported") == 1
    assert page.classes.count("video-route") == 1  # MM-RLHF's video pair, on the frames route
    picture = Image.open(screenshot).convert("RGB")
    assert len(picture.getcolors(1 << 20)) > 50  # drawn, not a blank page

    text = summary(report)
    assert "  paper: BaseReward" in text and "91.76" in text and "NOTHING SCORED: vl_rewardbench" in text


def test_a_member_of_every_family_text_only_ones_on_the_text_pairs(ray_cluster, family_rewards, hf_seq_cls,
                                                                  shared_data):
    """One member per family (Qwen2.5-VL: the tests above), and a Qwen3 reward model as transformers saves one
    (`Qwen3ForSequenceClassification`), on image pairs (MM-RLHF, stand-in images) and text pairs (ShareGPT):
    the text-only members score the text pairs only, the image pairs stay scored by the others, every figure
    equals the members scored in this process, and the classifier's scores are transformers' own."""
    from mrm_ray.eval.markdown import markdown
    from mrm_ray.config import EvalConfig
    from mrm_ray.eval.report import evaluate

    bench = {"mm_rlhf": str(shared_data / "benchmarks" / "mm_rlhf_reward_bench.jsonl"),
             "sharegpt": str(shared_data / "text-preference" / "dpo_en_demo.json")}
    members = {**{f: str(p) for f, p in family_rewards.items()}, "hf-qwen3": str(hf_seq_cls)}
    report, table = evaluate(EvalConfig(models=members, bench=bench, stand_in_images=str(shared_data / "real-images"),
                                        limit=3, cpus_per_model=0.5))
    text_only = {"qwen2", "qwen3", "hf-qwen3"}
    assert {n: m["takes_images"] for n, m in report["members"].items()} == {f: f not in text_only for f in members}
    mm, text = report["benchmarks"]["mm_rlhf"], report["benchmarks"]["sharegpt"]
    assert mm["counts"]["scored"] == 3 and mm["counts"]["unscorable"] == 0 and text["counts"]["scored"] == 3
    assert mm["not_applicable"] == {"qwen2": 3, "qwen3": 3, "hf-qwen3": 3} and text["not_applicable"] == {}
    assert set(mm["results"]) == set(members) - text_only | ENSEMBLE_ROWS
    assert set(text["results"]) == set(members) | ENSEMBLE_ROWS
    assert "qwen2 skipped 3 with images" in markdown(report) and "| text only |" in markdown(report)

    offline = {}
    for name, path in bench.items():
        rows = [r for r in read_benchmark(name, path, stand_in_images=shared_data / "real-images")
                if not isinstance(r, Rejected)][:3]
        for member, checkpoint in members.items():
            if member in text_only and name == "mm_rlhf":
                continue
            offline[name, member] = np.array(Scorer(checkpoint).score_pairs(
                [{**r, "prompt": to_chat_messages(r["prompt"])} for r in rows]))
    pairs = table.to_pandas()
    for (name, member), got in offline.items():
        mine = pairs[pairs.benchmark == name]
        assert np.allclose(mine[f"{member}/chosen"], got[:, 0], atol=1e-4)
        assert np.allclose(mine[f"{member}/rejected"], got[:, 1], atol=1e-4)
    sharegpt = [r for r in read_benchmark("sharegpt", bench["sharegpt"]) if not isinstance(r, Rejected)][:3]
    theirs = [[transformers_score(hf_seq_cls, to_chat_messages(r["prompt"]), r[side])
               for side in ("chosen", "rejected")] for r in sharegpt]
    assert np.allclose(offline["sharegpt", "hf-qwen3"], theirs, atol=1e-4)
    mm_pairs = pairs[pairs.benchmark == "mm_rlhf"]
    assert mm_pairs["qwen3/chosen"].isna().all() and mm_pairs["qwen3/error"].isna().all()
    # the plain mean of MM-RLHF takes the three vision-language members; of ShareGPT, all six
    for name, who in (("mm_rlhf", set(members) - text_only), ("sharegpt", set(members))):
        c = np.mean([offline[name, m][:, 0] for m in who], axis=0)
        r = np.mean([offline[name, m][:, 1] for m in who], axis=0)
        headline = "Acc" if name == "mm_rlhf" else "accuracy"
        assert report["benchmarks"][name]["results"]["ensemble: mean"][headline] == pytest.approx(
            metrics.correct(c, r).mean())


def test_judges_are_evaluated_with_their_position_consistency(ray_cluster, reward_checkpoints, tiny_checkpoint,
                                                             shared_data, tmp_path):
    """An ensemble.yaml with a reward model, a verdict judge and a pairwise judge: every judge's figures equal
    the judge in this process, and the pairwise judge reads each pair in both orders: its margin is the
    mean of the two, and the report counts how often the two orders agree, per benchmark."""
    from mrm_ray.config import EvalConfig, JudgeConfig
    from mrm_ray.eval.markdown import markdown
    from mrm_ray.eval.report import evaluate
    from mrm_ray.model.judge import Judge

    (tmp_path / "ensemble.yaml").write_text(yaml.safe_dump({"members": [
        {"name": "rm", "path": str(reward_checkpoints[0])},
        {"name": "verdict", "kind": "judge", "path": str(tiny_checkpoint)},
        {"name": "pairwise", "kind": "judge", "path": str(tiny_checkpoint), "judge": {"mode": "pairwise"}}]}))
    bench = {"mm_rlhf": str(shared_data / "benchmarks" / "mm_rlhf_reward_bench.jsonl"),
             "sharegpt": str(shared_data / "text-preference" / "dpo_en_demo.json")}
    report, table = evaluate(EvalConfig(ensemble=str(tmp_path / "ensemble.yaml"), bench=bench, limit=4,
                                        stand_in_images=str(shared_data / "real-images"), cpus_per_model=0.5))
    assert {n: (m["kind"], m.get("mode")) for n, m in report["members"].items()} == {
        "rm": ("scalar", None), "verdict": ("judge", "verdict"), "pairwise": ("judge", "pairwise")}
    verdict, pairwise = Judge(str(tiny_checkpoint)), Judge(str(tiny_checkpoint), JudgeConfig(mode="pairwise"))
    pairs = table.to_pandas()
    for name, path in bench.items():
        rows = [{**r, "prompt": to_chat_messages(r["prompt"])} for r in read_benchmark(
            name, path, stand_in_images=shared_data / "real-images") if not isinstance(r, Rejected)][:4]
        mine = pairs[pairs.benchmark == name]
        assert np.allclose(mine[["verdict/chosen", "verdict/rejected"]].to_numpy(), verdict.score_pairs(rows), atol=1e-4)
        orders = pairwise.compare_orders(rows)
        margins = (mine["pairwise/chosen"] - mine["pairwise/rejected"]).to_numpy()
        assert np.allclose(margins, [m for m, _ in orders], atol=1e-4)
        entry = report["benchmarks"][name]
        assert entry["counts"]["scored"] == 4 and set(entry["position_consistency"]) == {"pairwise"}
        assert entry["position_consistency"]["pairwise"] == {
            "consistent": pytest.approx(np.mean([c for _, c in orders])), "pairs": 4}
        assert {"rm", "verdict", "pairwise", "ensemble: mean"} <= set(entry["results"])
    assert "Position consistency of pairwise" in markdown(report) and "| pairwise (judge: pairwise) |" in markdown(report)
