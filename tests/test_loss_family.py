"""Every registered loss against an independent transcription of its paper's formula (float64 values and
gradients), the limiting cases that tie losses together, and a short fit from YAML per loss type."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from lightning_dpo.losses import LOSSES, LossSettings, get_loss_spec, preference_loss

B = 6
BETA = 0.3
EPS = 0.1


def sig(z):
    return 1.0 / (1.0 + torch.exp(-z))


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = [(-20 * torch.rand(B, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(4)]
    lengths = [torch.randint(1, 25, (B,), generator=g) for _ in range(2)]
    return logps, lengths


# Transcriptions written from the papers, in their own notation: pw/pl policy log-probs, rw/rl reference
# log-probs, nw/nl completion lengths. Each returns per-pair losses.
def ref_sigmoid(pw, pl, rw, rl, nw, nl):  # DPO Eq. 7 with cDPO's flipped-label mixture
    p = sig(BETA * ((pw - rw) - (pl - rl)))
    return -(1 - EPS) * torch.log(p) - EPS * torch.log(1 - p)


def ref_hinge(pw, pl, rw, rl, nw, nl):  # SLiC: max(0, δ − β·margin), δ = 1
    return torch.clamp(1 - BETA * ((pw - rw) - (pl - rl)), min=0)


def ref_ipo(pw, pl, rw, rl, nw, nl):  # IPO Eq. 17 on per-token log-ratios, τ = β
    h = (pw - rw) / nw - (pl - rl) / nl
    return (h - 1 / (2 * BETA)) ** 2


def ref_exo_pair(pw, pl, rw, rl, nw, nl):  # EXO: KL(p_θ ‖ (1−ε, ε)) over the two completions
    zw, zl = BETA * (pw - rw), BETA * (pl - rl)
    qw = torch.exp(zw) / (torch.exp(zw) + torch.exp(zl))
    ql = 1 - qw
    return qw * torch.log(qw / (1 - EPS)) + ql * torch.log(ql / EPS)


def ref_nca_pair(pw, pl, rw, rl, nw, nl):  # NCA with K = 2: −log σ(r_w) − ½ Σ_{y∈{w,l}} log σ(−r_y)
    r_w, r_l = BETA * (pw - rw), BETA * (pl - rl)
    return -torch.log(sig(r_w)) - 0.5 * (torch.log(1 - sig(r_w)) + torch.log(1 - sig(r_l)))


def ref_robust(pw, pl, rw, rl, nw, nl):  # rDPO Eq. 8: ((1−ε) L(h) − ε L(−h)) / (1 − 2ε), L = −log σ(β·)
    h = (pw - rw) - (pl - rl)
    return ((1 - EPS) * -torch.log(sig(BETA * h)) - EPS * -torch.log(sig(-BETA * h))) / (1 - 2 * EPS)


def ref_bco_pair(pw, pl, rw, rl, nw, nl):  # BCO: chosen labelled 1, rejected labelled 0
    return -torch.log(sig(BETA * (pw - rw))) - torch.log(1 - sig(BETA * (pl - rl)))


def ref_sppo_hard(pw, pl, rw, rl, nw, nl):  # SPPO Eq. 4.7: (log πθ/πt − η(P − ½))², η = 1/β, P ∈ {1, 0}
    eta = 1 / BETA
    return ((pw - rw) - eta * (1 - 0.5)) ** 2 + ((pl - rl) - eta * (0 - 0.5)) ** 2


def _sorted(values):
    return torch.stack(sorted(values.unbind(0), key=lambda v: v.item()))


def ref_aot(pw, pl, rw, rl, nw, nl):  # AOT paired: sorted policy margins vs sorted reference margins
    z = BETA * (_sorted(pw - pl) - _sorted(rw - rl))
    return -(1 - EPS) * torch.log(sig(z)) - EPS * torch.log(sig(-z))


def ref_aot_unpaired(pw, pl, rw, rl, nw, nl):  # AOT unpaired: sorted chosen vs sorted rejected log-ratios
    z = BETA * (_sorted(pw - rw) - _sorted(pl - rl))
    return -(1 - EPS) * torch.log(sig(z)) - EPS * torch.log(sig(-z))


def ref_apo_zero(pw, pl, rw, rl, nw, nl):  # APO Eq. 7, −σ(r_w) + σ(r_l), shifted by TRL's constant 1
    return 1 - sig(BETA * (pw - rw)) + sig(BETA * (pl - rl))


def ref_apo_down(pw, pl, rw, rl, nw, nl):  # APO Eq. 8, σ(r_w) − σ(r_w − r_l), shifted by TRL's constant 1
    r_w, r_l = BETA * (pw - rw), BETA * (pl - rl)
    return 1 + sig(r_w) - sig(r_w - r_l)


def ref_discopop(pw, pl, rw, rl, nw, nl):  # DiscoPOP Eq. 5 ("log-ratio modulated"), τ = 0.05
    z = BETA * ((pw - rw) - (pl - rl))
    m = sig(z / 0.05)
    return (1 - m) * torch.log(1 + torch.exp(-z)) + m * torch.exp(-z)


def ref_sft(pw, pl, rw, rl, nw, nl):  # token-mean NLL of the chosen completions over the batch
    return (-pw.sum() / nw.sum()).expand(B)


def ref_sigmoid_norm(pw, pl, rw, rl, nw, nl):
    return -torch.log(sig(BETA * ((pw - rw) / nw - (pl - rl) / nl)))


def ref_simpo(pw, pl, rw, rl, nw, nl):  # SimPO Eq. 6 (reference-free), γ = 0.5, with label smoothing
    z = BETA / nw * pw - BETA / nl * pl - 0.5
    return -(1 - EPS) * torch.log(sig(z)) - EPS * torch.log(sig(-z))


def ref_orpo(pw, pl, rw, rl, nw, nl):  # ORPO Eqs. 6-7 with P = exp(mean token log-prob), λ = β
    odds_w = torch.exp(pw / nw) / (1 - torch.exp(pw / nw))
    odds_l = torch.exp(pl / nl) / (1 - torch.exp(pl / nl))
    ratio = odds_w / odds_l
    return -pw.sum() / nw.sum() - BETA * torch.log(ratio / (1 + ratio))


TRANSCRIPTIONS = {name[len("ref_") :]: fn for name, fn in globals().items() if name.startswith("ref_")}


def test_every_registered_loss_has_a_transcription():
    assert set(TRANSCRIPTIONS) == set(LOSSES)


@pytest.mark.parametrize("loss_type", sorted(TRANSCRIPTIONS))
def test_values_and_gradients_match_the_paper(loss_type):
    (pw, pl, rw, rl), (nw, nl) = inputs()
    reference_free = not get_loss_spec(loss_type).uses_reference
    out = preference_loss(
        pw,
        pl,
        None if reference_free else rw,
        None if reference_free else rl,
        LossSettings(type=loss_type, beta=BETA, label_smoothing=EPS),
        chosen_lengths=nw,
        rejected_lengths=nl,
    )
    zeros = torch.zeros(B, dtype=torch.float64)
    expected = TRANSCRIPTIONS[loss_type](
        pw, pl, zeros if reference_free else rw, zeros if reference_free else rl, nw.double(), nl.double()
    )
    assert torch.allclose(out.losses, expected, rtol=1e-10, atol=1e-12)
    ours = torch.autograd.grad(out.losses.sum(), (pw, pl, rw, rl), allow_unused=True)
    theirs = torch.autograd.grad(expected.sum(), (pw, pl, rw, rl), allow_unused=True)
    for a, b in zip(ours, theirs):
        a = torch.zeros(B, dtype=torch.float64) if a is None else a
        b = torch.zeros(B, dtype=torch.float64) if b is None else b
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    # Rewards: β × summed log-ratio, detached; per completion token for losses that prefer by the mean.
    per_token = nw.double() if get_loss_spec(loss_type).rewards_per_token else 1.0
    assert torch.allclose(out.chosen_rewards, BETA * (pw - (0 if reference_free else rw)).detach() / per_token)
    assert not out.chosen_rewards.requires_grad


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
def test_gradcheck(loss_type):
    (pw, pl, rw, rl), (nw, nl) = inputs(seed=1)
    if loss_type == "orpo":  # keep mean log-probs away from 0, where odds blow up
        pw, pl = [(t.detach() - 5).requires_grad_() for t in (pw, pl)]

    def f(a, b, c, d):
        settings = LossSettings(type=loss_type, beta=BETA, label_smoothing=EPS)
        return preference_loss(a, b, c, d, settings, chosen_lengths=nw, rejected_lengths=nl).losses

    assert torch.autograd.gradcheck(f, (pw, pl, rw, rl))


# -- limiting cases ---------------------------------------------------------------------------------------


def loss(loss_type="sigmoid", logps=None, wpo_log_weights=None, **settings):
    (pw, pl, rw, rl), (nw, nl) = logps or inputs()
    settings = LossSettings(type=loss_type, **{"beta": BETA, **settings})
    return preference_loss(
        pw, pl, rw, rl, settings, chosen_lengths=nw, rejected_lengths=nl, wpo_log_weights=wpo_log_weights
    ).losses


def test_robust_without_noise_is_dpo():
    assert torch.allclose(loss("robust", label_smoothing=0.0), loss("sigmoid"))


def test_sorted_losses_on_one_pair_are_dpo():
    (pw, pl, rw, rl), (nw, nl) = inputs()
    one = ([t[:1] for t in (pw, pl, rw, rl)], (nw[:1], nl[:1]))
    assert torch.allclose(loss("aot", one), loss("sigmoid", one))
    assert torch.allclose(loss("aot_unpaired", one), loss("sigmoid", one))


def test_length_normalised_losses_with_unit_lengths():
    (pw, pl, rw, rl), _ = inputs()
    ones = torch.ones(B, dtype=torch.long)
    unit = ((pw, pl, rw, rl), (ones, ones))
    h = (pw - rw) - (pl - rl)
    assert torch.allclose(loss("sigmoid_norm", unit), loss("sigmoid", unit))
    assert torch.allclose(loss("ipo", unit), (h - 1 / (2 * BETA)) ** 2)
    free = preference_loss(pw, pl, None, None, LossSettings(beta=BETA)).losses
    simpo_settings = LossSettings(type="simpo", beta=BETA, simpo_gamma=0.0)
    simpo = preference_loss(pw, pl, None, None, simpo_settings, chosen_lengths=ones, rejected_lengths=ones).losses
    assert torch.allclose(simpo, free)


def test_discopop_tends_to_its_two_components():
    (pw, pl, rw, rl), lengths = inputs()
    h = ((pw - rw) - (pl - rl)).detach()
    sharp = loss("discopop", ((pw, pl, rw, rl), lengths), discopop_tau=1e-6)
    expected = torch.where(h > 0, torch.exp(-BETA * h), -torch.nn.functional.logsigmoid(BETA * h))
    assert torch.allclose(sharp, expected)


def test_f_divergences():
    (pw, pl, rw, rl), lengths = inputs()
    pw, pl = [(r.detach() + torch.linspace(-2, 2, B, dtype=torch.float64)).requires_grad_() for r in (rw, rl)]
    u_w, u_l = (pw - rw).detach(), (pl - rl).detach()
    t_w, t_l = torch.exp(u_w), torch.exp(u_l)  # the policy / reference probability ratio

    def dpo_on(score_w, score_l):
        return -torch.log(sig(BETA * (score_w - score_l)))

    logps = ((pw, pl, rw, rl), lengths)
    assert torch.allclose(loss(logps=logps, f_divergence_type="forward_kl"), dpo_on(1 - 1 / t_w, 1 - 1 / t_l))
    js = dpo_on(torch.log(2 * t_w / (1 + t_w)), torch.log(2 * t_l / (1 + t_l)))
    assert torch.allclose(loss(logps=logps, f_divergence_type="js_divergence"), js)
    alpha = dpo_on((t_w**-0.5 - 1) / -0.5, (t_l**-0.5 - 1) / -0.5)
    assert torch.allclose(loss(logps=logps, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5), alpha)
    assert torch.allclose(
        loss(logps=logps, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0), loss(logps=logps)
    )


def test_f_divergence_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="does not apply to loss_type 'bco_pair'"):
        loss("bco_pair", f_divergence_type="forward_kl")


def test_exo_needs_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing > 0"):
        loss("exo_pair")


def test_rpo_adds_the_chosen_nll():
    (pw, pl, rw, rl), (nw, nl) = inputs()
    nll = -pw.sum() / nw.sum()
    out = preference_loss(
        pw, pl, rw, rl, LossSettings(beta=BETA, rpo_alpha=0.7), chosen_lengths=nw, rejected_lengths=nl
    )
    assert torch.allclose(out.losses, loss("sigmoid") + 0.7 * nll)
    assert torch.allclose(out.nll_loss, nll.detach())
    assert torch.allclose(loss("sigmoid", rpo_alpha=0.0), loss("sigmoid"))


def test_mpo_combination_is_the_weighted_sum_of_means():
    combined = loss(["sigmoid", "bco_pair", "sft"], weights=[0.8, 0.2, 1.0]).mean()
    expected = 0.8 * loss("sigmoid").mean() + 0.2 * loss("bco_pair").mean() + 1.0 * loss("sft").mean()
    assert torch.allclose(combined, expected)
    with pytest.raises(ValueError, match="2 entries for 3 loss types"):
        loss(["sigmoid", "bco_pair", "sft"], weights=[1.0, 1.0])


def test_pair_weights_scale_each_pair_and_refuse_sorted_losses():
    w = torch.linspace(0.1, 1.0, B, dtype=torch.float64)  # WPO: w = exp(chosen + rejected log-weights)
    log_weights = (torch.log(w) / 2, torch.log(w) / 2)
    assert torch.allclose(loss("hinge", use_weighting=True, wpo_log_weights=log_weights), w * loss("hinge"))
    with pytest.raises(ValueError, match="sorts pairs"):
        loss("aot", use_weighting=True, wpo_log_weights=log_weights)


def test_dotted_path_loss_type():
    assert get_loss_spec("lightning_dpo.losses.hinge_loss") is LOSSES["hinge"]
    assert torch.allclose(loss("lightning_dpo.losses.hinge_loss"), loss("hinge"))
    with pytest.raises(ValueError, match="cannot be imported"):
        get_loss_spec("no_such_package.some_loss")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_orpo_is_finite_for_near_certain_completions(dtype):
    # Mean log-probs near 0: −1e-9 (e^x rounds to 1 in fp32), exactly 0, and a rounding error above 0.
    pw = torch.tensor([-1e-9, -50.0, 0.0, 1e-7], dtype=dtype, requires_grad=True)
    pl = torch.tensor([-3.0, -1e-12, -1e-9, -2.0], dtype=dtype, requires_grad=True)
    ones = torch.ones(4, dtype=torch.long)
    out = preference_loss(pw, pl, None, None, LossSettings(type="orpo"), chosen_lengths=ones, rejected_lengths=ones)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(pw.grad).all() and torch.isfinite(pl.grad).all()


def test_log1mexp_is_exact_with_a_finite_gradient_up_to_zero():
    from lightning_dpo.losses import _log1mexp

    x = torch.tensor([-1e-9, -1e-4, -0.69, -0.7, -5.0, -80.0], requires_grad=True)  # fp32
    y = _log1mexp(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    exact = torch.log(-torch.expm1(x.detach().double()))
    torch.testing.assert_close(y.double(), exact, rtol=1e-6, atol=1e-30)
    exact_grad = torch.exp(x.detach().double()) / torch.expm1(x.detach().double())  # d/dx log(1 − eˣ)
    torch.testing.assert_close(grad.double(), exact_grad, rtol=1e-5, atol=1e-30)


def test_reference_free_rewards_agree_with_the_loss_s_preference():
    """Chosen −20 over 40 tokens vs rejected −10 over 10: SimPO and ORPO prefer the chosen (mean −0.5 > −1),
    so its reward is higher and the pair counts as accurate; DPO-style summed rewards would say the opposite."""
    pw, pl = torch.tensor([-20.0]), torch.tensor([-10.0])
    lengths = dict(chosen_lengths=torch.tensor([40]), rejected_lengths=torch.tensor([10]))
    for name in ("simpo", "orpo"):
        out = preference_loss(pw, pl, None, None, LossSettings(type=name, beta=0.5), **lengths)
        assert out.chosen_rewards.item() == pytest.approx(0.5 * -0.5) and out.rejected_rewards.item() == -0.5
    summed = preference_loss(pw, pl, None, None, LossSettings(type=["simpo", "sigmoid"]), **lengths)
    assert summed.chosen_rewards.item() == pytest.approx(0.1 * -20)  # a summed loss in the mix keeps sums


# -- a short fit from YAML per loss type --------------------------------------------------------------------

FIT_CASES = {name: {"type": name} for name in sorted(LOSSES)}
FIT_CASES["exo_pair"]["label_smoothing"] = 1e-3
FIT_CASES |= {
    "mpo": {"type": ["sigmoid", "bco_pair", "sft"], "weights": [0.8, 0.2, 1.0]},
    "rpo": {"type": "sigmoid", "rpo_alpha": 1.0},
    "wpo+ld": {"type": "sigmoid", "use_weighting": True, "ld_alpha": 0.5},
    "f-dpo": {"type": "sigmoid", "f_divergence_type": "js_divergence"},
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_short_fit_from_yaml_has_no_nan(case, tmp_path, tiny_model_dir, tiny_data_dir):
    from lightning_dpo.cli import main

    config = {
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "limit_val_batches": 1,
            "val_check_interval": 2,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
            "callbacks": [{"class_path": "pytest_nan_guard.NanGuard"}],
        },
        "model": {
            "model_name_or_path": str(tiny_model_dir),
            "loss": FIT_CASES[case],
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
        },
        "data": {"dataset": str(tiny_data_dir), "batch_size": 3, "max_length": 64, "max_prompt_length": 32},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    assert NanGuard.seen and all(math.isfinite(v) for v in NanGuard.seen)
    if "sft" in str(FIT_CASES[case]) or "orpo" in str(FIT_CASES[case]) or "rpo_alpha" in FIT_CASES[case]:
        assert "val/nll_loss" in NanGuard.metrics


class NanGuard(__import__("lightning_dpo.namespace").namespace.pl.Callback):
    """Records every training loss and the final callback metrics, from the config's callback list."""

    seen: list[float] = []
    metrics: dict = {}

    def __init__(self):
        NanGuard.seen, NanGuard.metrics = [], {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        NanGuard.seen.append(outputs["loss"].item())

    def on_fit_end(self, trainer, pl_module):
        NanGuard.metrics = dict(trainer.callback_metrics)
        assert all(torch.isfinite(v).all() for v in NanGuard.metrics.values())


@pytest.fixture(autouse=True)
def _nan_guard_importable(monkeypatch):
    import sys
    import types

    module = types.ModuleType("pytest_nan_guard")
    module.NanGuard = NanGuard
    monkeypatch.setitem(sys.modules, "pytest_nan_guard", module)
