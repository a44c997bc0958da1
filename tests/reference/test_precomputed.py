"""reference mode 'precomputed': exactness, the cache key, resumption, and DDP."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch

import lightning_dpo.reference.precomputed as precomputed
from lightning_dpo import DPOModule
from lightning_dpo.namespace import pl


def module(tiny_model_dir, cache_dir, reference=None, **kwargs):
    kwargs = {"optimizer": lambda p: torch.optim.AdamW(p, lr=1e-2), "lr_scheduler": None, **kwargs}
    reference = {"mode": "precomputed", "cache_dir": str(cache_dir), "precompute_batch_size": 5, **(reference or {})}
    return DPOModule(model_name_or_path=str(tiny_model_dir), reference=reference, **kwargs)


class Record(pl.Callback):
    def __init__(self):
        self.losses, self.batches = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        self.batches.append({k: v.clone() for k, v in batch.items()})


@pytest.fixture
def fit(make_trainer, tmp_path):
    """``fit(model, datamodule, steps, root=None, ckpt_path=None, checkpoints=())`` -> (trainer, Record)."""

    def run(model, datamodule, steps=3, root=None, ckpt_path=None, checkpoints=()):
        record = Record()
        trainer = make_trainer(
            max_steps=steps,
            default_root_dir=root or tmp_path,
            enable_checkpointing=bool(checkpoints),
            callbacks=[record, *checkpoints],
        )
        trainer.fit(model, datamodule, ckpt_path=ckpt_path)
        return trainer, record

    return run


@pytest.fixture
def count_passes(monkeypatch):
    calls = []
    original = precomputed.completion_logps

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(precomputed, "completion_logps", counting)
    return calls


def test_looked_up_values_equal_a_frozen_reference_under_shuffling(tmp_path, tiny_model_dir, make_data, fit):
    model = module(tiny_model_dir, tmp_path / "cache")
    trainer, record = fit(model, make_data(group_by_length=True), steps=3)
    assert record.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    frozen = DPOModule(model_name_or_path=str(tiny_model_dir))
    frozen.configure_model()
    for batch in record.batches:  # shuffled, length-grouped batches: looked up by pair_index
        expected = frozen.reference.logps(batch, frozen.logps_options).logps
        assert torch.allclose(model.reference.logps(batch, model.logps_options).logps, expected, atol=1e-5)
    assert model.reference.table.shape == (64, 2)
    assert not any(k.startswith("reference.") for k in model.state_dict())


def test_cache_hit_and_invalidation(tmp_path, tiny_model_dir, embedded_model_dir, count_passes, make_data, fit):
    cache = tmp_path / "cache"
    first = module(tiny_model_dir, cache)
    fit(first, make_data(), steps=1)
    assert count_passes and len(list(cache.iterdir())) == 1
    count_passes.clear()

    again = module(tiny_model_dir, cache)
    fit(again, make_data(), steps=1)
    assert not count_passes, "a second run with the same inputs must not run the reference"
    assert again.reference.key == first.reference.key
    assert torch.equal(again.reference.table, first.reference.table)

    changes = [
        (module(tiny_model_dir, cache), make_data(max_length=20, max_prompt_length=None)),  # tokens (pairs cut to 20)
        (module(tiny_model_dir, cache, loss={"ld_alpha": 0.5}), make_data()),  # LD-DPO sums
        (module(tiny_model_dir, cache, reference={"model_name_or_path": str(embedded_model_dir)}), make_data()),
    ]
    keys = {first.reference.key}
    for changed_module, changed_data in changes:
        count_passes.clear()
        fit(changed_module, changed_data, steps=1)
        assert count_passes and changed_module.reference.key not in keys
        keys.add(changed_module.reference.key)
    assert len(list(cache.glob("*.logps"))) == 4


def test_resume_keeps_the_key_and_recomputes_from_the_source_when_the_cache_is_gone(
    tmp_path, tiny_model_dir, count_passes, make_data, fit
):
    cache = tmp_path / "cache"
    straight = module(tiny_model_dir, cache)
    every_3 = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    _, uninterrupted = fit(straight, make_data(), steps=6, root=tmp_path / "a", checkpoints=[every_3])
    (mid,) = [p for p in (tmp_path / "ckpt").glob("*.ckpt") if "step=3" in p.name]  # mid-epoch: 12 batches
    assert torch.load(mid, weights_only=True)["reference_state"]["key"] == straight.reference.key
    for f in cache.glob("*.logps"):
        f.unlink()  # the cache is gone: the table must come from the model source, not the trained policy
    count_passes.clear()
    resumed = module(tiny_model_dir, cache)
    _, after = fit(resumed, make_data(), steps=6, root=tmp_path / "c", ckpt_path=mid)
    assert count_passes and resumed.reference.key == straight.reference.key
    assert torch.allclose(resumed.reference.table, straight.reference.table, atol=1e-6)
    assert after.losses == pytest.approx(uninterrupted.losses[3:], abs=1e-6)


def _table_file(cache):
    (path,) = cache.glob("*.logps")
    return path


def _rewrite_payload(path, change):
    """Rewrite the table file with a valid header around a changed payload (only a foreign or crafted file
    can pass the checksum)."""
    import io

    from lightning_dpo import storage

    stored = torch.load(io.BytesIO(storage.read_checked(path, precomputed.FILE_KIND)), weights_only=True)
    buffer = io.BytesIO()
    torch.save(change(stored), buffer)
    storage.write_checked(path, buffer.getvalue(), precomputed.FILE_KIND)


class Payload:
    """Pickled code: unpickling it would create the file ``Payload.marker``."""

    marker = None

    def __reduce__(self):
        return (open, (str(Payload.marker), "w"))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "garbled": lambda p: p.write_bytes(p.read_bytes()[:-50] + bytes(50)),
    "plain torch file": lambda p: torch.save(torch.zeros(64, 2), p),
    "foreign key": lambda p: _rewrite_payload(p, lambda s: {**s, "key": "0" * 32}),
    "pickled code": lambda p: _rewrite_payload(p, lambda s: {**s, "table": Payload()}),
}


def test_a_damaged_or_crafted_table_is_reported_and_recomputed(tmp_path, tiny_model_dir, count_passes, make_data, fit):
    cache = tmp_path / "cache"
    first = module(tiny_model_dir, cache)
    fit(first, make_data(), steps=1)
    path, good = _table_file(cache), _table_file(cache).read_bytes()
    Payload.marker = tmp_path / "pwned"
    for name, damage in DAMAGE.items():  # each kind of damage, at the read
        path.write_bytes(good)
        damage(path)
        with pytest.warns(UserWarning, match=rf"reference log-prob cache {path} is unusable"):
            assert first.reference._read_cache(path, 64) is None, name
    assert not Payload.marker.exists()  # the pickled payload never ran

    path.write_bytes(good)
    DAMAGE["garbled"](path)
    count_passes.clear()
    again = module(tiny_model_dir, cache)  # a whole run on the damaged file
    with pytest.warns(UserWarning, match=rf"reference log-prob cache {path} is unusable"):
        fit(again, make_data(), steps=1)
    assert count_passes and torch.equal(again.reference.table, first.reference.table)  # recomputed
    assert path.read_bytes() == good  # and written back whole


def test_tr_dpo_is_refused():
    with pytest.raises(ValueError, match="precomputed reference log-probs cannot follow"):
        DPOModule(reference={"mode": "precomputed", "sync": True})


DDP_SCRIPT = """
import sys, torch
from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.namespace import pl
model_dir, data_dir, cache, out = sys.argv[1:]
module = DPOModule(model_name_or_path=model_dir, reference={"mode": "precomputed", "cache_dir": cache,
                   "precompute_batch_size": 3}, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
dm = PreferenceDataModule(dataset=data_dir, tokenizer_name_or_path=model_dir, batch_size=4, max_length=96,
                          max_prompt_length=48)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0)
trainer.fit(module, dm)
if trainer.is_global_zero:
    torch.save(module.reference.table, out)
"""


def test_ddp_two_processes_compute_shares_of_one_table(tmp_path, tiny_model_dir, tiny_data_dir, make_data, fit):
    script = tmp_path / "ddp_precompute.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    cache, out = tmp_path / "cache", tmp_path / "table.pt"
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(tiny_data_dir), str(cache), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = module(tiny_model_dir, tmp_path / "single-cache")
    fit(single, make_data(), steps=1)
    assert torch.allclose(torch.load(out, weights_only=True), single.reference.table.cpu(), atol=1e-5)
    assert len(list(cache.glob("*.logps"))) == 1  # rank 0 wrote it once
