"""Bradley-Terry loss and its options against hand-computed values."""

import math

import pytest
import torch

from mrm_ray.config import LossConfig
from mrm_ray.model.loss import bradley_terry_loss


def nll(x):
    return -math.log(1 / (1 + math.exp(-x)))


def test_plain_loss_and_metrics():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.5, 1.0, 1.0])
    out = bradley_terry_loss(chosen, rejected)
    assert out.loss.item() == pytest.approx((nll(1.5) + nll(-1.0) + nll(0.0)) / 3, rel=1e-6)
    assert out.accuracy.item() == pytest.approx(1 / 3)  # the tie counts as wrong
    assert out.margin.item() == pytest.approx((1.5 - 1.0 + 0.0) / 3)
    assert out.chosen_reward.item() == pytest.approx(1.0)
    assert out.rejected_reward.item() == pytest.approx(2.5 / 3)


def test_margin_is_subtracted_and_can_be_ignored():
    chosen, rejected, margin = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])
    out = bradley_terry_loss(chosen, rejected, margin=margin)
    assert out.loss.item() == pytest.approx((nll(1.0) + nll(-2.0)) / 2, rel=1e-6)
    off = bradley_terry_loss(chosen, rejected, margin=margin, config=LossConfig(use_margin=False))
    assert off.loss.item() == pytest.approx((nll(2.0) + nll(1.0)) / 2, rel=1e-6)
    assert out.margin.item() == pytest.approx(1.5)  # the metric is the raw reward gap


def test_reward_centering():
    chosen, rejected = torch.tensor([1.0, 2.0]), torch.tensor([0.0, -1.0])
    out = bradley_terry_loss(chosen, rejected, config=LossConfig(centering_coef=0.1))
    base = (nll(1.0) + nll(3.0)) / 2
    assert out.loss.item() == pytest.approx(base + 0.1 * (1.0 + 1.0) / 2, rel=1e-6)


def test_length_normalization():
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    cl, rl = torch.tensor([100]), torch.tensor([3])
    out = bradley_terry_loss(chosen, rejected, config=LossConfig(length_normalize=True),
                             chosen_lengths=cl, rejected_lengths=rl)
    rc, rr = 2.0 / math.log(101), 1.0 / math.log(4)  # 0.433 < 0.721: the long answer loses
    assert out.loss.item() == pytest.approx(nll(rc - rr), rel=1e-6)
    assert out.accuracy.item() == 0.0
    assert bradley_terry_loss(chosen, rejected).accuracy.item() == 1.0
    with pytest.raises(ValueError, match="lengths"):
        bradley_terry_loss(chosen, rejected, config=LossConfig(length_normalize=True))


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([0.0, 0.5], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
