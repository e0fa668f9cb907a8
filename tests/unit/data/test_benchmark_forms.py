"""Benchmarks read in their publishers' own forms, whatever the container: small files written here in
each exact layout (the hub's Parquet and `save_to_disk`, the JSONL releases with image paths, MMRB2's
`reasoning.json` and its hub Parquet), each giving the same pairs as the other forms of the same data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.benchmarks import (read_mmrb2, read_vl_rewardbench,
                                             vl_rewardbench_category)
from mrm_ray.eval.benchmarks import read_benchmark

IMG = {"type": "image", "text": None}


def _png(colour: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


RED, BLUE, GREEN, GREY = _png("red"), _png("blue"), _png("green"), _png("grey")


def _split(items) -> tuple[list[dict], dict[str, str]]:
    items = list(items)
    return ([r for r in items if not isinstance(r, Rejected)],
            {r.position: r.reason for r in items if isinstance(r, Rejected)})


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pairs(rows):
    return [(r["id"], r["group_id"], r["category"], r["prompt"], r["images"], r["chosen"], r["rejected"])
            for r in rows]


# ---------------------------------------------------------------- VL-RewardBench
VL_RECORDS = [  # (id, image, query, response, human_ranking)
    ("RLAIF-V-14", RED, "Describe the image.", ["A red square.", "A blue circle."], [0, 1]),
    ("hallucination_pair-1003", BLUE, "<image>\nDescribe this image in detail.", ["Blue.", "Red."], [0, 1]),
    ("LRVInstruction-000", RED, "Is it red?", ["No.", "Yes, it is red."], [1, 0]),  # the second is preferred
    ("mathverse_1294", BLUE, "What is x?", ["x = 2", "x = 3"], [0, 1]),
    ("mathverse_1294", RED, "What is y?", ["y = 1", "y = 5"], [0, 1]),  # ids repeat in the release
    ("mmmu_pro_test_Art_5", RED, "Which?", ["B", "C"], [0, 0]),  # not a ranking: quarantined
]
VL_EXPECTED = [
    ("RLAIF-V-14#0", "RLAIF-V-14", "hallucination", "Describe the image.", [RED], "A red square.", "A blue circle."),
    ("hallucination_pair-1003#0", "hallucination_pair-1003", "hallucination", "Describe this image in detail.",
     [BLUE], "Blue.", "Red."),
    ("LRVInstruction-000#0", "LRVInstruction-000", "general", "Is it red?", [RED], "Yes, it is red.", "No."),
    ("mathverse_1294#0", "mathverse_1294", "reasoning", "What is x?", [BLUE], "x = 2", "x = 3"),
    ("mathverse_1294#1", "mathverse_1294", "reasoning", "What is y?", [RED], "y = 1", "y = 5"),
]


def _vl_expected():
    return [(i, g, c, [{"role": "user", "content": [IMG, {"type": "text", "text": p}]}], im, ch, rj)
            for i, g, c, p, im, ch, rj in VL_EXPECTED]


def _vl_columns():
    return {"id": [r[0] for r in VL_RECORDS], "query": [r[2] for r in VL_RECORDS],
            "response": [r[3] for r in VL_RECORDS], "human_ranking": [r[4] for r in VL_RECORDS],
            "models": [["m1", "m2"]] * len(VL_RECORDS), "judge": ["human"] * len(VL_RECORDS)}


def test_vl_rewardbench_jsonl_release_with_image_paths(tmp_path):
    rows = []
    for i, (rid, image, query, response, ranking) in enumerate(VL_RECORDS):
        _write(tmp_path / "images" / "set" / f"{i}.png", image)
        rows.append({"id": rid, "image_path": f"images/set/{i}.png", "query": query, "response": response,
                     "human_ranking": ranking, "models": ["m1", "m2"], "judge": "human", "rationale": None})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    good, bad = _split(read_benchmark("vl_rewardbench", tmp_path / "data.jsonl"))  # images beside the file
    assert _pairs(good) == _vl_expected()
    assert bad == {"data.jsonl:6": "bad field: human_ranking [0, 0] (a rank per response: [0, 1] or [1, 0])"}


def test_vl_rewardbench_hub_parquet_and_saved_dataset_give_the_same_pairs(tmp_path):
    import datasets

    images = [{"bytes": r[1], "path": f"{k}.png"} for k, r in enumerate(VL_RECORDS)]
    repo = tmp_path / "VL-RewardBench"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({**_vl_columns(), "image": images}), repo / "data" / "test-00000-of-00001.parquet")
    good, bad = _split(read_benchmark("vl_rewardbench", repo))  # the downloaded hub repository, as it is
    assert _pairs(good) == _vl_expected() and list(bad) == ["test-00000-of-00001.parquet:5"]

    features = datasets.Features({"id": datasets.Value("string"), "query": datasets.Value("string"),
                                  "response": datasets.List(datasets.Value("string")),
                                  "human_ranking": datasets.List(datasets.Value("int64")),
                                  "models": datasets.List(datasets.Value("string")), "judge": datasets.Value("string"),
                                  "image": datasets.Image()})
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({**_vl_columns(), "image": images}, features=features)}
                         ).save_to_disk(str(saved))
    good, bad = _split(read_vl_rewardbench(saved, image_root=tmp_path))
    assert _pairs(good) == _vl_expected() and list(bad) == ["saved/test:5"]


def test_vl_rewardbench_official_categories():
    # cal.py: the id's first word before `_` or `-`, case-insensitive (r1_reward's case-sensitive match would
    # put RLAIF-V / RLHF-V into general)
    assert [vl_rewardbench_category(i) for i in ("RLAIF-V-1", "RLHF-V-31", "hallucination_pair-2", "mathverse_4",
                                                 "mmmu_pro_validation_3", "wildvision-battle-6", "jailbreak-7",
                                                 "svit-9")] == [
        "hallucination", "hallucination", "hallucination", "reasoning", "reasoning", "general", "general", "general"]


# ---------------------------------------------------------------- MM-RLHF-RewardBench
def test_mm_rlhf_hub_repository_jsonl_and_parquet(tmp_path):
    """The hub repository: `mm_reward_bench.jsonl` at the top, media under `images/`, and the same records in
    `data/train-00000-of-00001.parquet`; a video pair (a folder of frames) is read on the frames route: its frames,
    in name order, before the question, each an image."""
    repo = tmp_path / "MM-RLHF-RewardBench"
    _write(repo / "images" / "mcq" / "073712.png", RED)
    _write(repo / "images" / "safety" / "img_1.jpg", BLUE)
    _write(repo / "images" / "video" / "v_scene" / "c01_0002.jpeg", BLUE)
    _write(repo / "images" / "video" / "v_scene" / "c01_0001.jpeg", GREEN)
    records = [{"id": "073712_6205145", "image": "mcq/073712.png", "prompt": "Which?", "chosen": "A", "rejected": "B",
                "chosen_reason": "right", "rejected_reason": "wrong"},
               {"id": "073712_6205145", "image": "mcq/073712.png", "prompt": "Which?", "chosen": "A", "rejected": "C",
                "chosen_reason": "right", "rejected_reason": "wrong"},
               {"id": "v_1", "video": "video/v_scene", "prompt": "What happens?", "chosen": "x", "rejected": "y",
                "chosen_reason": "", "rejected_reason": ""},
               {"id": "s_1", "image": "safety/img_1.jpg", "prompt": "Help?", "chosen": "No.", "rejected": "Sure.",
                "chosen_reason": "", "rejected_reason": ""}]
    (repo / "mm_reward_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (repo / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([{"video": None, "image": None, **r} for r in records]),
                   repo / "data" / "train-00000-of-00001.parquet")
    expected = [("073712_6205145#0", "073712_6205145", "mcq", [RED], "A", "B"),
                ("073712_6205145#1", "073712_6205145", "mcq", [RED], "A", "C"),
                ("v_1#0", "v_1", "video", [], "x", "y"),
                ("s_1#0", "s_1", "safety", [BLUE], "No.", "Sure.")]
    for path, root in ((repo / "mm_reward_bench.jsonl", None), (repo / "data", repo)):
        good, bad = _split(read_benchmark("mm_rlhf", path, image_root=root))
        assert [(r["id"], r["group_id"], r["category"], r["images"], r["chosen"], r["rejected"]) for r in good] == expected
        # the video stays a video (its frames in order, where its part is): the run's encoder chooses its route
        assert bad == {} and [r["videos"] for r in good] == [[], [], [[GREEN, BLUE]], []]
        assert good[2]["prompt"] == [{"role": "user", "content": [{"type": "video", "text": None}, {
            "type": "text", "text": "What happens?"}]}]


# ---------------------------------------------------------------- Multimodal RewardBench 2
def _mmrb2_release(folder: Path) -> Path:
    """reasoning.json as MMRB2's build_from_hf.py writes it, with its images/ and input_images/ folders."""
    for name, data in (("input_images/blink_1.jpg", RED), ("input_images/blink_2.jpg", BLUE),
                       ("images/p1_a_0.png", GREEN), ("images/p1_a_1.png", GREY), ("images/p2_b_0.png", RED)):
        _write(folder / name, data)
    pairs = [
        {"id": "p1", "prompt_source": "blink",
         "prompt_content": [["image", "input_images/blink_1.jpg"], ["image", "input_images/blink_2.jpg"],
                            ["text", "Which image is real? (A) first (B) second"]],
         "prompt_metadata": {"answer": "(A)"},
         "response_a": {"model_name": "agent", "response_content": [
             ["text", "I zoom in."], ["image", "images/p1_a_0.png"], ["text", " Then crop."],
             ["image", "images/p1_a_1.png"], ["text", " Answer: (A)"]]},
         "response_b": {"model_name": "gpt-4o", "response_content": [["text", "Answer: (B)"]]},
         "chosen": "A", "human_annotations": {"response_a_ratings": ["A", "A", "B"], "response_b_ratings": []}},
        {"id": "p2", "prompt_source": "vstar",
         "prompt_content": [["text", "What colour is the cup?"], ["image", "input_images/blink_1.jpg"]],
         "prompt_metadata": {"answer": "red"},
         "response_a": {"model_name": "o3", "response_content": [["text", "Blue."]]},
         "response_b": {"model_name": "agent", "response_content": [["text", "Cropped: "],
                                                                    ["image", "images/p2_b_0.png"]]},
         "chosen": "B", "human_annotations": {"response_a_ratings": [], "response_b_ratings": ["A", "A", "A"]}},
        {"id": "p3", "prompt_source": "vstar", "prompt_content": [["text", "Q"]],
         "response_a": {"model_name": "x", "response_content": [["text", "a"]]},
         "response_b": {"model_name": "y", "response_content": [["text", "b"]]},
         "chosen": "tie", "human_annotations": {}},
    ]
    (folder / "reasoning.json").write_text(json.dumps({"pairs": pairs}))
    return folder / "reasoning.json"


MMRB2_EXPECTED = [
    ("p1#0", "blink", [{"role": "user", "content": [IMG, IMG, {"type": "text",
                                                            "text": "Which image is real? (A) first (B) second"}]}],
     [RED, BLUE], "I zoom in.<image> Then crop.<image> Answer: (A)", [GREEN, GREY], "Answer: (B)", []),
    ("p2#0", "vstar", [{"role": "user", "content": [{"type": "text", "text": "What colour is the cup?"}, IMG]}],
     [RED], "Cropped: <image>", [RED], "Blue.", []),
]


def _mmrb2(rows):
    return [(r["id"], r["category"], r["prompt"], r["images"], r["chosen"], r["chosen_images"], r["rejected"],
             r["rejected_images"]) for r in rows]


def test_mmrb2_reasoning_json_keeps_images_inside_responses(tmp_path):
    good, bad = _split(read_benchmark("mmrb2", _mmrb2_release(tmp_path / "MMRB2" / "benchmark")))
    assert _mmrb2(good) == MMRB2_EXPECTED
    assert bad == {"reasoning.json:2": "bad field: chosen 'tie' (A or B)"}

    # the repository's response-only file (no prompts) says how to build the full one
    only = tmp_path / "reasoning_response_only.json"
    only.write_text(json.dumps({"pairs": [{k: v for k, v in p.items() if k != "prompt_content"}
                                          for p in json.loads((tmp_path / "MMRB2" / "benchmark" / "reasoning.json")
                                                              .read_text())["pairs"][:1]]}))
    (_, reason), = _split(read_mmrb2(only, image_root=tmp_path))[1].items()
    assert reason.startswith("missing field: prompt_content") and "build_from_hf.py" in reason
    # generation tasks are reported as not supported, never dropped
    t2i = tmp_path / "t2i.json"
    t2i.write_text(json.dumps({"pairs": [{"id": "g1", "prompt_content": [["text", "draw a cat"]],
                                          "response_a": {"response_content": [["image", "a.png"]]},
                                          "response_b": {"response_content": [["image", "b.png"]]},
                                          "chosen": "A", "human_annotations": [6, 5, 6]}]}))
    _, bad = _split(read_mmrb2(t2i, image_root=tmp_path))
    assert list(bad.values()) == ["not supported: MMRB2 t2i task: judging generated images is out of scope for a "
                                  "reward model of responses (the reasoning task is scored)"]


def test_mmrb2_hub_parquet_with_placeholders_gives_the_same_pairs(tmp_path):
    def img(data):
        return {"bytes": data, "path": None}

    table = pa.Table.from_pylist([
        {"pair_id": "p1", "prompt_text": "<image_1><image_2>Which image is real? (A) first (B) second",
         "prompt_images": [img(RED), img(BLUE)], "response_a_text": "I zoom in.<image_1> Then crop.<image_2> Answer: (A)",
         "response_a_images": [img(GREEN), img(GREY)], "response_b_text": "Answer: (B)", "response_b_images": [],
         "chosen": "A", "prompt_source": "blink", "response_a_model": "agent", "response_b_model": "gpt-4o",
         "human_annotations": json.dumps({"response_a_ratings": ["A"], "response_b_ratings": []}),
         "prompt_metadata": "{}"},
        {"pair_id": "p2", "prompt_text": "What colour is the cup?", "prompt_images": [img(RED)],  # no placeholder
         "response_a_text": "Blue.", "response_a_images": [], "response_b_text": "Cropped: <image_1>",
         "response_b_images": [img(RED)], "chosen": "B", "prompt_source": "vstar", "response_a_model": "o3",
         "response_b_model": "agent", "human_annotations": json.dumps({"response_a_ratings": []}),
         "prompt_metadata": "{}"}])
    repo = tmp_path / "multimodal-rewardbench-2"
    (repo / "reasoning").mkdir(parents=True)
    pq.write_table(table, repo / "reasoning" / "test-00000-of-00001.parquet")
    good, bad = _split(read_benchmark("mmrb2", repo / "reasoning"))
    assert _mmrb2(good) == MMRB2_EXPECTED and bad == {}


@pytest.mark.parametrize("name", ["vl_rewardbench", "mm_rlhf", "mmrb2", "multimodal_rewardbench"])
def test_a_missing_benchmark_file_names_itself(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_benchmark(name, tmp_path / "nope.jsonl"))


def test_images_inside_responses_must_match_their_marks():
    from mrm_ray.data.quarantine import BadRecord
    from mrm_ray.data.schema import canonical_pair

    base = dict(id="x", source="s", position="f:1", prompt="Q?")
    pair = canonical_pair(**base, chosen="Look <image> here", rejected="Look <image> here", chosen_images=[RED],
                          rejected_images=[BLUE])  # same words, different pictures: a real pair
    assert (pair["chosen_images"], pair["rejected_images"]) == ([RED], [BLUE])
    assert canonical_pair(**base, chosen="a", rejected="b")["chosen_images"] == []
    with pytest.raises(BadRecord, match="image mismatch: chosen has 1 <image> marks, 2 images"):
        canonical_pair(**base, chosen="Look <image>", rejected="b", chosen_images=[RED, BLUE])
    with pytest.raises(BadRecord, match="chosen identical to rejected"):
        canonical_pair(**base, chosen="same", rejected="same")
