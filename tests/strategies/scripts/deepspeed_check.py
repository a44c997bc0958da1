"""DeepSpeed ZeRO 2 and 3 from configs/deepspeed-zero{2,3}.yaml on one CPU process (gloo), without Lightning's
Trainer (DeepSpeedStrategy refuses a CPU): the strategy and the module come from the YAML; ZeRO-3 builds the
model inside ``deepspeed.zero.Init`` as Lightning's ``model_sharded_context`` does; DeepSpeed validates the
config and wraps the module's own optimizer; one training step runs through the engine.

    python deepspeed_check.py CONFIG_DIR MODEL_DIR DATA_DIR OUT_JSON
"""

import json
import os
import sys
from types import SimpleNamespace

import torch

os.environ.update(
    MASTER_ADDR="127.0.0.1",
    MASTER_PORT=os.environ.get("DS_TEST_PORT", "29561"),
    RANK="0",
    WORLD_SIZE="1",
    LOCAL_RANK="0",
)

import deepspeed  # noqa: E402
import deepspeed.comm.torch  # noqa: E402, F401

# DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce (about 45 s on 2 cores) that a
# one-process world never uses. (``deepspeed.comm.torch`` as an attribute is the torch package itself.)
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None

from common import make_data  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from lightning_dpo.commands.fit import DPOCLI  # noqa: E402
from lightning_dpo.sharding import check_deepspeed_strategy, full_policy_state_dict, is_partitioned  # noqa: E402

config_dir, model_dir, data_dir, out = sys.argv[1:]
sys.argv[1:] = []  # the CLI below gets its own args


class Parsed(DPOCLI):
    """The CLI's classes from a config, with the trainer's arguments kept instead of a Trainer built."""

    def instantiate_trainer(self, **kwargs):
        self.trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}


deepspeed.init_distributed("gloo")
data = make_data(model_dir, data_dir, batch_size=2)
data.setup("fit")
batch = next(iter(data.train_dataloader()))
original = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
results = {}
for stage in (2, 3):
    cli = Parsed(
        args=[
            "--config",
            f"{config_dir}/deepspeed-zero{stage}.yaml",
            "--model.model_name_or_path",
            model_dir,
            "--model.gradient_checkpointing",
            "false",
        ],
        run=False,
    )
    strategy, module = cli.trainer_config["strategy"], cli.model
    check_deepspeed_strategy(strategy)
    # What Lightning's _format_config adds from the Trainer and the data loader before configure_model runs.
    strategy.config.update(train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1)
    config = strategy.config
    deepspeed.runtime.config.DeepSpeedConfig(config)  # DeepSpeed's own validation
    module._trainer = SimpleNamespace(strategy=strategy)  # configure_model reads only trainer.strategy
    with deepspeed.zero.Init(enabled=stage == 3, config_dict_or_path=config):  # Lightning's model_sharded_context
        module.configure_model()
    module._trainer = None
    gathered = full_policy_state_dict(module.policy)
    trainable = [p for p in module.policy.parameters() if p.requires_grad]
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=[p for p in module.parameters() if p.requires_grad],
        optimizer=optimizer,
        config=config,
    )

    def snapshot(model, stage=stage):  # this rank's partition under ZeRO-3, the full tensor otherwise
        return {n: (p.ds_tensor if stage == 3 else p).detach().clone() for n, p in model.named_parameters()}

    reference_before, policy_before = snapshot(module.reference.model), snapshot(module.policy)
    loss, _ = module.dpo_step(batch)
    engine.backward(loss)
    engine.step()
    reference_after, policy_after = snapshot(module.reference.model), snapshot(module.policy)
    results[stage] = dict(
        stage=strategy.config["zero_optimization"]["stage"],
        exclude_frozen=strategy.exclude_frozen_parameters,
        policy_partitioned=is_partitioned(module.policy),
        reference_partitioned=is_partitioned(module.reference.model),
        gathered_equals_source=gathered is not None and all(torch.equal(gathered[k], v) for k, v in original.items()),
        gathered=gathered is not None,
        optimizer_is_policy=in_optimizer == {id(p) for p in trainable},
        optimizer_has_reference=bool(in_optimizer & {id(p) for p in module.reference.parameters()}),
        ds_optimizer=type(ds_optimizer).__name__,
        loss=loss.item(),
        reference_unchanged=all(torch.equal(reference_before[n], reference_after[n]) for n in reference_before),
        policy_changed=any(not torch.equal(policy_before[n], policy_after[n]) for n in policy_before),
    )
with open(out, "w") as f:
    json.dump(results, f, indent=1)
