"""The batched vision attention equals transformers' per-window loop, values and gradients."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from mrm_ray.model.attention import GROUPED, NAME, padded_varlen_sdpa, register


def _per_chunk(q, k, v, cu):
    """The reference: one SDPA call per sequence, as transformers' non-flash path does."""
    lengths = (cu[1:] - cu[:-1]).tolist()
    outs = [F.scaled_dot_product_attention(a, b, c) for a, b, c in
            zip(q.split(lengths, dim=2), k.split(lengths, dim=2), v.split(lengths, dim=2))]
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("lengths", [[64, 64, 64], [1, 64, 17, 40, 3], [250]])
def test_padded_call_equals_one_call_per_sequence(lengths):
    torch.manual_seed(0)
    n = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v = (torch.randn(1, 4, n, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, _ = padded_varlen_sdpa(None, q, k, v, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    ref = _per_chunk(q, k, v, cu)
    assert out.shape == (1, n, 4, 16)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)


def test_refuses_cross_attention_layouts():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="same cu_seq_lens"):
        padded_varlen_sdpa(None, q, q, q, cu_seq_lens_q=torch.tensor([0, 8]), cu_seq_lens_k=torch.tensor([0, 4, 8]))


def test_vision_tower_matches_the_window_loop_on_published_windows():
    """Real window geometry (112 px windows, full attention in blocks 7/15/23/31), narrow width."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from mrm_ray.model.published import published_config_dict

    data = published_config_dict("qwen2_5_vl_3b")
    data["vision_config"].update(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, depth=9)
    data["vision_config"]["fullatt_block_indexes"] = [3, 7]
    config = Qwen2_5_VLConfig(**data).vision_config
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    loop = Qwen2_5_VisionTransformerPretrainedModel._from_config(config).double()
    batched = copy.deepcopy(loop)
    batched.config._attn_implementation = register()
    grid = torch.tensor([[1, 22, 30], [2, 8, 12], [1, 14, 14]])  # two images of different sizes and a 2-frame video
    pixels = torch.randn(int(grid.prod(1).sum()), 3 * 2 * 14 * 14, dtype=torch.float64)
    results = []
    for model in (loop, batched):
        out = model(pixels, grid_thw=grid)
        hidden = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state
        hidden.pow(2).sum().backward()
        results.append((hidden.detach(), model.blocks[1].attn.qkv.weight.grad.clone()))
    # float64: summation order alone (BLAS blocking differs with the batched shapes and the threads) moved
    # the outputs by up to 9e-9 once in CI; a wrong window or mask moves them by > 1e-2
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-7)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=1e-6)


def test_reward_model_uses_it_by_default_and_scores_the_same(tiny_checkpoint, tmp_path):
    from mrm_ray.model.reward_model import RewardModel

    batched = RewardModel.from_pretrained(tiny_checkpoint)
    loop = RewardModel.from_pretrained(tiny_checkpoint, vision_attention="windows")
    assert batched.backbone.visual.config._attn_implementation == NAME
    text = batched.backbone.language_model.config
    assert text._attn_implementation == GROUPED  # calls with a 4D mask go to SDPA
    assert loop.backbone.visual.config._attn_implementation == "sdpa"
    torch.manual_seed(0)
    grid = torch.tensor([[1, 8, 8]])
    pixels = torch.randn(64, 3 * 2 * 14 * 14)
    image_token = batched.backbone.config.image_token_id
    ids = torch.tensor([[5, 6, image_token] + [image_token] * 15 + [7, 8, 9]])
    kwargs = dict(input_ids=ids, mm_token_type_ids=(ids == image_token).long(), attention_mask=torch.ones_like(ids),
                  pixel_values=pixels, image_grid_thw=grid)
    with torch.no_grad():
        torch.testing.assert_close(batched(**kwargs), loop(**kwargs), rtol=0, atol=1e-5)
    saved = batched.save_pretrained(tmp_path / "saved")
    for name in (NAME, GROUPED):  # a checkpoint never needs this module to load
        assert name not in (saved / "config.json").read_text()
    assert json.loads((saved / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    with pytest.raises(ValueError, match="vision_attention"):
        RewardModel.from_pretrained(tiny_checkpoint, vision_attention="fast")
