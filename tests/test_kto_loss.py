"""The KTO loss against a transcription of TRL 1.16's KTOTrainer._compute_loss, to 1e-6."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_dpo.losses import LOSSES, LossSettings, kto_kl, unpaired_loss


def trl_kto(policy, ref, policy_kl, ref_kl, labels, beta, desirable_weight, undesirable_weight):
    """TRL 1.16 KTOTrainer._compute_loss (single process), line by line: chosen and rejected examples
    selected by label, the KL point from the mismatched pairs, losses concatenated chosen first, nanmean."""
    kl = (policy_kl - ref_kl).mean().detach()
    kl = kl.mean().clamp(min=0)  # gather_for_metrics(kl).mean() on one process
    chosen_idx = torch.nonzero(labels, as_tuple=False).view(-1)
    rejected_idx = torch.nonzero(~labels, as_tuple=False).view(-1)
    chosen_logratios = policy.index_select(0, chosen_idx) - ref.index_select(0, chosen_idx)
    rejected_logratios = policy.index_select(0, rejected_idx) - ref.index_select(0, rejected_idx)
    chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses.nanmean(), kl, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def batch(seed, b=8):
    g = torch.Generator().manual_seed(seed)
    logps = [-30 * torch.rand(b, generator=g, dtype=torch.float32) for _ in range(4)]
    labels = torch.rand(b, generator=g) < 0.6
    return logps, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.33, 0.75)])
def test_matches_trl_formula(seed, weights):
    (policy, ref, policy_kl, ref_kl), labels = batch(seed)
    policy.requires_grad_()
    settings = LossSettings(type="kto", beta=0.1, desirable_weight=weights[0], undesirable_weight=weights[1])
    out = unpaired_loss(policy, ref, labels, kto_kl(policy_kl, ref_kl), settings)
    loss, kl, chosen, rejected = trl_kto(policy, ref, policy_kl, ref_kl, labels, 0.1, *weights)
    assert abs(out.losses.mean().item() - loss.item()) < 1e-6
    assert abs(out.kl.item() - kl.item()) < 1e-6
    assert torch.allclose(out.rewards[labels], chosen, atol=1e-6)
    assert torch.allclose(out.rewards[~labels], rejected, atol=1e-6)
    ours = torch.autograd.grad(out.losses.mean(), policy)[0]
    theirs = torch.autograd.grad(loss, policy)[0]
    assert torch.allclose(ours, theirs, atol=1e-7)


def test_kl_point_is_clamped_at_zero_and_carries_no_gradient():
    policy, ref = torch.zeros(4, requires_grad=True), torch.zeros(4)
    policy_kl = torch.tensor([-5.0, -5.0, -5.0, -5.0], requires_grad=True)
    out = unpaired_loss(
        policy, ref, torch.tensor([True, False, True, False]), kto_kl(policy_kl, None), LossSettings(type="kto")
    )
    assert out.kl.item() == 0.0
    assert torch.allclose(out.losses, torch.full((4,), 0.5))
    assert not out.kl.requires_grad


def test_registered_as_unpaired():
    assert LOSSES["kto"].layout == "unpaired" and LOSSES["apo_zero_unpaired"].layout == "unpaired"
    with pytest.raises(ValueError, match="must be positive"):
        LossSettings(type="kto", desirable_weight=0.0)


def test_apo_zero_unpaired_matches_trl_formula():
    (policy, ref, _, _), labels = batch(7)
    out = unpaired_loss(policy, ref, labels, torch.tensor(3.0), LossSettings(type="apo_zero_unpaired", beta=0.2))
    lr = policy - ref
    expected = torch.cat((1 - F.sigmoid(0.2 * lr[labels]), F.sigmoid(0.2 * lr[~labels]))).nanmean()
    assert abs(out.losses.mean().item() - expected.item()) < 1e-6


def test_matches_trl_kto_trainer_compute_loss():
    """TRL 1.16 keeps the KTO loss inside ``KTOTrainer._compute_loss``; call it on a stand-in trainer whose
    model returns chosen per-token log-probs (precomputed reference log-probs, one process)."""
    trl_kto_trainer = pytest.importorskip("trl.trainer.kto_trainer")
    import types
    from collections import defaultdict

    (policy, ref, policy_kl, ref_kl), labels = batch(11)
    b = policy.shape[0]
    policy.requires_grad_()
    ids, kl_ids = torch.zeros(b, 2, dtype=torch.long), torch.ones(b, 2, dtype=torch.long)

    class Model:
        training = True

        def __call__(self, input_ids, **kwargs):
            logps = (policy if input_ids is ids else policy_kl)[:, None]  # (B, T − 1): one completion token
            zeros = torch.zeros_like(logps)
            return types.SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros)

    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    trainer = types.SimpleNamespace(
        model=Model(),
        accelerator=accelerator,
        calculate_KL=True,
        precompute_ref_logps=True,
        loss_type="kto",
        beta=0.1,
        desirable_weight=1.33,
        undesirable_weight=0.75,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    trainer._compute_kl_logps = types.MethodType(trl_kto_trainer.KTOTrainer._compute_kl_logps, trainer)
    mask = torch.ones(b, 2, dtype=torch.long)
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "completion_mask": mask,
        "KL_input_ids": kl_ids,
        "KL_attention_mask": mask,
        "KL_completion_mask": mask,
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    theirs = trl_kto_trainer.KTOTrainer._compute_loss(trainer, trainer.model, inputs, return_outputs=False)
    settings = LossSettings(type="kto", beta=0.1, desirable_weight=1.33, undesirable_weight=0.75)
    ours = unpaired_loss(policy, ref, labels, kto_kl(policy_kl, ref_kl), settings)
    assert abs(ours.losses.mean().item() - theirs.item()) < 1e-6
    assert abs(ours.kl.item() - trainer._metrics["train"]["kl"][0]) < 1e-6
    assert abs(ours.rewards[labels].mean().item() - trainer._metrics["train"]["rewards/chosen"][0]) < 1e-6
    assert abs(ours.rewards[~labels].mean().item() - trainer._metrics["train"]["rewards/rejected"][0]) < 1e-6
    grad_ours = torch.autograd.grad(ours.losses.mean(), policy)[0]
    grad_theirs = torch.autograd.grad(theirs, policy)[0]
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-7)
