"""Preference losses against values worked out by hand."""

import math

import pytest
import torch

from lightning_dpo.losses import LOSSES, LossInputs, LossSettings, get_loss_spec, preference_loss, register_loss


def logps(pc, pr, rc, rr):
    return [torch.tensor([v], dtype=torch.float64, requires_grad=True) for v in (pc, pr, rc, rr)]


def test_sigmoid_by_hand():
    # log-ratios: chosen -1 - (-1.5) = 0.5, rejected -2 - (-1.5) = -0.5, h = 1
    pc, pr, rc, rr = logps(-1.0, -2.0, -1.5, -1.5)
    out = preference_loss(pc, pr, rc, rr, LossSettings(type="sigmoid", beta=0.1))
    # -log σ(0.1) = log(1 + e^-0.1)
    assert out.losses.item() == pytest.approx(0.6443966600735709, abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.05)
    assert out.rejected_rewards.item() == pytest.approx(-0.05)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.losses.sum().backward()
    # dL/d logπ(yw) = -β σ(-βh) = -0.1 σ(-0.1)
    assert pc.grad.item() == pytest.approx(-0.1 * 0.47502081252105999, abs=1e-12)
    assert pr.grad.item() == pytest.approx(0.1 * 0.47502081252105999, abs=1e-12)
    assert rc.grad.item() == pytest.approx(0.1 * 0.47502081252105999, abs=1e-12)


def test_sigmoid_is_ln2_when_policy_equals_reference():
    x = torch.tensor([-3.0, -7.5])
    out = preference_loss(x, x + 1, x, x + 1)
    assert torch.allclose(out.losses, torch.full((2,), math.log(2)))
    assert torch.equal(out.chosen_rewards, torch.zeros(2)) and torch.equal(out.rejected_rewards, torch.zeros(2))


def test_conservative_dpo_by_hand():
    pc, pr, rc, rr = logps(-1.0, -2.0, -1.5, -1.5)
    out = preference_loss(pc, pr, rc, rr, LossSettings(beta=0.1, label_smoothing=0.2))
    # 0.8·(−log σ(0.1)) + 0.2·(−log σ(−0.1)) = 0.8·0.644396… + 0.2·0.744396…
    assert out.losses.item() == pytest.approx(0.8 * 0.6443966600735709 + 0.2 * 0.7443966600735709, abs=1e-12)


@pytest.mark.parametrize(("beta", "h", "expected"), [(0.1, 1.0, 0.9), (0.5, 4.0, 0.0), (0.5, -2.0, 2.0)])
def test_hinge_by_hand(beta, h, expected):
    zero = torch.zeros(1, dtype=torch.float64)
    out = preference_loss(
        torch.tensor([h], dtype=torch.float64), zero, zero, zero, LossSettings(type="hinge", beta=beta)
    )
    assert out.losses.item() == pytest.approx(expected)


def test_ipo_by_hand():
    # per-token log-ratios: chosen 0.5 / 5 = 0.1, rejected -0.5 / 2 = -0.25; (0.35 - 1/(2·0.1))² = 21.6225
    pc, pr, rc, rr = logps(-1.0, -2.0, -1.5, -1.5)
    out = preference_loss(
        pc,
        pr,
        rc,
        rr,
        LossSettings(type="ipo", beta=0.1),
        chosen_lengths=torch.tensor([5]),
        rejected_lengths=torch.tensor([2]),
    )
    assert out.losses.item() == pytest.approx(21.6225, abs=1e-12)
    # Rewards are the same whatever the loss: β · summed log-ratio.
    assert out.chosen_rewards.item() == pytest.approx(0.05)


def test_ipo_requires_lengths():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="chosen_lengths= and rejected_lengths="):
        preference_loss(x, x, x, x, LossSettings(type="ipo"))


def test_reference_free_treats_reference_as_zero():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0])
    free = preference_loss(pc, pr, None, None)
    explicit = preference_loss(pc, pr, torch.zeros(1), torch.zeros(1))
    assert torch.equal(free.losses, explicit.losses)


def test_unknown_loss_type_names_the_registered_ones():
    with pytest.raises(ValueError, match="registered loss types: .*sigmoid"):
        get_loss_spec("no-such-loss")


def test_label_smoothing_out_of_range():
    with pytest.raises(ValueError, match="label_smoothing"):
        LossSettings(label_smoothing=0.5)


def test_register_custom_loss():
    @register_loss("test-squared-margin", uses_reference=False)
    def squared(x: LossInputs) -> torch.Tensor:
        return (x.chosen_logratios - x.rejected_logratios - 1.0) ** 2

    try:
        out = preference_loss(
            torch.tensor([3.0]), torch.tensor([1.0]), None, None, LossSettings(type="test-squared-margin")
        )
        assert out.losses.item() == pytest.approx(1.0)
        assert get_loss_spec("test-squared-margin").uses_reference is False
        with pytest.raises(ValueError, match="already registered"):
            register_loss("test-squared-margin")(squared)
    finally:
        LOSSES.pop("test-squared-margin")
