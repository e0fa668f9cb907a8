"""`mrm-ray label` on the shared Ray cluster: unlabelled records labelled by an ensemble of reward models and a
pairwise judge, pair by pair equal to the members scored in this process, with provenance, a quarantine, a
margin threshold, an object-store output and resumption; and distillation: a student reward model trained on
an ensemble's labels agrees with its teacher on held-out pairs."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.images import png
from mrm_ray.config import JudgeConfig, LabelConfig, LocalTrainConfig
from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.canonical import read_canonical
from mrm_ray.eval.label import label
from mrm_ray.model.judge import Judge
from mrm_ray.model.scorer import Scorer

GOOD = [
    {"id": "hi", "prompt": "Say hi.", "responses": ["Hello!", "Go away.", "Hi there, friend."]},
    {"id": "red", "prompt": "What colour is the square?", "images": ["red.png"], "responses": ["red", "blue"]},
    {"id": "chat", "prompt": [{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": "Is the sky blue?"}], "responses": ["Yes.", "No.", "Maybe"]},
    {"id": "green", "prompt": "<image> Which colour?", "images": ["green.png"],
     "responses": ["green", "It is green.", "purple"]},
]
BAD = [
    ({"id": "one", "prompt": "Only one", "responses": ["x"]}, "responses needs two or more"),
    ({"id": "lost", "prompt": "Where?", "images": ["nope.png"], "responses": ["x", "y"]}, "missing image: nope.png"),
    ({"id": "same", "prompt": "Same", "responses": ["x", " x "]}, "all 2 responses identical"),
    ({"id": "escape", "prompt": "Out", "images": ["../red.png"], "responses": ["x", "y"]}, "outside root"),
]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabelled")
    (root / "data").mkdir()
    (root / "data" / "red.png").write_bytes(png((220, 20, 20)))
    (root / "data" / "green.png").write_bytes(png((20, 200, 20)))
    (root / "red.png").write_bytes(png())
    path = root / "data" / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*GOOD, *(b for b, _ in BAD)]))
    return path


CLEAR = 1e-4  # a sign read from a value this close to 0 may differ between batches (CPUs round differently)


def _expected(records_path, reward_checkpoints, tiny_checkpoint) -> dict[str, tuple[float, bool, float, bool]]:
    """Per candidate pair id: the mean over the members of their own margins (the `mean` method's margin), whether
    the pairwise judge's two orders agree, the fraction of members agreeing with the label, and whether every
    value those signs are read from is clear of 0 (`CLEAR`)."""
    from mrm_ray.data.readers.unlabelled import read_unlabelled
    from mrm_ray.data.schema import to_chat_messages

    scalars = [Scorer(str(p)) for p in reward_checkpoints[:2]]
    judge = Judge(str(tiny_checkpoint), JudgeConfig(mode="pairwise"))
    out = {}
    for r in read_unlabelled(records_path, source="unlabelled"):
        if isinstance(r, Rejected):
            continue
        group = {"prompt": to_chat_messages(r["prompt"]), "images": r["images"], "responses": r["responses"]}
        scores = [s.score_groups([group])[0] for s in scalars]
        for i in range(len(r["responses"])):
            for j in range(i + 1, len(r["responses"])):
                pair = {**group, "chosen": r["responses"][i], "rejected": r["responses"][j]}
                (m, consistent), = judge.compare_orders([pair])
                (readings,) = judge._score([{**pair, "responses": [pair["chosen"], pair["rejected"]]}])
                own = np.array([s[i] - s[j] for s in scores] + [m])
                margin = float(own.mean())
                clear = min(np.abs([*own, margin, *readings])) > CLEAR
                out[f"unlabelled/{r['id']}#{i}-{j}"] = (
                    margin, consistent, float(np.mean(np.sign(own) == np.sign(margin))), clear)
    return out


def test_labels_pairs_with_provenance_quarantines_and_resumes(ray_cluster, records, reward_checkpoints,
                                                             tiny_checkpoint, tmp_path, s3):
    (tmp_path / "labeller.yaml").write_text(yaml.safe_dump({"method": "mean", "members": [
        {"name": "a", "path": str(reward_checkpoints[0])}, {"name": "b", "path": str(reward_checkpoints[1])},
        {"name": "judge", "kind": "judge", "path": str(tiny_checkpoint), "judge": {"mode": "pairwise"}}]}))
    config = LabelConfig(labeller=str(tmp_path / "labeller.yaml"), data={"unlabelled": str(records)},
                         out=str(tmp_path / "out"), records_per_part=2, batch_size=2)
    summary = label(config)
    expected = _expected(records, reward_checkpoints, tiny_checkpoint)
    assert len(expected) == 3 + 1 + 3 + 3
    out = tmp_path / "out"
    # what training reads (the canonical reader) holds every candidate pair, the better response chosen
    rows = {r["id"]: r for r in read_canonical(out / "pairs")}
    assert not any(isinstance(r, Rejected) for r in rows.values()) and set(rows) == set(expected)
    table = pq.read_table(out / "pairs").to_pylist()
    assert len(table) == len(expected)
    assert sum(clear for *_, clear in expected.values()) >= 8  # the sign checks below cover most pairs
    for row in table:
        margin, consistent, agreement, clear = expected[row["id"]]
        record = next(r for r in GOOD if f"unlabelled/{r['id']}" == row["record_id"])
        i, j = (int(x) for x in row["id"].rsplit("#", 1)[1].split("-"))
        assert row["label_margin"] == pytest.approx(abs(margin), abs=1e-4)
        if clear:  # which response is chosen, and the agreements, are read from signs
            better, worse = (i, j) if margin > 0 else (j, i)
            assert (row["chosen"], row["rejected"]) == (record["responses"][better], record["responses"][worse])
            assert row["order_agreement"] == consistent and row["member_agreement"] == pytest.approx(agreement)
        assert row["labeller"] == config.labeller and len(row["labeller_version"]) == 12
        assert row["margin"] is None  # the label's strength is provenance, not a margin for the loss
    assert (len(rows["unlabelled/red#0-1"]["images"]), len(rows["unlabelled/hi#0-1"]["images"])) == (1, 0)
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [q["id"] for q in quarantined] == [b["id"] for b, _ in BAD]
    for (_, says), q in zip(BAD, quarantined):
        assert says in q["reason"]
    assert summary["records_labelled"] == 4 and summary["pairs"] == 10 and summary["dropped"] == {}
    assert summary["quarantined"] == {"unreadable": 4, "unencodable": 0}
    assert len(list((out / "done").glob("*.json"))) == 2  # two records per part

    # a re-run labels nothing it has written
    files = {p: p.stat().st_mtime_ns for p in (out / "pairs").iterdir()}
    again = label(config)
    assert again["records_skipped_as_written"] == 4 and again["pairs"] == 10
    assert {p: p.stat().st_mtime_ns for p in (out / "pairs").iterdir()} == files
    # a part whose done file never came (a crash between its two writes) is removed and labelled again
    lost = sorted((out / "done").glob("*.json"))[0]
    lost.unlink()
    resumed = label(config)
    assert resumed["records_skipped_as_written"] == 2 and resumed["pairs"] == 10
    assert {r["id"] for r in pq.read_table(out / "pairs").to_pylist()} == set(expected)

    # into a bucket, with a margin threshold: the pairs under it are dropped and counted
    threshold = float(np.median([abs(m) for m, *_ in expected.values()]))
    bucket = s3.bucket()
    thresholded = label(LabelConfig(labeller=config.labeller, data=config.data, out=f"{bucket}/labels",
                                    min_margin=threshold))
    below = sum(abs(m) < threshold for m, *_ in expected.values())
    assert thresholded["dropped"] == {"low_margin": below} and thresholded["pairs"] == len(expected) - below
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(f"{bucket}/labels/pairs")
    parts = [f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(path)) if f.path.endswith(".parquet")]
    kept = [row for p in parts for row in pq.read_table(p, filesystem=fs).to_pylist()]
    assert sorted(r["id"] for r in kept) == sorted(k for k, (m, *_) in expected.items() if abs(m) >= threshold)


# ------------------------------------------------------------------------------ distillation
def _colour_records(n: int, seed: int) -> list[dict]:
    """Text colour questions (the colour stated in the prompt) with the right and a wrong answer, in random order:
    unlabelled, the order says nothing."""
    from mrm_ray.data.synthetic import image_grounded_pairs

    rng = random.Random(seed)
    out = []
    for pair in image_grounded_pairs(n, seed=seed, task="colour_text"):
        responses = [pair["chosen"], pair["rejected"]]
        rng.shuffle(responses)
        out.append({"id": pair["id"], "prompt": pair["prompt"], "responses": responses})
    return out


def test_a_student_trained_on_an_ensembles_labels_agrees_with_it(ray_cluster, family_checkpoint, tmp_path):
    """Two tiny Qwen3 reward models that learned which colour the prompt states are the teacher (their mean);
    `mrm-ray label` labels unlabelled answers with them; one student trained on those labels alone agrees with
    the teacher on >= 90% of held-out pairs (measured 1.0 on seeds 0 and 1 of the student)."""
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.local import train_pairs

    base = family_checkpoint("qwen3")
    encoder = PairEncoder(load_processor(base))
    schedule = dict(steps=300, batch_size=16, lr=1e-3, warmup_steps=30)
    teachers = []
    for seed in (0, 1):
        model = RewardModel.from_pretrained(base)
        train_pairs(model, [encoder.encode_pair(r["prompt"], [], r["chosen"], r["rejected"])
                            for r in image_grounded_pairs(256, seed=10 + seed, task="colour_text")],
                    pad_token_id=encoder.pad_token_id, config=LocalTrainConfig(**schedule, seed=seed))
        teachers.append(model.save_pretrained(tmp_path / f"teacher-{seed}", processor=load_processor(base)))
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({"members": [
        {"name": f"t{i}", "path": str(p)} for i, p in enumerate(teachers)]}))  # text-only: text records only
    (tmp_path / "unlabelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _colour_records(512, 1)))
    summary = label(LabelConfig(labeller=str(tmp_path / "teacher.yaml"), out=str(tmp_path / "labels"),
                                data={"unlabelled": str(tmp_path / "unlabelled.jsonl")}, batch_size=64))
    assert summary["records_labelled"] == 512 and summary["pairs"] + sum(summary["dropped"].values()) == 512

    pairs = [r for r in read_canonical(tmp_path / "labels" / "pairs")]
    student = RewardModel.from_pretrained(base)
    train_pairs(student, [encoder.encode_pair(r["prompt"], [], r["chosen"], r["rejected"]) for r in pairs],
                pad_token_id=encoder.pad_token_id, config=LocalTrainConfig(**schedule, seed=0))
    held_out = [{"prompt": r["prompt"], "images": [], "chosen": r["responses"][0], "rejected": r["responses"][1]}
                for r in _colour_records(200, 2)]
    teacher = np.mean([np.subtract(*np.array(Scorer(str(p)).score_pairs(held_out)).T) for p in teachers], axis=0)
    mine = np.subtract(*np.array(Scorer.from_model(student, encoder).score_pairs(held_out)).T)
    agreement = float(np.mean(np.sign(mine) == np.sign(teacher)))
    print(f"student-teacher agreement on 200 held-out pairs: {agreement:.3f}")
    assert agreement >= 0.90
