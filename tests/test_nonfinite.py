"""The non-finite guard: a NaN injected into one batch stops the run with an error naming the step, the
quantity and the pair's file and line, or (``skip``) drops exactly that optimizer step on every micro-batch."""

from __future__ import annotations

import pytest
import torch

import lightning_dpo.module as module_mod
from lightning_dpo import DPOModule, NonFiniteError
from lightning_dpo.namespace import pl
from lightning_dpo.nonfinite import NonFiniteSettings

NAN = float("nan")


class Poison(pl.Callback):
    """Makes one quantity non-finite for pair ``row`` of the training batches ``at`` (by batch index), and
    records the weights after every optimizer step and where the poisoned pairs came from."""

    def __init__(self, quantity: str, at: tuple[int, ...], row: int = 1) -> None:
        self.quantity, self.at, self.row = quantity, set(at), row
        self.armed = False
        self.poisoned: list[str] = []  # locations of the poisoned pairs
        self.weights: list[list[torch.Tensor]] = []  # after each optimizer step (index 0: before any)

    def install(self, monkeypatch, model: DPOModule) -> None:
        if self.quantity == "policy":
            real = module_mod.completion_logps

            def policy(*args, **kwargs):
                out = real(*args, **kwargs)
                return out._replace(logps=self._poison(out.logps)) if self.armed else out

            monkeypatch.setattr(module_mod, "completion_logps", policy)
        elif self.quantity == "loss":
            real_loss = module_mod.preference_loss

            def loss(*args, **kwargs):
                out = real_loss(*args, **kwargs)
                return out._replace(losses=self._poison(out.losses)) if self.armed else out

            monkeypatch.setattr(module_mod, "preference_loss", loss)

    def _poison(self, values: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(values, dtype=torch.bool)
        mask[self.row] = True  # a chosen row (log-probs) or a pair (losses)
        return torch.where(mask, torch.full_like(values, NAN), values)

    def on_train_start(self, trainer, pl_module):
        if self.quantity == "reference":
            real = pl_module.reference.logps

            def reference(*args, **kwargs):
                out = real(*args, **kwargs)
                return out._replace(logps=self._poison(out.logps)) if self.armed else out

            pl_module.reference.logps = reference
        if self.quantity == "gradients":
            weight = next(p for p in pl_module.policy.parameters() if p.requires_grad)
            weight.register_hook(lambda g: g * NAN if self.armed else g)
        self.weights.append(self._snapshot(pl_module))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.armed = batch_idx in self.at
        if self.armed:
            self.poisoned += trainer.datamodule.pair_locations([int(batch["pair_index"][self.row])])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.fit_loop._should_accumulate():
            self.weights.append(self._snapshot(pl_module))

    @staticmethod
    def _snapshot(pl_module):
        return [p.detach().clone() for p in pl_module.policy.parameters()]


@pytest.fixture
def run(tiny_model_dir, make_data, make_trainer, monkeypatch):
    """``run(poison, steps, nonfinite=None, **trainer)`` -> (module, trainer); raises what fit raises."""

    def fit(poison, steps=4, nonfinite=None, **trainer_args):
        pl.seed_everything(0)
        model = DPOModule(
            model_name_or_path=str(tiny_model_dir),
            nonfinite=nonfinite,
            optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
            lr_scheduler=None,
        )
        poison.install(monkeypatch, model)
        trainer = make_trainer(max_steps=steps, callbacks=[poison], **trainer_args)
        trainer.fit(model, make_data())
        return model, trainer

    return fit


QUANTITY_NAMES = {
    "policy": "policy log-probs",
    "reference": "reference log-probs",
    "loss": "loss",
    "gradients": "gradients",
}


@pytest.mark.parametrize("quantity", list(QUANTITY_NAMES))
def test_by_default_a_non_finite_value_stops_the_run_naming_step_quantity_and_pair(run, quantity):
    poison = Poison(quantity, at=(2,))
    with pytest.raises(NonFiniteError) as error:
        run(poison)
    message = str(error.value)
    assert f"non-finite {QUANTITY_NAMES[quantity]} at optimizer step 2 (epoch 0)" in message
    assert poison.poisoned[0] in message and poison.poisoned[0].startswith(("/", ".")) and ".jsonl:" in message
    assert "model.nonfinite.action: skip" in message
    if quantity != "gradients":  # the pair itself, and no other
        assert message.count(".jsonl:") == 1
    else:  # a gradient cannot be traced to one pair: every pair of the step is named
        assert message.count(".jsonl:") == 4
    assert len(poison.weights) == 3  # steps 0 and 1 were taken; step 2 was not


def test_skip_drops_exactly_the_poisoned_steps(run):
    poison = Poison("policy", at=(1, 3))
    with pytest.warns(UserWarning, match=r"non-finite policy log-probs at optimizer step 1 .*skipped that optimizer"):
        model, trainer = run(poison, steps=5, nonfinite={"action": "skip", "max_skips": 2})
    w = poison.weights  # w[k]: after k optimizer steps
    for step in range(5):
        unchanged = all(torch.equal(a, b) for a, b in zip(w[step], w[step + 1]))
        assert unchanged == (step in (1, 3)), step
    state = trainer.optimizers[0].state
    assert all(s["step"] == 3 for s in state.values())  # AdamW counted only the steps taken
    assert model.nonfinite_guard.skipped == 2 and trainer.callback_metrics["train/nonfinite_skips"] == 2
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_skip_stops_after_max_skips(run):
    with pytest.raises(NonFiniteError, match=r"after 1 skipped optimizer steps: more than model.nonfinite.max_skips=1"):
        with pytest.warns(UserWarning, match="skipped that optimizer step"):
            run(Poison("loss", at=(0, 2)), nonfinite={"action": "skip", "max_skips": 1})


def test_under_accumulation_the_whole_optimizer_step_is_skipped(run):
    poison = Poison("reference", at=(3,))  # the second micro-batch of optimizer step 1
    with pytest.warns(UserWarning, match="at optimizer step 1"):
        run(poison, steps=3, nonfinite={"action": "skip"}, accumulate_grad_batches=2)
    w = poison.weights
    assert len(w) == 4
    assert all(torch.equal(a, b) for a, b in zip(w[1], w[2]))  # no update from micro-batch 2 either
    assert not all(torch.equal(a, b) for a, b in zip(w[0], w[1]))
    assert not all(torch.equal(a, b) for a, b in zip(w[2], w[3]))


def test_the_skip_count_is_saved_in_checkpoints():
    model = DPOModule(nonfinite={"action": "skip", "max_skips": 3})
    model.nonfinite_guard.skipped = 2
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    resumed = DPOModule(nonfinite={"action": "skip", "max_skips": 3})
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.nonfinite_guard.skipped == 2
    assert model.hparams.nonfinite == {"action": "skip", "max_skips": 3}  # a primitive, for weights_only loads


def test_settings_are_checked():
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        NonFiniteSettings(action="ignore")
    with pytest.raises(ValueError, match="max_skips must be >= 0"):
        DPOModule(nonfinite={"max_skips": -1})
