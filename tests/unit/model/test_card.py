"""The model card (model/card.py): Hugging Face front matter that parses, with the numbers the checkpoint records,
the benchmark figures of an evaluation report next to the published ones, and `mrm-ray export` writing it."""

import json
from pathlib import Path

import pytest
import yaml

from mrm_ray.model.card import model_card, report_member


def front(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


META = {
    "head": {"num_layers": 2, "activation": "silu", "hidden_size": None, "dropout": 0.0},
    "score_mean": -0.25, "score_std": 1.5, "reward_token": "last real token (<|im_end|> closing the response)",
    "provenance": {
        "base_model": "Qwen/Qwen2.5-VL-7B-Instruct", "held_out_accuracy": 0.8125, "step": 300,
        "mrm_ray_version": "0.1.0", "saved_at": "2026-12-06T00:00:00Z",
        "data_counts": {"rlaif-v": {"available": 100, "rejected": 3, "mixture": 97, "train": 87, "held_out": 10},
                        "text": {"available": 50, "rejected": 0, "mixture": 50, "train": 45, "held_out": 5}},
        "held_out": {"pairs": 16, "loss": 0.41, "per_source": {"rlaif-v": 0.8, "text": 0.833}},
        "run_config": {"name": "my-rm", "mixture": "mix.yaml", "loss": {"use_margin": True},
                       "train": {"max_steps": 300, "learning_rate": 1e-5, "zero_stage": 3, "num_workers": 8,
                                 "lora": {"r": 16, "alpha": 32}}}}}

REPORT = {"members": {"rm": {"path": "/models/rm"}, "other": {"path": "/models/other"}},
          "benchmarks": {"mm_rlhf": {
              "title": "MM-RLHF-RewardBench", "headline": ["Acc", "Acc+"],
              "reference": {"BaseReward": {"Acc": 0.9176, "Acc+": 0.8043}},
              "counts": {"scored": 145, "stand_in_images": 145},
              "results": {"rm": {"Acc": 0.6, "Acc+": 0.25}, "other": {"Acc": 0.5, "Acc+": 0.1}}}}}


def test_front_matter_and_body_hold_the_checkpoints_numbers():
    fields, body = front(model_card(META, family="qwen2_5_vl", vision=True))
    assert fields["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and fields["library_name"] == "mrm-ray"
    assert {"reward-model", "qwen2_5_vl", "vision-language"} <= set(fields["tags"])
    assert fields["datasets"] == ["rlaif-v", "text"]
    (index,) = fields["model-index"]
    assert index["name"] == "my-rm"
    (held,) = index["results"]
    assert held["metrics"] == [{"type": "accuracy", "name": "held-out pairwise accuracy", "value": 0.8125}]
    assert "| rlaif-v | 100 | 3 | 97 | 87 | 10 | 80.00 |" in body and "| text | 50 | 0 | 50 | 45 | 5 | 83.30 |" in body
    assert "Held-out pairwise accuracy: **81.25%** over 16 pairs, loss 0.4100." in body
    assert "ZeRO-3 on 8 workers" in body and "mean -0.25, std 1.5" in body
    assert r"(<\|im_end\|> closing the response)" in body  # a `|` would split the table cell
    assert "No benchmark figures" in body


def test_report_figures_next_to_the_published_ones_and_stand_ins_flagged():
    fields, body = front(model_card(META, family="qwen2_5_vl", vision=True, report=REPORT, member="rm"))
    bench = fields["model-index"][0]["results"][1]
    assert bench["dataset"] == {"name": "MM-RLHF-RewardBench", "type": "mm_rlhf"}
    assert bench["metrics"] == [{"type": "accuracy", "name": "Acc", "value": 0.6},
                                {"type": "accuracy", "name": "Acc+", "value": 0.25}]
    assert "| this model | 60.00 | 25.00 |" in body and "| BaseReward (published) | 91.76 | 80.43 |" in body
    assert "145 of 145 pairs were scored with stand-in images" in body


def test_base_model_only_for_a_hub_id_and_the_seq_cls_layout(tmp_path):
    local = {**META, "provenance": {**META["provenance"], "base_model": str(tmp_path)}}
    fields, body = front(model_card(local, family="qwen3", vision=False, fmt="hf-seq-cls"))
    assert "base_model" not in fields and f"`{tmp_path}`" in body
    assert fields["library_name"] == "transformers" and fields["pipeline_tag"] == "text-classification"
    assert "text-only" in fields["tags"]
    bare = {"head": {}, "score_mean": 0.0, "score_std": 1.0, "provenance": {"base_model": "tiny random qwen3"}}
    fields, _ = front(model_card(bare, family="qwen3", vision=False))  # a checkpoint no run made
    assert "model-index" not in fields and "datasets" not in fields


def test_which_member_of_a_report_is_this_model(tmp_path):
    assert report_member(REPORT, "/models/rm") == "rm"
    assert report_member(REPORT, "/elsewhere", "other") == "other"
    with pytest.raises(ValueError, match="--report-member"):
        report_member(REPORT, "/elsewhere")
    with pytest.raises(ValueError, match="not in the report"):
        report_member(REPORT, "/models/rm", "nobody")
    assert report_member({"members": {"only": {"path": "x"}}}, "/elsewhere") == "only"


def test_export_writes_the_card_with_a_reports_figures(reward_checkpoints, tmp_path, capsys):
    from mrm_ray import cli

    report = tmp_path / "report.json"
    report.write_text(json.dumps({**REPORT, "members": {"rm": {"path": str(reward_checkpoints[0])}}}))
    assert cli.main(["export", str(reward_checkpoints[0]), str(tmp_path / "out"), "--format", "reward",
                     "--report", str(report)]) == 0
    fields, body = front((tmp_path / "out" / "README.md").read_text())
    assert [r["dataset"]["type"] for r in fields["model-index"][0]["results"]] == ["mm_rlhf"]
    assert f"exported from `{reward_checkpoints[0]}`" in body
    meta = json.loads((tmp_path / "out" / "reward_config.json").read_text())
    assert meta["provenance"]["exported_from"] == str(reward_checkpoints[0])
    # a report that does not say which member this is: refused before anything is written
    report.write_text(json.dumps(REPORT))
    with pytest.raises(SystemExit, match="--report-member"):
        cli.main(["export", str(reward_checkpoints[0]), str(tmp_path / "out2"), "--format", "reward",
                  "--report", str(report)])
    assert not (tmp_path / "out2").exists()
    # every reward checkpoint carries one, tiny ones included
    assert Path(reward_checkpoints[1], "README.md").is_file()


def test_export_as_a_sequence_classifier_writes_its_card(hf_seq_cls, tmp_path):
    from mrm_ray import cli

    assert cli.main(["export", str(hf_seq_cls), str(tmp_path / "seq"), "--format", "hf-seq-cls"]) == 0
    fields, body = front((tmp_path / "seq" / "README.md").read_text())
    assert fields["library_name"] == "transformers" and fields["pipeline_tag"] == "text-classification"
    assert "qwen3" in fields["tags"] and "transformers' `*ForSequenceClassification` layout" in body
