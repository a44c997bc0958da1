"""Preference losses as pure functions of sequence log-probs.

Every loss reads ``(B,)`` tensors -- the policy's and the reference's summed log-probs of the chosen and
rejected completions, and what the registry says it needs (completion lengths, the chosen-token NLL) --
and returns per-pair losses. No model, no batch dict: a loss is testable with a handful of tensors.

Notation (TRL's): the log-ratio of a completion is ``log πθ(y|x) − log πref(y|x)``; its *score* is the
log-ratio after the f-divergence transform (the identity for the default reverse KL); ``h`` is the chosen
score minus the rejected score. The implicit reward of a completion is ``β·(log πθ(y|x) − log πref(y|x))``,
detached; for reference-free losses the reference is 0. A loss that prefers by *mean* token log-prob
(SimPO, ORPO) declares ``rewards_per_token``, and its rewards are then β·(log-ratio / completion tokens), as
TRL's CPO and ORPO trainers log them: a pair the loss prefers then also counts as accurate.

Losses live in one registry, ``LOSSES``; a :class:`LossSpec` declares what a loss needs, so the module
never branches on a loss name. A user's loss plugs in with ``@register_loss("name")``, or as a
``loss_type`` that is an importable dotted path to such a function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dpo.settings import import_object

FDivergence = Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]


class PreferenceLossOutput(NamedTuple):
    """What :func:`preference_loss` returns; tensors are ``(B,)`` unless noted."""

    losses: Tensor
    """Per-pair loss, with gradient; ``losses.mean()`` is Σ wᵢ·mean(lossᵢ) over the combined loss types."""
    chosen_rewards: Tensor
    """β·(log πθ(yw|x) − log πref(yw|x)), detached; divided by |yw| under ``rewards_per_token``."""
    rejected_rewards: Tensor
    """β·(log πθ(yl|x) − log πref(yl|x)), detached; divided by |yl| under ``rewards_per_token``."""
    nll_loss: Tensor | None = None
    """Scalar mean NLL of the chosen tokens, detached, when a loss (``sft``, ``orpo``) or RPO used it."""
    aux_loss: Tensor | None = None
    """Scalar router load-balancing loss of a mixture-of-experts policy, detached, when it was added."""


@dataclass(frozen=True)
class LossSettings:
    """The preference loss and its hyperparameters: ``model.loss`` on the command line and in YAML.

    A new setting is a field here, read by the loss that uses it (``x.settings.<name>``); nothing else
    passes it along.
    """

    type: str | list[str] = "sigmoid"
    """A loss registered in ``LOSSES`` (``sigmoid`` is DPO), an importable dotted path to a loss function, or
    a list of them to combine."""
    weights: list[float] | None = None
    """One weight per loss type when combining (default all 1): Σ wᵢ·mean(lossᵢ), as in TRL."""
    beta: float = 0.1
    """β, the strength of the implicit KL penalty to the reference (the paper uses 0.1); τ for IPO, λ for
    ORPO."""
    label_smoothing: float = 0.0
    """ε: the assumed probability that a pair's label is flipped (cDPO, robust, EXO, AOT, SimPO)."""
    discopop_tau: float = 0.05
    """τ of DiscoPOP's log-ratio modulation."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin γ (absolute, as in the SimPO paper)."""
    ld_alpha: float | None = None
    """LD-DPO: weight of completion tokens past the shorter completion of each pair (1 = DPO)."""
    use_weighting: bool = False
    """WPO: weight each pair by the policy's per-token-normalised probability of both completions."""
    f_divergence_type: FDivergence = "reverse_kl"
    """f-DPO: the divergence to the reference (``reverse_kl`` is DPO)."""
    f_alpha_divergence_coef: float = 0.5
    """α of ``alpha_divergence``."""
    rpo_alpha: float | None = None
    """RPO (Pang et al. 2024, arXiv 2404.19733): add α·NLL of the chosen completion to every pair's loss."""
    router_aux_loss_coef: float | None = None
    """Mixture-of-experts policies: the weight of the router's load-balancing loss added to the loss (TRL's
    name). ``None``: the model config's own ``router_aux_loss_coef`` (none for a dense model)."""

    def __post_init__(self) -> None:
        _check_settings(self)

    @property
    def types(self) -> list[str]:
        return [self.type] if isinstance(self.type, str) else list(self.type)

    @property
    def specs(self) -> list[LossSpec]:
        return [get_loss_spec(name) for name in self.types]

    @property
    def uses_reference(self) -> bool:
        """A combination needs a reference when any of its losses does."""
        return any(spec.uses_reference for spec in self.specs)

    @property
    def uses_nll(self) -> bool:
        """Whether the chosen-token NLL is computed (``sft``, ``orpo``, RPO); it is then logged as ``nll_loss``."""
        return self.rpo_alpha is not None or any(spec.needs_nll for spec in self.specs)

    @property
    def rewards_per_token(self) -> bool:
        """Rewards (and so margins and accuracies) per completion token: when every loss combined prefers by
        mean log-prob; one summed loss in the mix keeps them summed."""
        return all(spec.rewards_per_token for spec in self.specs)

    @property
    def needs_lengths(self) -> bool:
        return self.uses_nll or self.rewards_per_token or any(spec.needs_lengths for spec in self.specs)


@dataclass(frozen=True)
class LossInputs:
    """Everything a registered loss function may read. Tensors are ``(B,)``."""

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    ref_chosen_logps: Tensor
    """Zeros for reference-free training."""
    ref_rejected_logps: Tensor
    chosen_logratios: Tensor
    """log πθ(yw|x) − log πref(yw|x)."""
    rejected_logratios: Tensor
    chosen_scores: Tensor
    """The chosen log-ratio after the f-divergence transform (equal to it for reverse KL)."""
    rejected_scores: Tensor
    settings: LossSettings
    """β and every other hyperparameter."""
    chosen_lengths: Tensor | None = None
    """Completion token counts (EOS included); set for losses with ``needs_lengths``."""
    rejected_lengths: Tensor | None = None
    nll: Tensor | None = None
    """Scalar: −Σ log πθ(chosen tokens) / number of chosen tokens over the batch; set for ``needs_nll``."""


LossFn = Callable[[LossInputs], Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and what it needs from the caller."""

    fn: LossFn
    uses_reference: bool = True
    """False for reference-free losses: ``reference_mode: auto`` then loads no reference model."""
    needs_lengths: bool = False
    """The loss reads ``chosen_lengths`` / ``rejected_lengths``."""
    needs_nll: bool = False
    """The loss reads ``nll``, the mean NLL of the chosen tokens (which is then logged as ``nll_loss``)."""
    supports_f_divergence: bool = False
    """The loss is written on scores, so a non-default ``f_divergence_type`` applies to it."""
    pairs_sorted: bool = False
    """The loss sorts log-ratios across the batch, so per-pair weights (WPO) cannot apply."""
    needs_label_smoothing: bool = False
    """The loss is undefined at ``label_smoothing = 0``."""
    rewards_per_token: bool = False
    """The loss prefers by mean token log-prob, so its rewards are β·(log-ratio / completion tokens)."""


LOSSES: dict[str, LossSpec] = {}


def register_loss(
    name: str,
    *,
    uses_reference: bool = True,
    needs_lengths: bool = False,
    needs_nll: bool = False,
    supports_f_divergence: bool = False,
    pairs_sorted: bool = False,
    needs_label_smoothing: bool = False,
    rewards_per_token: bool = False,
):
    """Decorator: add ``fn(inputs: LossInputs) -> (B,) losses`` to the registry under ``name``."""

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss type {name!r} is already registered")
        LOSSES[name] = LossSpec(
            fn,
            uses_reference=uses_reference,
            needs_lengths=needs_lengths,
            needs_nll=needs_nll,
            supports_f_divergence=supports_f_divergence,
            pairs_sorted=pairs_sorted,
            needs_label_smoothing=needs_label_smoothing,
            rewards_per_token=rewards_per_token,
        )
        fn.loss_spec = LOSSES[name]  # so that the function also works as a dotted-path loss_type
        return fn

    return add


def get_loss_spec(loss_type: str) -> LossSpec:
    """The spec of a registered name, or of an importable ``package.module.function`` path."""
    if loss_type in LOSSES:
        return LOSSES[loss_type]
    if "." in loss_type:
        try:
            obj = import_object(loss_type)
        except ValueError as e:
            raise ValueError(f"loss_type {loss_type!r} is not registered and cannot be imported: {e}") from None
        if isinstance(obj, LossSpec):
            return obj
        if callable(obj):
            return getattr(obj, "loss_spec", None) or LossSpec(obj)
        raise ValueError(f"loss_type {loss_type!r} imports {type(obj).__name__}, not a loss function")
    known = ", ".join(sorted(LOSSES))
    raise ValueError(f"unknown loss_type {loss_type!r}; registered loss types: {known} (or a dotted import path)")


# -- the f-divergence transform (Wang et al. 2023, "Beyond Reverse KL", arXiv 2309.16240) ---------------


def f_divergence_scores(logratios: Tensor, f_divergence_type: FDivergence, alpha: float = 0.5) -> Tensor:
    """f'(t) at t = πθ/πref, written in terms of the log-ratio u = log t, as in TRL.

    reverse KL: u (standard DPO); forward KL: 1 − e^(−u); Jensen–Shannon: log 2 + log σ(u);
    α-divergence: (e^((α−1)u) − 1)/(α − 1), which tends to u as α → 1.
    """
    if f_divergence_type == "reverse_kl":
        return logratios
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return math.log(2) + F.logsigmoid(logratios)
    if f_divergence_type == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return logratios
        # At least fp32, and the exponent clamped so that exp stays finite (TRL's bound).
        exponent = ((alpha - 1.0) * logratios).to(torch.promote_types(logratios.dtype, torch.float32))
        scores = (torch.exp(exponent.clamp(max=80.0)) - 1.0) / (alpha - 1.0)
        return scores.to(logratios.dtype)
    raise ValueError(f"f_divergence_type must be one of {get_args(FDivergence)}; got {f_divergence_type!r}")


# -- losses -----------------------------------------------------------------------------------------------


def _conservative_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the logistic loss with labels flipped with probability ε."""
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _per_token(x: LossInputs, chosen: Tensor, rejected: Tensor) -> tuple[Tensor, Tensor]:
    return chosen / x.chosen_lengths.clamp(min=1), rejected / x.rejected_lengths.clamp(min=1)


@register_loss("sigmoid", supports_f_divergence=True)
def sigmoid_loss(x: LossInputs) -> Tensor:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7): −log σ(β·h).

    With ``label_smoothing`` ε > 0 this is conservative DPO (cDPO, Mitchell 2023, "A note on DPO with
    noisy preferences"): −(1−ε)·log σ(β·h) − ε·log σ(−β·h).
    """
    return _conservative_logistic(x.settings.beta * (x.chosen_scores - x.rejected_scores), x.settings.label_smoothing)


@register_loss("hinge", supports_f_divergence=True)
def hinge_loss(x: LossInputs) -> Tensor:
    """Hinge loss on the margin, as in SLiC-HF (Zhao et al. 2023, arXiv 2305.10425): max(0, 1 − β·h)."""
    return torch.relu(1.0 - x.settings.beta * (x.chosen_scores - x.rejected_scores))


@register_loss("ipo", needs_lengths=True, supports_f_divergence=True)
def ipo_loss(x: LossInputs) -> Tensor:
    """IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17): (h̄ − 1/(2β))², β playing the role of τ.

    h̄ uses per-token averages of the scores (each divided by its completion's token count), TRL's
    length-normalised form, which the IPO authors confirmed matches their reported results.
    """
    chosen, rejected = _per_token(x, x.chosen_scores, x.rejected_scores)
    return (chosen - rejected - 1.0 / (2.0 * x.settings.beta)) ** 2


@register_loss("exo_pair", supports_f_divergence=True, needs_label_smoothing=True)
def exo_pair_loss(x: LossInputs) -> Tensor:
    """EXO (Ji et al. 2024, arXiv 2402.00856, Eq. 16): KL(p_θ ‖ p_label) over {chosen, rejected}, with
    p_θ = softmax of the β-scaled scores and p_label = (1−ε, ε), ε = ``label_smoothing`` (paper: 1e-3)."""
    logits = x.settings.beta * (x.chosen_scores - x.rejected_scores)
    eps = x.settings.label_smoothing
    return torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-eps)) + torch.sigmoid(-logits) * (
        F.logsigmoid(-logits) - math.log(eps)
    )


@register_loss("nca_pair")
def nca_pair_loss(x: LossInputs) -> Tensor:
    """NCA (Chen et al. 2024, "Noise Contrastive Alignment", arXiv 2402.05369), pairwise:
    −log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l), with r = β·log-ratio."""
    chosen, rejected = x.settings.beta * x.chosen_logratios, x.settings.beta * x.rejected_logratios
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


@register_loss("robust", supports_f_divergence=True)
def robust_loss(x: LossInputs) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409, Eq. 8): an unbiased loss under label flips with
    rate ε = ``label_smoothing`` < ½: ((1−ε)·(−log σ(β·h)) − ε·(−log σ(−β·h))) / (1 − 2ε)."""
    eps = x.settings.label_smoothing
    logits = x.settings.beta * (x.chosen_scores - x.rejected_scores)
    return (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)


@register_loss("bco_pair")
def bco_pair_loss(x: LossInputs) -> Tensor:
    """BCO (Jung et al. 2024, "Binary Classifier Optimization", arXiv 2404.04656), on pairs:
    −log σ(r_w) − log σ(−r_l), with r = β·log-ratio (TRL's form, without the reward shift δ)."""
    return -F.logsigmoid(x.settings.beta * x.chosen_logratios) - F.logsigmoid(-x.settings.beta * x.rejected_logratios)


@register_loss("sppo_hard")
def sppo_hard_loss(x: LossInputs) -> Tensor:
    """SPPO (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7) with hard win probabilities (1 for the winner, 0
    for the loser): (log-ratio_w − 1/(2β))² + (log-ratio_l + 1/(2β))²."""
    return (x.chosen_logratios - 0.5 / x.settings.beta) ** 2 + (x.rejected_logratios + 0.5 / x.settings.beta) ** 2


@register_loss("aot", pairs_sorted=True)
def aot_loss(x: LossInputs) -> Tensor:
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment via Optimal Transport",
    arXiv 2406.05882): the cDPO logistic loss on sorted(πθ margins) − sorted(πref margins) across the batch,
    which makes the policy's margin distribution dominate the reference's."""
    policy = torch.sort(x.policy_chosen_logps - x.policy_rejected_logps, dim=0).values
    reference = torch.sort(x.ref_chosen_logps - x.ref_rejected_logps, dim=0).values
    return _conservative_logistic(x.settings.beta * (policy - reference), x.settings.label_smoothing)


@register_loss("aot_unpaired", pairs_sorted=True)
def aot_unpaired_loss(x: LossInputs) -> Tensor:
    """AOT, unpaired (Melnyk et al. 2024, arXiv 2406.05882): the cDPO logistic loss on
    sorted(chosen log-ratios) − sorted(rejected log-ratios) across the batch."""
    chosen = torch.sort(x.chosen_logratios, dim=0).values
    rejected = torch.sort(x.rejected_logratios, dim=0).values
    return _conservative_logistic(x.settings.beta * (chosen - rejected), x.settings.label_smoothing)


@register_loss("apo_zero")
def apo_zero_loss(x: LossInputs) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", arXiv 2408.06266, Eq. 7):
    (1 − σ(r_w)) + σ(r_l): raise the chosen likelihood, lower the rejected; for chosen outputs better than
    the model's own."""
    return (1 - torch.sigmoid(x.settings.beta * x.chosen_logratios)) + torch.sigmoid(
        x.settings.beta * x.rejected_logratios
    )


@register_loss("apo_down")
def apo_down_loss(x: LossInputs) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 8): σ(r_w) + (1 − σ(r_w − r_l)): lower
    both likelihoods, the rejected more; for chosen outputs worse than the model's own."""
    chosen = x.settings.beta * x.chosen_logratios
    return torch.sigmoid(chosen) + (1 - torch.sigmoid(chosen - x.settings.beta * x.rejected_logratios))


@register_loss("discopop", supports_f_divergence=True)
def discopop_loss(x: LossInputs) -> Tensor:
    """DiscoPOP (Chris Lu et al. 2024, arXiv 2406.08414, Eq. 5), the log-ratio modulated loss: with
    z = β·h and m = σ(z/τ), (1 − m)·(−log σ(z)) + m·e^(−z); τ = ``discopop_tau`` (paper: 0.05)."""
    logits = x.settings.beta * (x.chosen_scores - x.rejected_scores)
    modulation = torch.sigmoid(logits / x.settings.discopop_tau)
    return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation


@register_loss("sft", needs_nll=True, supports_f_divergence=True)
def sft_loss(x: LossInputs) -> Tensor:
    """Supervised fine-tuning on the chosen completions: their mean token NLL over the batch (as in TRL,
    the batch value repeated per pair). Combined with DPO losses it is the NLL term of MPO (Wang et al.
    2024, arXiv 2411.10442: ``[sigmoid, bco_pair, sft]`` with weights ``[0.8, 0.2, 1.0]``)."""
    return x.nll.expand_as(x.chosen_logratios)


@register_loss("sigmoid_norm", needs_lengths=True, supports_f_divergence=True)
def sigmoid_norm_loss(x: LossInputs) -> Tensor:
    """Length-normalised DPO (as in TRL; cf. the per-token rewards of SimPO, Meng et al. 2024,
    arXiv 2405.14734): −log σ(β·(s_w/|y_w| − s_l/|y_l|)), with s the scores."""
    chosen, rejected = _per_token(x, x.chosen_scores, x.rejected_scores)
    return -F.logsigmoid(x.settings.beta * (chosen - rejected))


@register_loss("simpo", uses_reference=False, needs_lengths=True, rewards_per_token=True)
def simpo_loss(x: LossInputs) -> Tensor:
    """SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6), reference-free:
    −log σ(β/|y_w|·log πθ(y_w|x) − β/|y_l|·log πθ(y_l|x) − γ), γ = ``simpo_gamma`` (absolute, not γ/β);
    with ``label_smoothing`` the conservative form, as in TRL's CPOTrainer."""
    chosen, rejected = _per_token(x, x.policy_chosen_logps, x.policy_rejected_logps)
    return _conservative_logistic(
        x.settings.beta * (chosen - rejected) - x.settings.simpo_gamma, x.settings.label_smoothing
    )


@register_loss("orpo", uses_reference=False, needs_lengths=True, needs_nll=True, rewards_per_token=True)
def orpo_loss(x: LossInputs) -> Tensor:
    """ORPO (Hong et al. 2024, arXiv 2403.07691, Eqs. 6-7), reference-free: L_SFT − λ·log σ(log odds_w −
    log odds_l), odds(y) = P/(1 − P) with P = exp(mean token log-prob), λ = ``beta`` (TRL's ORPOTrainer)."""
    chosen, rejected = _per_token(x, x.policy_chosen_logps, x.policy_rejected_logps)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    return x.nll - x.settings.beta * F.logsigmoid(log_odds)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, stable at both ends (Mächler 2012), with a finite gradient up to x → 0⁻.

    Autograd differentiates both branches of a ``where``, and a branch evaluated outside its domain puts
    inf · 0 = NaN into the gradient (at x = −1e-9 in fp32, eˣ rounds to 1 and log1p(−1) = −inf). So each
    branch gets an input inside its own domain. x is kept below 0: a mean log-prob of exactly 0 (every
    token certain), or rounding just above it, has no finite log(1 − eˣ).
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near_zero = x > -math.log(2)
    small = torch.where(near_zero, x, -math.log(2))  # (−log 2, 0): 1 − eˣ = −expm1(x), exact for tiny x
    large = torch.where(near_zero, -math.log(2), x)  # (−∞, −log 2]: 1 − eˣ ≥ ½
    return torch.where(near_zero, torch.log(-torch.expm1(small)), torch.log1p(-torch.exp(large)))


# -- the combined loss -----------------------------------------------------------------------------------


def _check_settings(settings: LossSettings) -> None:
    """Refuse combinations that are undefined, at construction (so a bad config fails before any model loads)."""
    names, specs = settings.types, settings.specs
    if settings.weights is not None and len(settings.weights) != len(names):
        raise ValueError(f"loss weights has {len(settings.weights)} entries for {len(names)} loss types {names}")
    if settings.f_divergence_type not in get_args(FDivergence):
        raise ValueError(
            f"f_divergence_type must be one of {get_args(FDivergence)}, got {settings.f_divergence_type!r}"
        )
    if not 0.0 <= settings.label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {settings.label_smoothing}")
    if settings.ld_alpha is not None and not 0.0 <= settings.ld_alpha <= 1.0:
        raise ValueError(f"ld_alpha must lie in [0, 1], got {settings.ld_alpha}")
    for name, spec in zip(names, specs):
        if spec.needs_label_smoothing and settings.label_smoothing == 0.0:
            raise ValueError(f"loss_type {name!r} needs label_smoothing > 0 (the EXO paper recommends 1e-3)")
        if settings.f_divergence_type != "reverse_kl" and not spec.supports_f_divergence:
            raise ValueError(
                f"f_divergence_type={settings.f_divergence_type!r} does not apply to loss_type {name!r}: the f-DPO "
                "reparameterisation only cancels in the chosen-minus-rejected score of losses written on scores"
            )
        if settings.use_weighting and spec.pairs_sorted:
            raise ValueError(f"per-pair weights (use_weighting) cannot apply to {name!r}, which sorts pairs")


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    settings: LossSettings = LossSettings(),
    *,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    chosen_nll_logps: Tensor | None = None,
    wpo_log_weights: tuple[Tensor, Tensor] | None = None,
) -> PreferenceLossOutput:
    """Per-pair preference losses and implicit rewards.

    Args:
        policy_chosen_logps: (B,) summed log πθ over each chosen completion's tokens.
        policy_rejected_logps: (B,) same for the rejected completions.
        ref_chosen_logps: (B,) the reference's, or ``None`` for reference-free training (treated as 0).
        ref_rejected_logps: (B,) likewise.
        settings: The loss types, their weights, β and the other hyperparameters.
        chosen_lengths: (B,) completion token counts; needed by length-normalised losses, NLL and RPO.
        rejected_lengths: (B,) likewise.
        chosen_nll_logps: (B,) the chosen log-prob sums the NLL uses, when they differ from
            ``policy_chosen_logps`` (under LD-DPO's down-weighting); default ``policy_chosen_logps``.
        wpo_log_weights: (B,) chosen and (B,) rejected mean aligned log-probs (detached), for WPO
            (``settings.use_weighting``).
    """
    specs = settings.specs
    weights = [1.0] * len(specs) if settings.weights is None else list(settings.weights)
    if settings.needs_lengths and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(
            f"loss_type {settings.types} normalises by completion length or uses the chosen NLL: pass "
            "chosen_lengths= and rejected_lengths= (the number of completion tokens of each sequence)"
        )
    pair_weights = None
    if settings.use_weighting:
        if wpo_log_weights is None:
            raise ValueError("use_weighting (WPO) needs wpo_log_weights= (completion_logps(..., with_wpo=True))")
        # WPO (Zhou et al. 2024, arXiv 2406.11827, Eq. 2): w = exp(mean aligned log p) of both completions.
        pair_weights = torch.exp(wpo_log_weights[0] + wpo_log_weights[1])
    if ref_chosen_logps is None or ref_rejected_logps is None:
        ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
        ref_rejected_logps = torch.zeros_like(policy_rejected_logps)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    nll = None
    if settings.uses_nll:
        nll_logps = policy_chosen_logps if chosen_nll_logps is None else chosen_nll_logps
        nll = -nll_logps.sum() / chosen_lengths.sum().clamp(min=1)
    f_type, f_alpha = settings.f_divergence_type, settings.f_alpha_divergence_coef
    inputs = LossInputs(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        chosen_logratios=chosen_logratios,
        rejected_logratios=rejected_logratios,
        chosen_scores=f_divergence_scores(chosen_logratios, f_type, f_alpha),
        rejected_scores=f_divergence_scores(rejected_logratios, f_type, f_alpha),
        settings=settings,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        nll=nll,
    )
    losses = torch.zeros_like(chosen_logratios)
    for spec, weight in zip(specs, weights):
        per_pair = spec.fn(inputs)
        if pair_weights is not None:
            per_pair = per_pair * pair_weights
        losses = losses + weight * per_pair
    if settings.rpo_alpha is not None:
        losses = losses + settings.rpo_alpha * nll
    chosen_rewards, rejected_rewards = chosen_logratios.detach(), rejected_logratios.detach()
    if settings.rewards_per_token:
        chosen_rewards, rejected_rewards = _per_token(inputs, chosen_rewards, rejected_rewards)
    return PreferenceLossOutput(
        losses=losses,
        chosen_rewards=settings.beta * chosen_rewards,
        rejected_rewards=settings.beta * rejected_rewards,
        nll_loss=nll.detach() if nll is not None else None,
    )
