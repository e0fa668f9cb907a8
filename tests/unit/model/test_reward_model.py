"""RewardModel: last-token pooling under both paddings, save/load, checkpoint contents."""

import json

import pytest
import torch

from mrm_ray.config import HeadConfig
from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.packing import collate_sequences
from mrm_ray.model.checkpoints import HEAD_WEIGHTS, REWARD_CONFIG
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.model.scorer import Scorer


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return RewardModel.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def items():
    rows = list(image_grounded_pairs(2, seed=5))
    return [
        {"prompt": rows[0]["prompt"], "images": rows[0]["images"], "response": rows[0]["chosen"]},
        {"prompt": "Tell me a much longer story about two cats and a dog on a table.", "response": "No."},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and?"}]}],
         "images": rows[1]["images"], "response": "A long answer " * 7},
    ]


def _rewards(model, encoder, items, side):
    feats = [encoder.encode_item(it["prompt"], it.get("images") or [], it["response"]) for it in items]
    with torch.no_grad():
        return model(**collate_sequences(feats, pad_token_id=encoder.pad_token_id, padding_side=side))


def test_reward_read_at_last_real_token_under_both_paddings(model, encoder, items):
    alone = torch.cat([_rewards(model, encoder, [it], "right") for it in items])
    right, left = _rewards(model, encoder, items, "right"), _rewards(model, encoder, items, "left")
    assert alone.dtype == torch.float32 and alone.shape == (3,)
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=0)
    assert len(set(alone.tolist())) == 3  # different inputs, different rewards


def test_reward_depends_on_the_image(model, encoder, items):
    other = dict(items[0], images=list(image_grounded_pairs(3, seed=9))[2]["images"])
    a, b = _rewards(model, encoder, [items[0]], "right"), _rewards(model, encoder, [other], "right")
    assert (a - b).abs().item() > 1e-6


def _assert_same_model(a, b, encoder, items):
    """Bit-identical weights (stored data), and rewards within float noise (computed values)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(_rewards(a, encoder, items, "right"), _rewards(b, encoder, items, "right"),
                               atol=1e-6, rtol=0)


def test_fresh_head_is_reproducible_and_configurable(tiny_checkpoint, encoder, items):
    a = RewardModel.from_pretrained(tiny_checkpoint).eval()
    b = RewardModel.from_pretrained(tiny_checkpoint).eval()
    c = RewardModel.from_pretrained(tiny_checkpoint, head=HeadConfig(num_layers=1, init_seed=1)).eval()
    _assert_same_model(a, b, encoder, items)
    assert len(list(c.head.parameters())) == 2


def test_save_load_round_trip(tmp_path, tiny_checkpoint, encoder, items, processor):
    head = HeadConfig(num_layers=3, activation="tanh", hidden_size=16, dropout=0.1, init_seed=2)
    model = RewardModel.from_pretrained(tiny_checkpoint, head=head).eval()
    with torch.no_grad():
        model.head.mlp[-1].bias.fill_(0.25)  # a trained-looking change that must survive
    model.score_mean, model.score_std = 0.5, 2.0
    out = model.save_pretrained(tmp_path / "rm", processor=processor, extra={"run": "unit-test"})
    loaded = RewardModel.from_pretrained(out).eval()
    _assert_same_model(model, loaded, encoder, items)
    meta = json.loads((out / REWARD_CONFIG).read_text())
    assert meta["head"] == {"num_layers": 3, "activation": "tanh", "hidden_size": 16, "dropout": 0.1,
                            "init_seed": 2}
    assert (meta["score_mean"], meta["score_std"]) == (0.5, 2.0)
    assert meta["provenance"]["base_model"] == str(tiny_checkpoint)
    assert meta["provenance"]["run"] == "unit-test"
    assert loaded.normalize(torch.tensor([4.5])).item() == pytest.approx(2.0)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", HEAD_WEIGHTS, REWARD_CONFIG, "tokenizer.json", "chat_template.jinja"} <= files
    assert any(f.endswith(".safetensors") and f != HEAD_WEIGHTS for f in files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away
    with pytest.raises(ValueError, match="reward checkpoint"):
        RewardModel.from_pretrained(out, head=HeadConfig())


def test_save_over_existing_checkpoint(tmp_path, model):
    first = model.save_pretrained(tmp_path / "rm")
    (first / "stale.txt").write_text("x")
    model.save_pretrained(tmp_path / "rm")
    assert not (tmp_path / "rm" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_score_items_matches_forward(model, encoder, items):
    assert Scorer.from_model(model, encoder).score_items(items) == pytest.approx(
        _rewards(model, encoder, items, "right").tolist(), abs=1e-5)


def test_bf16_load_gives_float32_scores(tiny_checkpoint, encoder, items):
    model = RewardModel.from_pretrained(tiny_checkpoint, dtype="bfloat16").eval()
    assert model.dtype == torch.bfloat16
    rewards = _rewards(model, encoder, items, "right")
    assert rewards.dtype == torch.float32 and torch.isfinite(rewards).all()
