"""Every config in configs/ parses and builds its model, data and strategy; those that need GPUs or a cluster
are taken as far as a CPU allows: Lightning's own GPU guard, or an emulated torchrun / SLURM environment."""

from __future__ import annotations

import pytest
import yaml
from common import CONFIGS

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.commands.fit import DPOCLI, names_data_class
from lightning_dpo.namespace import pl
from lightning_dpo.sharding import DPOAutoWrapPolicy


class Parsed(DPOCLI):
    """The CLI's classes from a config; the Trainer's arguments are kept (strategy and plugins instantiated),
    the Trainer itself is not built."""

    def instantiate_trainer(self, **kwargs):
        self.trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}


def parse(name: str, *args: str) -> Parsed:
    argv = ["--config", str(CONFIGS / name), *args]
    return Parsed(args=argv, run=False, data_classes=names_data_class(argv))  # as `lightning-dpo fit` does


def build_trainer(cli: Parsed, **overrides) -> pl.Trainer:
    """The config's Trainer with ``overrides`` (e.g. a CPU accelerator), without its logger and callbacks."""
    return pl.Trainer(**{**cli.trainer_config, "logger": False, "callbacks": [], **overrides})


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_parses_and_instantiates(name):
    """Every value the YAML sets reaches the object it configures, and its callbacks work without a logger."""
    if name.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    config = yaml.safe_load((CONFIGS / name).read_text())
    cli = parse(name)
    data = config["data"]
    if "class_path" in data:  # a data module picked by class (rankings, KTO): that class, with its init_args
        assert type(cli.datamodule).__name__ == data["class_path"].rsplit(".", 1)[-1]
        data = data.get("init_args", {})
    else:
        assert isinstance(cli.datamodule, PreferenceDataModule)
    assert isinstance(cli.model, DPOModule)
    model = config["model"]
    assert cli.model.hparams.model_name_or_path == model["model_name_or_path"]
    groups = {
        "loss": cli.model.loss_settings,
        "reference": cli.model.reference_settings,
        "logps": cli.model.logps_options,
    }
    for group, settings in groups.items():
        for key, value in (model.get(group) or {}).items():
            assert getattr(settings, key) == value, (name, group, key)
    for key in ("lora", "dtype", "gradient_checkpointing", "attn_implementation"):
        if key in model:
            assert cli.model.hparams[key] == model[key], (name, key)
    for key, value in data.items():
        assert cli.datamodule.hparams[key] == value, (name, "data", key)
    trainer = cli.trainer_config
    strategy = config["trainer"].get("strategy", "auto")  # the single-device configs leave it to Lightning
    if isinstance(strategy, str):
        assert trainer["strategy"] == strategy
    else:
        assert type(trainer["strategy"]).__name__ == strategy["class_path"].rsplit(".", 1)[-1]
    for key in ("devices", "num_nodes", "precision", "accumulate_grad_batches", "max_steps", "max_epochs"):
        if key in config["trainer"]:
            assert trainer[key] == config["trainer"][key], (name, key)
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"].get("callbacks", [])]
    assert [type(c).__name__ for c in trainer.get("callbacks") or []] == callbacks
    assert "LearningRateMonitor" not in callbacks  # it fails a run with --trainer.logger false; the module logs lr


@pytest.mark.parametrize(
    "name, strategy", [("ddp.yaml", pl.strategies.DDPStrategy), ("fsdp2.yaml", pl.strategies.ModelParallelStrategy)]
)
def test_cpu_configs_build_their_trainer(name, strategy, restore_rank_zero):
    trainer = build_trainer(parse(name))
    assert isinstance(trainer.strategy, strategy) and trainer.num_devices == 2
    assert trainer.strategy.root_device.type == "cpu"
    assert trainer.datamodule is None  # nothing launched: processes start at fit


def test_fsdp2_config_shards_over_every_device():
    strategy = parse("fsdp2.yaml").trainer_config["strategy"]
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (2, 1)
    assert strategy._save_distributed_checkpoint  # sharded checkpoints


def test_fsdp1_config_keeps_the_reference_in_its_own_units_and_needs_a_gpu():
    cli = parse("fsdp1.yaml")
    strategy = cli.trainer_config["strategy"]
    assert isinstance(strategy, pl.strategies.FSDPStrategy)
    assert isinstance(strategy.kwargs["auto_wrap_policy"], DPOAutoWrapPolicy)
    assert strategy.kwargs["use_orig_params"]  # Lightning's default; LoRA policies need it
    assert strategy._state_dict_type == "sharded"
    assert cli.model.hparams.gradient_checkpointing
    with pytest.raises(ValueError, match="requires a GPU accelerator"):  # Lightning's own guard, at construction
        build_trainer(cli, accelerator="cpu")


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_exclude_frozen_parameters(stage):
    pytest.importorskip("deepspeed")
    strategy = parse(f"deepspeed-zero{stage}.yaml").trainer_config["strategy"]
    assert type(strategy).__name__ == "DeepSpeedStrategy"
    assert strategy.config["zero_optimization"]["stage"] == stage
    assert strategy.exclude_frozen_parameters
    assert strategy.config["zero_allow_untested_optimizer"]  # the paper's RMSprop is not in DeepSpeed's list


def test_torchrun_config_reads_ranks_from_torchrun(monkeypatch, restore_rank_zero):
    """As torchrun would start global rank 9 of 2 nodes x 8 processes (the GPU swapped for CPU processes)."""
    torchrun = dict(
        RANK="9",
        LOCAL_RANK="1",
        WORLD_SIZE="16",
        LOCAL_WORLD_SIZE="8",
        GROUP_RANK="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29500",
        TORCHELASTIC_RUN_ID="test",
    )
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(parse("multinode-torchrun.yaml"), accelerator="cpu")
    assert type(trainer.strategy.cluster_environment).__name__ == "TorchElasticEnvironment"
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (16, 9, 1, 1)


def test_slurm_config_reads_ranks_from_slurm(monkeypatch, restore_rank_zero):
    """As srun would start task 9 of 2 nodes x 8 tasks (the GPU swapped for CPU processes)."""
    slurm = dict(
        SLURM_NTASKS="16",
        SLURM_NTASKS_PER_NODE="8",
        SLURM_PROCID="9",
        SLURM_LOCALID="1",
        SLURM_NODEID="1",
        SLURM_JOB_NAME="dpo",
        SLURM_NODELIST="node[1-2]",
        SLURM_JOB_ID="1",
    )
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(parse("multinode-slurm.yaml"), accelerator="cpu")
    environment = trainer.strategy.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (16, 9, 1, 1)
    assert environment.main_address == "node1"
    assert trainer.strategy._data_parallel_size == 16  # FSDP2 over all 16 GPUs, no tensor parallelism
