"""The Plackett–Luce rankings loss: pairwise DPO at K = 2, a hand-worked K = 3 case, ties."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo.losses import LOSSES, LossSettings, preference_loss, ranking_loss

BETA = 0.3


def pairs(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    return [(-20 * torch.rand(b, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(4)]


def test_k2_is_pairwise_dpo_in_values_and_gradients():
    pw, pl, rw, rl = pairs()
    dpo = preference_loss(pw, pl, rw, rl, LossSettings(beta=BETA)).losses
    # Columns in any order: the scores say which is better.
    policy, ref = torch.stack([pl, pw], 1), torch.stack([rl, rw], 1)
    scores = torch.tensor([[0.0, 1.0]]).expand(6, 2)
    listwise = ranking_loss(policy, ref, scores, LossSettings(type="plackett_luce", beta=BETA)).losses
    assert torch.allclose(listwise, dpo, rtol=0, atol=1e-12)
    ours = torch.autograd.grad(listwise.sum(), (pw, pl, rw, rl))
    theirs = torch.autograd.grad(dpo.sum(), (pw, pl, rw, rl))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_hand_worked_k3():
    """β = 1, log-ratios 2, 1, 0 for completions ranked 1st, 2nd, 3rd:
    L = [log(e² + e¹ + e⁰) − 2] + [log(e¹ + e⁰) − 1] + [log e⁰ − 0] = log(1 + e⁻¹ + e⁻²) + log(1 + e⁻¹)."""
    settings = LossSettings(type="plackett_luce", beta=1.0)
    # Shuffled columns, given as ranks through scores = −rank.
    policy = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    out = ranking_loss(policy, None, -torch.tensor([[3.0, 1.0, 2.0]]), settings)
    e = math.exp
    expected = math.log(1 + e(-1) + e(-2)) + math.log(1 + e(-1))
    assert out.losses.item() == pytest.approx(expected, abs=1e-12)  # 0.407606 + 0.313262
    assert out.losses.item() == pytest.approx(0.720868, abs=1e-6)
    # dL/dr_k = Σ over the stages k takes part in of softmax_k − [k is the stage's winner].
    (grad,) = torch.autograd.grad(out.losses.sum(), policy)
    z1 = 1 + e(-1) + e(-2)
    z2 = 1 + e(-1)
    best = 1 / z1 - 1
    second = e(-1) / z1 + 1 / z2 - 1
    third = e(-2) / z1 + e(-1) / z2
    assert torch.allclose(grad, torch.tensor([[third, best, second]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.rewards, policy.detach())


def test_ties_compete_only_with_completions_below():
    settings = LossSettings(type="plackett_luce", beta=1.0)
    r = torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64)
    tied_top = ranking_loss(r, None, torch.tensor([[2.0, 2.0, 1.0]]), settings).losses
    # Each of the tied two beats the third alone: two pairwise terms, nothing between the tied ones.
    expected = -torch.nn.functional.logsigmoid(r[0, 0] - r[0, 2]) - torch.nn.functional.logsigmoid(r[0, 1] - r[0, 2])
    assert tied_top.item() == pytest.approx(expected.item(), abs=1e-12)
    all_tied = ranking_loss(r, None, torch.tensor([[1.0, 1.0, 1.0]]), settings).losses
    assert all_tied.item() == 0.0


def test_registered_as_a_rankings_loss_and_refused_where_pairs_are_read():
    assert LOSSES["plackett_luce"].layout == "rankings"
    pw, pl, rw, rl = pairs()
    with pytest.raises(ValueError, match="ranking_loss"):
        preference_loss(pw, pl, rw, rl, LossSettings(type="plackett_luce"))
    with pytest.raises(ValueError, match="read different data"):
        LossSettings(type=["plackett_luce", "sigmoid"])
    with pytest.raises(ValueError, match="ld_alpha"):
        LossSettings(type="plackett_luce", ld_alpha=0.5)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    policy, ref = (torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    scores = torch.randint(0, 3, (4, 5), generator=g).double()  # with ties
    settings = LossSettings(type="plackett_luce", beta=BETA)
    assert torch.autograd.gradcheck(lambda a, b: ranking_loss(a, b, scores, settings).losses, (policy, ref))
