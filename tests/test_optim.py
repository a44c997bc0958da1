"""The optimizers: PaperRMSprop's CPU step is torch's RMSprop bit for bit; the step in backward is the
normal step bit for bit, resumes from the same state, and refuses what it cannot honour. No timing here
(benchmarks/bench_optimizers.py measures speed)."""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_dpo import optim
from lightning_dpo.optim import LinearWarmup, OptimizerInBackward, PaperRMSprop, check_in_backward

SHAPES = [(7,), (optim.BLOCK,), (2 * optim.BLOCK + 5,), (151, 896), (3, 5, 7), (0,)]


def run(optimizer_cls, tensors, steps=3, **kwargs):
    params = [t.detach().clone().requires_grad_() for t in tensors]
    optimizer = optimizer_cls(params, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("threads", [1, 2])
def test_paper_rmsprop_is_torch_rmsprop_bit_for_bit(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        tensors = [torch.randn(shape, generator=g) for shape in SHAPES]
        ours, ours_opt = run(PaperRMSprop, tensors, lr=1e-3)
        for foreach in (False, True):
            theirs, theirs_opt = run(torch.optim.RMSprop, tensors, lr=1e-3, foreach=foreach)
            for a, b in zip(ours, theirs):
                assert torch.equal(a, b)
            for a, b in zip(ours, theirs):
                assert torch.equal(ours_opt.state[a]["square_avg"], theirs_opt.state[b]["square_avg"])
        assert ours_opt.state_dict()["state"][0]["step"] == 3
        assert ours_opt.state_dict()["state"][0]["step"].dtype == theirs_opt.state_dict()["state"][0]["step"].dtype
    finally:
        torch.set_num_threads(previous)


def test_paper_rmsprop_takes_the_blocked_step_on_cpu_and_torchs_otherwise(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.optim.RMSprop, "step", lambda self, closure=None: calls.append("torch"))
    blocked = optim._blocked_rmsprop_
    monkeypatch.setattr(optim, "_blocked_rmsprop_", lambda *a: calls.append("blocked") or blocked(*a))
    tensors = [torch.randn(5)]
    run(PaperRMSprop, tensors, steps=1)
    assert calls == ["blocked"]
    calls.clear()
    run(PaperRMSprop, tensors, steps=1, momentum=0.9)  # not the plain update: torch's
    run(PaperRMSprop, tensors, steps=1, foreach=True)  # asked for: torch's
    assert calls == ["torch", "torch"]


def test_paper_rmsprop_other_settings_are_torchs():
    tensors = [torch.randn(10), torch.randn(4, 3)]
    for kwargs in ({"momentum": 0.9}, {"centered": True}, {"weight_decay": 0.1}):
        ours, _ = run(PaperRMSprop, tensors, lr=1e-2, **kwargs)
        theirs, _ = run(torch.optim.RMSprop, tensors, lr=1e-2, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_paper_rmsprop_non_contiguous_parameter():
    base = torch.randn(6, 4)
    ours, _ = run(PaperRMSprop, [base], lr=1e-2)
    theirs, _ = run(torch.optim.RMSprop, [base], lr=1e-2)
    assert torch.equal(ours[0], theirs[0])
    p = torch.randn(4, 6).t().requires_grad_()  # a transposed leaf
    q = p.detach().clone().requires_grad_()
    grad = torch.randn(6, 4)
    a, b = PaperRMSprop([p], lr=1e-2), torch.optim.RMSprop([q], lr=1e-2)
    p.grad, q.grad = grad.t().contiguous().t(), grad.clone()
    a.step()
    b.step()
    assert torch.equal(p, q)


# -- the step in backward --------------------------------------------------------------------------------


def tiny(seed=0):
    torch.manual_seed(seed)
    embedding = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = embedding.weight  # tied, as in most causal LMs
    return nn.Sequential(embedding, nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16), head)


def loss_of(model, x):
    return torch.log_softmax(model(x), -1)[..., 3].mean()


FACTORIES = {
    "adamw": partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    "adamw_fused": partial(torch.optim.AdamW, lr=1e-2, fused=True),
    "rmsprop": partial(PaperRMSprop, lr=1e-2),
    "sgd_momentum": partial(torch.optim.SGD, lr=1e-2, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_step_in_backward_is_the_normal_step_bit_for_bit(name):
    factory = FACTORIES[name]
    normal, in_backward = tiny(), tiny()
    opt_a = factory(list(normal.parameters()))
    opt_b = OptimizerInBackward(in_backward.parameters(), factory)
    sched_a, sched_b = LinearWarmup(opt_a, warmup_steps=2), LinearWarmup(opt_b, warmup_steps=2)
    x = torch.randint(0, 50, (4, 6))
    for _ in range(4):
        loss_of(normal, x).backward()
        opt_a.step()
        opt_a.zero_grad()
        sched_a.step()
        opt_b.step(lambda: loss_of(in_backward, x).backward())
        assert all(p.grad is None for p in in_backward.parameters())  # applied and freed inside backward
        sched_b.step()
    for a, b in zip(normal.parameters(), in_backward.parameters()):
        assert torch.equal(a, b)
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
    assert len(opt_b.param_groups) == len(opt_a.param_groups)  # what LearningRateMonitor sees: the user's groups


def test_a_tied_weight_is_stepped_once_with_both_gradients():
    model = tiny()
    calls = []
    optimizer = OptimizerInBackward(model.parameters(), partial(torch.optim.SGD, lr=0.1))
    tied = model[0].weight
    inner = optimizer._inner[tied]
    step = inner.step
    inner.step = lambda *a, **k: calls.append(1) or step(*a, **k)
    optimizer.step(lambda: loss_of(model, torch.randint(0, 50, (2, 3))).backward())
    assert calls == [1]


def test_state_dict_is_the_normal_optimizers_and_resumes_either_way():
    factory = FACTORIES["adamw"]
    x = torch.randint(0, 50, (4, 6))
    trained = tiny()
    opt = OptimizerInBackward(trained.parameters(), factory)
    opt.step(lambda: loss_of(trained, x).backward())
    state = copy.deepcopy(opt.state_dict())
    normal = factory(list(tiny().parameters()))
    assert state["param_groups"][0].keys() == normal.state_dict()["param_groups"][0].keys()
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}

    # Resume one more step, in backward and normally, from the same weights and state: the same result.
    a, b = copy.deepcopy(trained), copy.deepcopy(trained)
    resumed_in_backward = OptimizerInBackward(a.parameters(), factory)
    resumed_in_backward.load_state_dict(copy.deepcopy(state))
    resumed_normal = factory(list(b.parameters()))
    resumed_normal.load_state_dict(copy.deepcopy(state))
    resumed_in_backward.step(lambda: loss_of(a, x).backward())
    loss_of(b, x).backward()
    resumed_normal.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert resumed_in_backward.state_dict()["state"][0]["step"] == 2


@pytest.mark.parametrize(
    "trainer, match",
    [
        ({"gradient_clip_val": 1.0}, "gradient_clip_val"),
        ({"accumulate_grad_batches": 4}, "accumulate_grad_batches"),
        ({"precision": "16-mixed"}, "fp16"),
        ({"world_size": 2}, "one device"),
    ],
)
def test_check_in_backward_refuses_what_needs_all_gradients(trainer, match):
    settings = {"gradient_clip_val": None, "accumulate_grad_batches": 1, "precision": "32-true", "world_size": 1}
    with pytest.raises(ValueError, match=match):
        check_in_backward(SimpleNamespace(**{**settings, **trainer}))
    check_in_backward(SimpleNamespace(**settings))  # the defaults pass


# -- in a Lightning fit ----------------------------------------------------------------------------------


def _fit(tiny_model_dir, make_data, make_trainer, in_backward, **trainer):
    from lightning_dpo import DPOModule

    torch.manual_seed(0)
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
        optimizer_in_backward=in_backward,
    )
    fitter = make_trainer(max_steps=3, limit_val_batches=0, **trainer)
    fitter.fit(module, make_data())
    return module, fitter


def test_a_fit_with_the_step_in_backward_trains_the_same_weights(tiny_model_dir, make_data, make_trainer, tmp_path):
    normal, _ = _fit(tiny_model_dir, make_data, make_trainer, False)
    in_backward, fitter = _fit(tiny_model_dir, make_data, make_trainer, True)
    assert isinstance(fitter.optimizers[0], OptimizerInBackward)
    for (name, a), b in zip(normal.policy.named_parameters(), in_backward.policy.parameters()):
        assert torch.equal(a, b), name
    assert fitter.lr_scheduler_configs[0].scheduler.get_last_lr() == [pytest.approx(1e-2 * 4 / 151)]
    path = tmp_path / "in-backward.ckpt"
    fitter.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["optimizer_states"][0]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_a_fit_refuses_clipping_with_the_step_in_backward(tiny_model_dir, make_data, make_trainer):
    with pytest.raises(ValueError, match="gradient_clip_val"):
        _fit(tiny_model_dir, make_data, make_trainer, True, gradient_clip_val=1.0)
