"""Interchange with Hugging Face sequence-classification reward models: one loads as a reward model and
scores as transformers' own class does; a linear-head reward model exports as one that transformers loads
with the same scores; an MLP head is refused with the reason."""

import io
import json

import numpy as np
import pytest
import torch

from mrm_ray.config import HeadConfig
from mrm_ray.model.inputs import PairEncoder
from mrm_ray.model.packing import collate_groups
from mrm_ray.model.processor import load_processor
from mrm_ray.model.checkpoints import resolve
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.model.seq_cls import SCORE_BIAS, export_seq_cls


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (70, 90, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _items(encoder, vision: bool):
    images = [_png(1)] if vision else []
    return [encoder.encode_item([{"role": "user", "content": [{"type": "image"}] * len(images) + [
        {"type": "text", "text": text}]}], images, answer)
        for text, answer in (("What is shown?", "A red square."), ("Which colour?", "Blue, on the left side."))]


def _ours(model, encoder, items) -> torch.Tensor:
    groups = [{**{k: v for k, v in it.items() if k != "response_ids"}, "responses": [it["response_ids"]]}
              for it in items]
    with torch.no_grad():
        return model(**collate_groups(groups, pad_token_id=encoder.pad_token_id, share_prompt=model.shares_prompt))


def _theirs(hf_model, items) -> torch.Tensor:
    """transformers' class on the same token ids, one sequence at a time (its pooling: the last non-pad token)."""
    out = []
    with torch.no_grad():
        for it in items:
            ids = torch.as_tensor(np.concatenate([it["prompt_ids"], it["response_ids"]]))[None]
            extra = {}
            if "pixel_values" in it:
                extra = dict(pixel_values=torch.as_tensor(it["pixel_values"]),
                             image_grid_thw=torch.as_tensor(it["image_grid_thw"]),
                             mm_token_type_ids=torch.as_tensor(np.concatenate(
                                 [it["prompt_mm_token_type_ids"], np.zeros(len(it["response_ids"]), np.int64)]))[None])
            out.append(hf_model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0, 0])
    return torch.stack(out).float()


@pytest.mark.parametrize("family,cls", [("qwen2", "Qwen2ForSequenceClassification"),
                                        ("qwen3", "Qwen3ForSequenceClassification"),
                                        ("qwen3_5", "Qwen3_5ForSequenceClassification")])
def test_a_hf_sequence_classifier_loads_and_scores_as_transformers_does(tmp_path, family_checkpoint, family, cls):
    import transformers

    base = family_checkpoint(family)
    torch.manual_seed(5)
    hf = getattr(transformers, cls).from_pretrained(base, num_labels=1).eval()
    hf.config.pad_token_id = hf.config.get_text_config().pad_token_id
    hf.save_pretrained(tmp_path / "rm")
    load_processor(base).save_pretrained(tmp_path / "rm")
    model = RewardModel.from_pretrained(tmp_path / "rm").eval()
    assert model.head_config.num_layers == 1 and model.provenance["format"] == "hf-seq-cls"
    encoder = PairEncoder(load_processor(tmp_path / "rm"))
    items = _items(encoder, model.family.vision)
    theirs = _theirs(hf, items)
    assert theirs.std() > 0
    torch.testing.assert_close(_ours(model, encoder, items), theirs, atol=1e-5, rtol=1e-5)
    assert resolve(str(tmp_path / "rm")) == tmp_path / "rm"  # an ensemble member, a Scorer path
    # as a Serve member or an evaluation actor scores it: the one checkpoint reader gives its version and
    # statistics (it has no reward_config.json), and the scorer gives transformers' own scores
    from mrm_ray.eval.report import member_stats
    from mrm_ray.model.checkpoints import info
    from mrm_ray.model.scorer import Scorer

    scorer = Scorer(str(tmp_path / "rm"))
    assert scorer.version == info(tmp_path / "rm").version and len(scorer.version) == 12
    assert member_stats(str(tmp_path / "rm")) == (0.0, 1.0)
    images = [_png(1)] if model.family.vision else []
    prompts = [[{"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": text}]}]
               for text in ("What is shown?", "Which colour?")]
    scored = scorer.score_items([{"prompt": p, "images": images, "response": r}
                                 for p, r in zip(prompts, ("A red square.", "Blue, on the left side."))])
    torch.testing.assert_close(torch.tensor(scored), theirs, atol=1e-5, rtol=1e-5)


def test_a_linear_head_exports_as_a_classifier_transformers_loads_with_the_same_scores(tmp_path, family_checkpoint):
    from safetensors import safe_open
    from transformers import Qwen3ForSequenceClassification

    base = family_checkpoint("qwen3")
    model = RewardModel.from_pretrained(base, head=HeadConfig(num_layers=1, init_seed=3)).eval()
    with torch.no_grad():
        model.head.mlp[-1].bias.fill_(0.25)
    model.score_mean, model.score_std = 0.5, 2.0
    encoder = PairEncoder(load_processor(base))
    items = _items(encoder, vision=False)
    ours = _ours(model, encoder, items)
    out = export_seq_cls(model, tmp_path / "export", processor=encoder.processor)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForSequenceClassification"] and config[SCORE_BIAS] == 0.25
    with safe_open(out / "model.safetensors", framework="pt") as f, \
            safe_open(base / "model.safetensors", framework="pt") as g:
        assert set(f.keys()) - {"score.weight"} == set(g.keys()) - {"lm_head.weight"}
    hf = Qwen3ForSequenceClassification.from_pretrained(out).eval()
    torch.testing.assert_close(_theirs(hf, items) + 0.25, ours, atol=1e-5, rtol=1e-5)
    back = RewardModel.from_pretrained(out).eval()
    torch.testing.assert_close(_ours(back, encoder, items), ours, atol=1e-6, rtol=0)
    assert (back.score_mean, back.score_std) == (0.5, 2.0)


def test_a_vision_language_export_is_vllms_layout_and_round_trips(tmp_path, tiny_checkpoint, encoder):
    from safetensors import safe_open

    model = RewardModel.from_pretrained(tiny_checkpoint, head=HeadConfig(num_layers=1, init_seed=1)).eval()
    out = export_seq_cls(model, tmp_path / "vl", processor=encoder.processor)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2_5_VLForSequenceClassification"]
    def keys(path):
        with safe_open(path / "model.safetensors", framework="pt") as f:
            return set(f.keys())

    # the layout transformers itself saves a Qwen2.5-VL in (the published one, which vLLM's adapter reads)
    assert keys(out) - {"score.weight"} == keys(tiny_checkpoint) - {"lm_head.weight"}
    items = _items(encoder, vision=True)
    torch.testing.assert_close(_ours(RewardModel.from_pretrained(out).eval(), encoder, items),
                               _ours(model, encoder, items), atol=1e-6, rtol=0)


def test_an_mlp_head_is_refused_with_the_reason(tmp_path, tiny_checkpoint, encoder):
    model = RewardModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match="2 layers.*one linear `score` layer"):
        export_seq_cls(model, tmp_path / "no", processor=encoder.processor)
    assert not (tmp_path / "no").exists()
