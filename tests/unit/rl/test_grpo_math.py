"""GRPO's arithmetic against hand-computed values."""

import math

import pytest
import torch

from mrm_ray.rl.grpo import group_advantages, grpo_loss, kl_k3, token_logprobs


def test_group_advantages_normalise_within_each_group():
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]), 4)
    std = math.sqrt(1.25)  # population std of 1..4
    assert adv[:4].tolist() == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], abs=1e-5)
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal rewards teach nothing
    assert group_advantages(torch.tensor([1.0, 3.0]), 2, scale=False).tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.ones(6), 4)


def test_k3_kl_is_zero_on_policy_and_matches_its_formula():
    logp = torch.tensor([-1.0, -2.0])
    assert kl_k3(logp, logp).tolist() == [0.0, 0.0]
    assert kl_k3(torch.tensor([-1.0]), torch.tensor([-0.5])).item() == pytest.approx(math.exp(0.5) - 0.5 - 1)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_token_logprobs_at_temperature():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    expected = torch.log_softmax(logits / 0.5, -1)[0, 0, 1]
    assert token_logprobs(logits, torch.tensor([[1]]), temperature=0.5).item() == pytest.approx(expected.item())


def test_clipping_and_kl_in_the_loss():
    old = torch.zeros(2, 1)
    logp = torch.full((2, 1), math.log(1.5), requires_grad=True)  # ratio 1.5 for both rows
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1)
    out = grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, kl_coef=0.0)
    # A>0: min(1.5, 1.2) = 1.2 (clipped, no gradient); A<0: min(-1.5, -1.2) = -1.5 (unclipped)
    assert out.loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    out.loss.backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[1, 0].item() == pytest.approx(0.5 * 1.5)
    assert out.clip_fraction == 1.0 and out.ratio_max == pytest.approx(1.5)
    ref = torch.full((2, 1), math.log(1.5) - 0.5)
    with_kl = grpo_loss(logp.detach(), old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1)
    assert with_kl.kl == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    assert with_kl.loss.item() == pytest.approx(out.loss.item() + 0.1 * with_kl.kl)


def test_padding_never_reaches_the_loss():
    """Pad positions may carry -inf log-probs (a suppressed pad token): the loss stays finite."""
    logp = torch.tensor([[-1.0, float("-inf")], [-2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[1, 0], [1, 1]])
    out = grpo_loss(logp, logp.detach(), torch.tensor([[-1.0, float("-inf")], [-2.0, -0.5]]), torch.tensor([1.0, -1.0]),
                    mask, kl_coef=0.1)
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and torch.isfinite(logp.grad).all()
    # per-response token means: row 0 has one token, row 1 two
    assert out.pg_loss == pytest.approx((-1.0 + 1.0) / 2)
