"""Format readers: exact canonical rows from hand-made files, every bad record set aside with
its reason while the good ones around it are kept, and the real published files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrm_ray.data.quarantine import Rejected, reason_kind
from mrm_ray.data.readers import READERS, get_reader
from mrm_ray.data.readers.benchmarks import (mm_rlhf_category, read_mm_rlhf_rewardbench,
                                             read_multimodal_rewardbench, read_vl_rewardbench, vl_rewardbench_category)
from mrm_ray.data.readers.hf import read_hf_rlaif_v, read_hf_ultrafeedback_binarized
from mrm_ray.data.readers.sharegpt import read_sharegpt
from mrm_ray.data.readers.trl import read_trl
from mrm_ray.data.readers.ultrafeedback import read_ultrafeedback_ultra_hard

IMG = {"type": "image", "text": None}
VIDEO = {"type": "video", "text": None}


def _t(text: str) -> dict:
    return {"type": "text", "text": text}


def _png(colour: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


RED, BLUE = _png("red"), _png("blue")


def _jsonl(path: Path, rows: list) -> Path:
    """One line per row; a str row is written as is (to make malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _split(items) -> tuple[list[dict], dict[str, str]]:
    """(good rows, {position: reason} of the rejects)."""
    items = list(items)
    return ([r for r in items if not isinstance(r, Rejected)],
            {r.position: r.reason for r in items if isinstance(r, Rejected)})


def _images(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "red.png").write_bytes(RED)
    (root / "blue.png").write_bytes(BLUE)
    (root.parent / "secret.png").write_bytes(RED)
    return root


# ---------------------------------------------------------------- ShareGPT

def _sg(convs, chosen="good", rejected="bad", **extra) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in convs],
            "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}, **extra}


def test_sharegpt_roles_image_tags_and_untagged_images(tmp_path):
    _images(tmp_path / "img")
    data = tmp_path / "img" / "pairs.json"
    data.write_text(json.dumps([
        _sg([("human", "Hi"), ("gpt", "Hello"), ("user", "Look <image> and<image>now")],
            system="Be brief.", images=["blue.png", "red.png"]),
        _sg([("system", "S"), ("human", "What is this?")], images=["red.png"]),
        _sg([("human", "Plain")], chosen="yes", rejected="no"),
    ]))
    (a, b, c), bad = _split(read_sharegpt(data, source="sg"))
    assert bad == {}
    assert a["prompt"] == [{"role": "system", "content": [_t("Be brief.")]},
                           {"role": "user", "content": [_t("Hi")]},
                           {"role": "assistant", "content": [_t("Hello")]},
                           {"role": "user", "content": [_t("Look "), IMG, _t(" and"), IMG, _t("now")]}]
    assert a["images"] == [BLUE, RED] and (a["chosen"], a["rejected"]) == ("good", "bad")
    assert (a["id"], a["source"], a["position"]) == ("pairs.json:0", "sg", "pairs.json:0")
    assert b["prompt"][1] == {"role": "user", "content": [IMG, _t("What is this?")]} and b["images"] == [RED]
    assert c["prompt"] == [{"role": "user", "content": [_t("Plain")]}] and c["images"] == []
    assert (c["chosen"], c["rejected"], c["margin"]) == ("yes", "no", None)


def test_sharegpt_rejects_each_bad_record_and_keeps_the_rest(tmp_path):
    _images(tmp_path / "img")
    good = _sg([("human", "q")])
    data = _jsonl(tmp_path / "p.jsonl", [
        good,
        "{not json",
        _sg([("human", "q"), ("gpt", "a")]),
        {k: v for k, v in good.items() if k != "chosen"},
        _sg([("human", "q")], rejected="  "),
        _sg([("human", "q")], chosen="same", rejected="same"),
        _sg([("human", "<image>q")], images=["gone.png"]),
        _sg([("human", "<image>q")], images=["../secret.png"]),
        _sg([("human", "q"), ("observation", "tool output")]),
        _sg([("human", "<image><image>q")], images=["red.png"]),
        {"chosen": "x", "rejected": "y"},
        _sg([("human", "<image>q2")], images=["red.png"]),
    ])
    rows, bad = _split(read_sharegpt(data, image_root=tmp_path / "img"))
    assert [r["position"] for r in rows] == ["p.jsonl:1", "p.jsonl:12"] and rows[1]["images"] == [RED]
    assert {k: reason_kind(v) for k, v in bad.items()} == {
        "p.jsonl:2": "malformed JSON", "p.jsonl:3": "bad conversation", "p.jsonl:4": "missing field",
        "p.jsonl:5": "empty field", "p.jsonl:6": "chosen identical to rejected", "p.jsonl:7": "missing image",
        "p.jsonl:8": "image outside root", "p.jsonl:9": "unsupported role", "p.jsonl:10": "image mismatch",
        "p.jsonl:11": "missing field"}
    assert bad["p.jsonl:3"] == "bad conversation: last turn is assistant, not user"
    assert bad["p.jsonl:4"] == "missing field: chosen" and bad["p.jsonl:11"] == "missing field: conversations"


def test_sharegpt_real_llama_factory_demo(shared_data):
    rows, bad = _split(read_sharegpt(shared_data / "text-preference" / "dpo_en_demo.json"))
    assert len(rows) == 300 and bad == {}
    assert rows[0]["prompt"] == [{"role": "user", "content": [_t(
        "Hi! I'd like to create a new language game simulating the first person perspective of a "
        "character named Angela.")]}]
    assert rows[0]["chosen"].startswith("That sounds like a fun and engaging idea! Here are some tips")
    assert [m["role"] for m in rows[8]["prompt"]] == ["system", "user"]
    assert rows[8]["prompt"][0]["content"] == [_t(
        "You are an AI assistant. You will be given a task. You must generate a detailed and long answer.")]
    assert rows[8]["chosen"].startswith("Title: The Craft and Timeliness in Journalism")
    assert Counter(len(r["prompt"]) for r in rows)[5] == 57  # 57 three-user-turn conversations


# ---------------------------------------------------------------- TRL

def test_trl_jsonl_explicit_and_implicit_prompts(tmp_path):
    _images(tmp_path / "img")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}
    data = _jsonl(tmp_path / "img" / "t.jsonl", [
        {"id": "s", "prompt": "Say hi", "chosen": "hi", "rejected": "bye", "margin": 2},
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "red"}],
         "rejected": [{"role": "assistant", "content": "blue"}], "images": ["red.png"]},
        {"chosen": [{"role": "system", "content": "S"}, user, {"role": "assistant", "content": "blue"}],
         "rejected": [{"role": "system", "content": "S"}, user, {"role": "assistant", "content": "red"}],
         "images": ["blue.png"]},
        {"chosen": [user, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
         "images": ["red.png"]},
        {"chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "images": ["http://example.invalid/x.png"]},
        {"prompt": "q", "chosen": "", "rejected": "b"},
    ])
    (s, m, imp), bad = _split(read_trl(data))
    assert (s["id"], s["prompt"], s["images"], s["chosen"], s["rejected"], s["margin"]) == (
        "s", [{"role": "user", "content": [_t("Say hi")]}], [], "hi", "bye", 2.0)
    assert m["id"] == "t.jsonl:2" and m["prompt"] == [{"role": "user", "content": [IMG, _t("Colour?")]}]
    assert (m["images"], m["chosen"], m["rejected"], m["margin"]) == ([RED], "red", "blue", None)
    assert imp["prompt"] == [{"role": "system", "content": [_t("S")]},
                             {"role": "user", "content": [IMG, _t("Colour?")]}]
    assert (imp["images"], imp["chosen"], imp["rejected"]) == ([BLUE], "blue", "red")
    assert bad == {
        "t.jsonl:4": "implicit prompt mismatch: chosen and rejected differ before the last message",
        "t.jsonl:5": "missing field: prompt", "t.jsonl:6": "bad field: margin 'big' is not a number",
        "t.jsonl:7": "image outside root: 'http://example.invalid/x.png' is a URL; "
                     "only files under the image root are read",
        "t.jsonl:8": "empty field: chosen"}


def test_trl_parquet_directory_row_groups_and_image_structs(tmp_path):
    root = _images(tmp_path / "img")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    prompt = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Which?"}]}]
    rows = [{"id": f"r{i}", "prompt": prompt, "chosen": f"c{i}", "rejected": f"r{i}", "margin": float(i),
             "images": [{"bytes": RED, "path": None}]} for i in range(5)]
    rows[3]["images"] = [{"bytes": None, "path": "blue.png"}]
    rows[4]["images"] = [{"bytes": None, "path": "nope.png"}]
    # Parquet unifies the part structs, so text parts come back with `image: null` keys too.
    rows[2]["prompt"] = [{"role": "user", "content": [{"type": "image", "text": None, "image": None},
                                                      {"type": "text", "text": "Which?", "image": None}]}]
    rows[2]["chosen"] = rows[2]["rejected"]
    pq.write_table(pa.Table.from_pylist(rows[:2]), data / "a.parquet", row_group_size=1)
    pq.write_table(pa.Table.from_pylist(rows[2:]), data / "sub" / "b.parquet", row_group_size=2)
    _jsonl(data / "c.jsonl", [{"prompt": "q", "chosen": "x", "rejected": "y"}])
    (data / "d.parquet").write_bytes(b"not parquet at all")
    good, bad = _split(read_trl(data, source="trl", image_root=root))
    assert [(r["id"], r["position"], r["images"], r["margin"]) for r in good] == [
        ("r0", "a.parquet:0", [RED], 0.0), ("r1", "a.parquet:1", [RED], 1.0),
        ("c.jsonl:1", "c.jsonl:1", [], None), ("r3", "b.parquet:1", [BLUE], 3.0)]
    assert good[0]["prompt"] == [{"role": "user", "content": [IMG, _t("Which?")]}]
    assert {k: reason_kind(v) for k, v in bad.items()} == {
        "b.parquet:0": "chosen identical to rejected", "b.parquet:2": "missing image",
        "d.parquet:0": "malformed Parquet"}
    assert all(r["source"] == "trl" for r in good)


def test_readers_raise_only_for_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_trl(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        list(read_sharegpt(tmp_path / "absent.json"))


# ---------------------------------------------------------------- benchmarks

def test_benchmark_readers_ids_groups_categories_and_media(tmp_path):
    root = tmp_path / "media"
    (root / "mcq").mkdir(parents=True)
    (root / "safety").mkdir()
    (root / "mcq" / "a.png").write_bytes(RED)
    (root / "safety" / "b.png").write_bytes(BLUE)
    (tmp_path / "secret.png").write_bytes(RED)

    def mm(id_, **media):
        return {"id": id_, "prompt": "Q?", "chosen": f"yes {id_}", "rejected": "no", **media}

    mm_file = _jsonl(tmp_path / "mm.jsonl", [
        mm("q1", image="mcq/a.png"), mm("q1", video="video/clip_1"), mm("q1", image="mcq/a.png"),
        mm("q2", image="safety/b.png"), mm("q2", image="mcq/missing.png"), mm("q3", image="../secret.png")])
    rows, bad = _split(read_mm_rlhf_rewardbench(mm_file, image_root=root))
    assert [(r["id"], r["group_id"], r["category"], r["images"]) for r in rows] == [
        ("q1#0", "q1", "mcq", [RED]), ("q1#2", "q1", "mcq", [RED]), ("q2#0", "q2", "safety", [BLUE])]
    assert rows[0]["prompt"] == [{"role": "user", "content": [IMG, _t("Q?")]}] and rows[0]["chosen"] == "yes q1"
    assert bad == {"mm.jsonl:2": "missing video: video/clip_1",
                   "mm.jsonl:5": "missing image: mcq/missing.png",
                   "mm.jsonl:6": "image outside root: '../secret.png' resolves outside " + str(root)}

    vl_file = _jsonl(tmp_path / "vl.jsonl", [
        {"id": i, "prompt": "Describe.", "chosen": "c", "rejected": "r", "image": "mcq/a.png"}
        for i in ("RLAIF-V-1", "rlhf-v-2", "hallucination_pair-3", "mathverse_4", "mmmu_pro_test_Art_5",
                  "wildvision-battle-6", "mathverse_4")])
    rows, bad = _split(read_vl_rewardbench(vl_file, source="vl", image_root=root))
    assert bad == {}
    assert [(r["id"], r["category"]) for r in rows] == [
        ("RLAIF-V-1#0", "hallucination"), ("rlhf-v-2#0", "hallucination"), ("hallucination_pair-3#0", "hallucination"),
        ("mathverse_4#0", "reasoning"), ("mmmu_pro_test_Art_5#0", "reasoning"), ("wildvision-battle-6#0", "general"),
        ("mathverse_4#1", "reasoning")]
    assert mm_rlhf_category("long/x_short.png") == "long" and mm_rlhf_category("data/safety_x.png") == "safety"


def test_stand_in_images_fill_only_missing_files_and_are_marked(tmp_path):
    root, photos = tmp_path / "media", tmp_path / "photos"
    (root / "mcq").mkdir(parents=True)
    photos.mkdir()
    (root / "mcq" / "a.png").write_bytes(RED)
    (photos / "p1.jpg").write_bytes(BLUE)
    (photos / "notes.txt").write_text("not an image")
    vl_file = _jsonl(tmp_path / "vl.jsonl", [
        {"id": i, "prompt": "Describe.", "chosen": "c", "rejected": "r", "image": image}
        for i, image in (("a", "mcq/a.png"), ("b", "gone/b.png"), ("c", "../escape.png"))])
    rows, bad = _split(read_vl_rewardbench(vl_file, image_root=root, stand_in_images=photos))
    assert [(r["id"], r["images"], r["stand_in"]) for r in rows] == [("a#0", [RED], False), ("b#0", [BLUE], True)]
    assert list(bad.values()) == ["image outside root: '../escape.png' resolves outside " + str(root)]
    with pytest.raises(ValueError, match="no .jpg/.png stand-in images"):
        list(read_vl_rewardbench(vl_file, image_root=root, stand_in_images=tmp_path / "media"))


def test_multimodal_rewardbench_better_output_and_categories(tmp_path):
    root = _images(tmp_path / "media")

    def row(id_, category, better="Output1", image="red.png"):
        return {"ID": id_, "Text": "Which?", "Image": image, "Output1": "one", "Output2": "two",
                "Better": better, "Category": category}

    data = tmp_path / "all_data.json"
    data.write_text(json.dumps([
        row("nocaps_1", "open_generation/correctness_task"), row("vis_2", "open_generation/preference_task", "Output2"),
        row("pairs_3", "safety"), row("tox_4", "safety"), row("math_5", "reasoning"), row("code_6", "reasoning"),
        row("vqa_7", "vqa", "Output3"), row("k_8", "knowledge", image="missing.png")]))
    rows, bad = _split(read_multimodal_rewardbench(data, image_root=root))
    assert [(r["id"], r["category"], r["chosen"], r["rejected"]) for r in rows] == [
        ("nocaps_1", "correctness", "one", "two"), ("vis_2", "preference", "two", "one"),
        ("pairs_3", "safety/bias", "one", "two"), ("tox_4", "safety/toxicity", "one", "two"),
        ("math_5", "reasoning/math", "one", "two"), ("code_6", "reasoning/coding", "one", "two")]
    assert rows[0]["images"] == [RED] and rows[0]["prompt"] == [{"role": "user", "content": [IMG, _t("Which?")]}]
    assert bad == {"all_data.json:6": "bad field: Better 'Output3' (Output1 or Output2)",
                   "all_data.json:7": "missing image: missing.png"}
    (tmp_path / "broken.json").write_text("[{")
    (rejected,) = read_multimodal_rewardbench(tmp_path / "broken.json", image_root=root)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("malformed JSON")


def test_real_benchmark_files(shared_data, tmp_path):
    bench = shared_data / "benchmarks"
    stand_in = sorted((shared_data / "real-images").glob("*.jpg"))[0]
    root = tmp_path / "media"

    def stage(file: Path, n: int) -> set[str]:
        """Copy the stand-in image to the first n rows' image paths. It is NOT the benchmark's
        image: it only lets those rows read end to end; the rest are 'missing image' rejects."""
        paths = {json.loads(line).get("image") for line in file.read_text().splitlines()[:n]}
        for p in paths:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stand_in, root / p)
        return paths

    mm_file = bench / "mm_rlhf_reward_bench.jsonl"
    assert stage(mm_file, 5) == {"mcq/073712.png", "mcq/081256.png"}
    items = list(read_mm_rlhf_rewardbench(mm_file, image_root=root))
    rows, bad = _split(items)
    assert len(items) == 170 and len(rows) == 9
    assert Counter(reason_kind(r) for r in bad.values()) == {"missing image": 136, "missing video": 25}  # no frames
    groups = {r["group_id"] for r in rows} | {r.id for r in items if isinstance(r, Rejected)}
    assert len(groups) == 46 and len({r["id"] for r in rows}) == 9
    assert [r["id"] for r in rows[:5]] == [f"073712_6205145#{k}" for k in range(4)] + ["081256_6212689#0"]
    assert rows[0]["category"] == "mcq" and rows[0]["images"] == [stand_in.read_bytes()]
    assert rows[0]["rejected"] == (" AB = 12.0. Since ABCD is a square, all four sides are equal. "
                                   "Therefore, CB = AB = 12.0.\nAnswer: C")
    media = [r.get("image") or r.get("video") for r in map(json.loads, mm_file.read_text().splitlines())]
    assert Counter(map(mm_rlhf_category, media)) == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}

    vl_file = bench / "vl_rewardbench_pairs.jsonl"
    stage(vl_file, 3)
    items = list(read_vl_rewardbench(vl_file, image_root=root))
    rows, bad = _split(items)
    assert len(items) == 1250 and len(rows) == 3 and Counter(map(reason_kind, bad.values())) == {"missing image": 1247}
    assert (rows[0]["id"], rows[0]["group_id"], rows[0]["category"]) == (
        "hallucination_pair-1003#0", "hallucination_pair-1003", "hallucination")
    assert rows[0]["prompt"] == [{"role": "user", "content": [IMG, _t("Describe this image in detail.")]}]
    ids = [r["group_id"] for r in rows] + [r.id for r in items if isinstance(r, Rejected)]
    assert Counter(map(vl_rewardbench_category, ids)) == {"general": 183, "hallucination": 749, "reasoning": 318}


# ---------------------------------------------------------------- Hugging Face layouts

def test_hf_rlaif_v_saved_dataset_dict_and_parquet(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "chosen": datasets.Value("string"), "rejected": datasets.Value("string")})
    train = datasets.Dataset.from_dict({
        "image": [{"bytes": RED, "path": None}, None, {"bytes": BLUE, "path": None}, {"bytes": RED, "path": None}],
        "question": ["What colour?", "q", "Shape?", "q"], "chosen": ["red", "a", "square", "same"],
        "rejected": ["blue", "b", "circle", "same"]}, features=features)
    saved = tmp_path / "rlaif_v"
    datasets.DatasetDict({"train": train, "test": train.select([2])}).save_to_disk(str(saved))
    rows, bad = _split(read_hf_rlaif_v(saved))
    assert [(r["id"], r["images"], r["chosen"], r["rejected"]) for r in rows] == [
        ("rlaif_v/train:0", [RED], "red", "blue"), ("rlaif_v/train:2", [BLUE], "square", "circle")]
    assert rows[0]["prompt"] == [{"role": "user", "content": [IMG, _t("What colour?")]}]
    assert rows[0]["source"] == "rlaif_v"
    assert bad == {"rlaif_v/train:1": "missing image: the row has no image",
                   "rlaif_v/train:3": "chosen identical to rejected"}
    [test_row] = read_hf_rlaif_v(saved, split="test", source="s")
    assert (test_row["position"], test_row["images"], test_row["source"]) == ("rlaif_v/test:0", [BLUE], "s")
    with pytest.raises(ValueError, match="'validation' is not in"):
        list(read_hf_rlaif_v(saved, split="validation"))

    root = _images(tmp_path / "hub" / "images")
    pq.write_table(pa.table({"image": [{"bytes": None, "path": "blue.png"}, {"bytes": None, "path": "../../x.png"}],
                             "question": ["Q", "Q"], "chosen": ["c", "c"], "rejected": ["r", "r"]}),
                   tmp_path / "hub" / "RLAIF-V-Dataset_000.parquet")
    rows, bad = _split(read_hf_rlaif_v(tmp_path / "hub", image_root=root))
    assert [(r["position"], r["images"]) for r in rows] == [("RLAIF-V-Dataset_000.parquet:0", [BLUE])]
    assert list(map(reason_kind, bad.values())) == ["image outside root"]


def _ub(pid: str, chosen, rejected="worse", **scores) -> dict:
    conv = lambda reply: [{"role": "user", "content": f"P{pid}"}, {"role": "assistant", "content": reply}]  # noqa: E731
    return {"prompt": f"P{pid}", "prompt_id": pid, "chosen": conv(chosen), "rejected": conv(rejected),
            "score_chosen": 8.0, "score_rejected": 3.5, **scores}


def test_hf_ultrafeedback_binarized_splits_scores_and_saved_dataset(tmp_path):
    import datasets

    data = tmp_path / "ub" / "data"
    data.mkdir(parents=True)
    no_reply = _ub("x", "y")
    no_reply["rejected"] = [{"role": "user", "content": "Px"}]
    pq.write_table(pa.Table.from_pylist([_ub("a", "best"), _ub("b", "ok", score_rejected=None), no_reply]),
                   data / "train_prefs-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([_ub("t", "test only")]), data / "test_prefs-00000-of-00001.parquet")
    rows, bad = _split(read_hf_ultrafeedback_binarized(tmp_path / "ub", margin_from_scores=True))
    assert [(r["id"], r["chosen"], r["rejected"], r["margin"]) for r in rows] == [("a", "best", "worse", 4.5)]
    assert rows[0]["prompt"] == [{"role": "user", "content": [_t("Pa")]}] and rows[0]["source"] == "ub"
    assert bad == {"train_prefs-00000-of-00001.parquet:1": "missing field: score_rejected",
                   "train_prefs-00000-of-00001.parquet:2": "bad field: rejected has no assistant message"}
    rows, _ = _split(read_hf_ultrafeedback_binarized(tmp_path / "ub"))
    assert [(r["id"], r["margin"]) for r in rows] == [("a", None), ("b", None)]
    [t] = read_hf_ultrafeedback_binarized(tmp_path / "ub", split="test_prefs")
    assert t["id"] == "t" and t["chosen"] == "test only"

    datasets.Dataset.from_list([_ub("s", "saved")]).save_to_disk(str(tmp_path / "saved"))
    [s] = read_hf_ultrafeedback_binarized(tmp_path / "saved", margin_from_scores=True)
    assert (s["id"], s["position"], s["chosen"], s["margin"]) == ("s", "saved:0", "saved", 4.5)


# ---------------------------------------------------------------- raw UltraFeedback

def _uf(instruction, scores, **extra) -> dict:
    return {"instruction": instruction, "source": "evol_instruct", **extra,
            "completions": [{"response": f"resp{i}", "overall_score": s, "model": "m"} for i, s in enumerate(scores)]}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ultrafeedback_ultra_hard_widest_gap(tmp_path, fmt):
    good = [_uf("Q1", [3, 8.5, 2, 8.5, 2], id="u1"), _uf("Q2", [7.0, 4.0])]
    bad = [_uf("Q3", [5.0]), _uf("Q4", [6.0, 6.0, 6.0]), _uf(None, [1.0, 2.0]), _uf("Q6", [1.0, float("nan")])]
    records = [good[0], *bad, good[1]]
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "uf.jsonl", [records[0], "[1, 2]", *records[1:]])
        pos = ["uf.jsonl:1", "uf.jsonl:7"]
        expect_bad = {"uf.jsonl:2": "malformed JSON", "uf.jsonl:3": "no preference: 1 completion(s), need 2",
                      "uf.jsonl:4": "no preference: all 3 completions score 6", "uf.jsonl:5": "missing field: prompt",
                      "uf.jsonl:6": "bad field: completions[1].overall_score nan is not a number"}
    else:
        path = tmp_path / "uf.parquet"
        for r in records:
            r.setdefault("id", None)
            for c in r["completions"]:
                c["overall_score"] = float(c["overall_score"])
        pq.write_table(pa.Table.from_pylist(records), path)
        pos = ["uf.parquet:0", "uf.parquet:5"]
        expect_bad = {"uf.parquet:1": "no preference: 1 completion(s), need 2",
                      "uf.parquet:2": "no preference: all 3 completions score 6",
                      "uf.parquet:3": "missing field: prompt",
                      "uf.parquet:4": "bad field: completions[1].overall_score nan is not a number"}
    rows, rejects = _split(read_ultrafeedback_ultra_hard(path, margin_from_scores=True))
    assert [(r["id"], r["position"], r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        ("u1", pos[0], "resp1", "resp2", 6.5), (pos[1], pos[1], "resp0", "resp1", 3.0)]
    assert rows[0]["prompt"] == [{"role": "user", "content": [_t("Q1")]}] and rows[0]["source"] == "uf"
    assert {k: (reason_kind(v) if v.startswith("malformed") else v) for k, v in rejects.items()} == expect_bad
    assert [r["margin"] for r in read_ultrafeedback_ultra_hard(path) if isinstance(r, dict)] == [None, None]


def test_ultrafeedback_ranked_keeps_every_completion_and_quarantines_identical_ones(tmp_path):
    same = {"instruction": "Q7", "completions": [{"response": "same", "overall_score": s} for s in (1.0, 5.0, 3.0)]}
    path = _jsonl(tmp_path / "uf.jsonl", [_uf("Q1", [3, 8.5, 2, 7], id="u1"), same])
    rows, rejects = _split(read_ultrafeedback_ultra_hard(path, ranked=True))
    [row] = rows
    assert (row["chosen"], row["rejected"], row["more_responses"]) == ("resp1", "resp2", ["resp0", "resp3"])
    assert row["scores"] == [8.5, 2.0, 3.0, 7.0]  # chosen, rejected, then the rest in order
    assert rejects == {"uf.jsonl:2": "all 3 responses identical"}
    [plain] = [r for r in read_ultrafeedback_ultra_hard(path) if isinstance(r, dict)]
    assert plain["more_responses"] == [] and plain["scores"] is None  # the default: the widest pair only


# ---------------------------------------------------------------- registry

def test_registry_names_and_unknown_reader():
    assert set(READERS) == {"chat_messages", "sharegpt", "trl", "mm_rlhf_rewardbench", "vl_rewardbench",
                            "multimodal_rewardbench", "mmrb2", "hf_rlaif_v", "hf_ultrafeedback_binarized", "ultrafeedback_ultra_hard",
                            "canonical"}
    assert get_reader("trl") is read_trl and get_reader("vl_rewardbench") is read_vl_rewardbench
    with pytest.raises(ValueError, match="unknown reader 'sharegtp'; known readers: canonical, chat_messages"):
        get_reader("sharegtp")


def test_importing_the_readers_does_not_import_datasets():
    code = "import sys, mrm_ray.data.readers; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chat_messages_keep_multi_turn_conversations_and_quarantine_one_ending_with_the_assistant(tmp_path):
    """Images in two user turns and an assistant turn between them are kept, in order; a prompt whose last turn is
    the assistant's is set aside (the pair answers the turn before it), and the records around it are kept."""
    from mrm_ray.data.readers.chat_messages import read_chat_messages

    _images(tmp_path / "img")

    def user(text, image):
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                            {"type": "text", "text": text}]}

    turns = [{"role": "system", "content": "Be brief."}, user("What colour?", "red.png"),
             {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}, user("And now?", "blue.png")]
    data = _jsonl(tmp_path / "img" / "chat.jsonl", [
        {"id": "multi", "prompt": turns, "chosen": "Blue.", "rejected": "Red."},
        {"id": "ends", "prompt": turns[:3], "chosen": "Blue.", "rejected": "Red."},
        {"id": "single", "prompt": [user("Which?", "red.png")], "chosen": "Red.", "rejected": "Blue."}])
    rows, bad = _split(read_chat_messages(data))
    assert [r["id"] for r in rows] == ["multi", "single"]
    assert rows[0]["prompt"] == [{"role": "system", "content": [_t("Be brief.")]},
                                 {"role": "user", "content": [IMG, _t("What colour?")]},
                                 {"role": "assistant", "content": [_t("Red.")]},
                                 {"role": "user", "content": [IMG, _t("And now?")]}]
    assert rows[0]["images"] == [RED, BLUE]
    assert list(bad) == ["chat.jsonl:2"] and bad["chat.jsonl:2"].startswith(
        "bad conversation: the prompt's last turn (of 3) is the assistant's")


def test_chat_messages_read_videos_and_quarantine_bad_ones(tmp_path):
    """A video part (frame names, or a folder of frames) stays a video where it is, its frames in order (the run's
    encoder chooses the route); a video with no frames, with frames of different sizes, or missing is set aside with
    the reason."""
    from mrm_ray.data.readers.chat_messages import read_chat_messages

    root = _images(tmp_path / "img")
    (root / "clip").mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        (root / "clip" / f"{i:04d}.png").write_bytes(_png(colour))
    (root / "small.png").write_bytes(_png_size(3, 3))

    def record(id_, video):
        return {"id": id_, "prompt": [{"role": "user", "content": [
            {"type": "text", "text": "Which way?"}, {"type": "video", "video": video},
            {"type": "image_url", "image_url": {"url": "red.png"}}]}], "chosen": "Left.", "rejected": "Right."}

    data = _jsonl(root / "videos.jsonl", [record("names", ["blue.png", "red.png"]), record("folder", "clip"),
                                          record("empty", []), record("sizes", ["red.png", "small.png"]),
                                          record("gone", "nowhere")])
    rows, bad = _split(read_chat_messages(data))
    assert [r["id"] for r in rows] == ["names", "folder"]
    assert rows[0]["images"] == [RED] and rows[0]["videos"] == [[BLUE, RED]]  # the frames in order
    assert rows[0]["prompt"][0]["content"] == [_t("Which way?"), VIDEO, IMG]
    assert rows[1]["images"] == [RED] and rows[1]["videos"] == [[_png("red"), _png("blue"), _png("green")]]
    assert {k: v.split(":")[0] for k, v in bad.items()} == {"videos.jsonl:3": "empty video",
                                                            "videos.jsonl:4": "frames of different sizes in one video",
                                                            "videos.jsonl:5": "missing video"}


def _png_size(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_sharegpt_videos_where_their_tags_are_or_leading_the_first_user_turn(tmp_path):
    """LLaMA-Factory's `videos` (frame lists or frame folders) at `<video>` marks, or before the first user turn's
    text, each a video of its frames in order; a video file is not supported, saying how to make frames."""
    root = _images(tmp_path / "img")
    (root / "clip").mkdir()
    for i, colour in enumerate(("green", "blue")):
        (root / "clip" / f"{i}.png").write_bytes(_png(colour))
    (root / "movie.mp4").write_bytes(b"\0\0\0\x18ftypmp42")
    data = root / "v.json"
    data.write_text(json.dumps([
        _sg([("human", "Look <image> then <video> now")], images=["red.png"], videos=["clip"]),
        _sg([("human", "Which way?")], videos=[["blue.png", "red.png"]]),
        _sg([("human", "<video>?")], videos=["movie.mp4"])]))
    (tagged, untagged), bad = _split(read_sharegpt(data, source="sg"))
    assert tagged["prompt"] == [{"role": "user", "content": [_t("Look "), IMG, _t(" then "), VIDEO, _t(" now")]}]
    assert tagged["images"] == [RED] and tagged["videos"] == [[_png("green"), _png("blue")]]
    assert untagged["prompt"] == [{"role": "user", "content": [VIDEO, _t("Which way?")]}]
    assert untagged["images"] == [] and untagged["videos"] == [[BLUE, RED]]
    assert list(bad.values()) == ["not supported: video file (videos are read as folders of frames: decode it to "
                                  "frames first, e.g. `ffmpeg -i clip.mp4 -vf fps=2 clip/%04d.jpg`)"]


def test_unlabelled_records_keep_images_in_the_order_the_prompt_shows_them(tmp_path):
    """A prompt mixing an inline image part and a placeholder filled from `images`: the images come in the order of
    their parts; a record with one response, or with more images than placeholders, is quarantined."""
    from mrm_ray.data.readers.unlabelled import read_unlabelled

    root = _images(tmp_path / "img")
    mixed = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "red.png"}}, {"type": "image"},
                                          {"type": "text", "text": "Compare."}]}]
    data = _jsonl(root / "u.jsonl", [
        {"id": "mixed", "prompt": mixed, "images": ["blue.png"], "responses": ["Red, then blue.", "Blue, then red."]},
        {"id": "plain", "prompt": "Which colour?", "images": ["blue.png"], "responses": ["Blue.", "Red."]},
        {"id": "extra", "prompt": mixed, "images": ["blue.png", "red.png"], "responses": ["a", "b"]},
        {"id": "one", "prompt": "Q?", "responses": ["only"]}])
    rows, bad = _split(read_unlabelled(data))
    assert [r["id"] for r in rows] == ["mixed", "plain"]
    assert rows[0]["images"] == [RED, BLUE] and rows[1]["images"] == [BLUE]
    assert rows[0]["prompt"][0]["content"] == [IMG, IMG, _t("Compare.")]
    assert {k: reason_kind(v) for k, v in bad.items()} == {"u.jsonl:3": "image mismatch", "u.jsonl:4": "bad field"}
