"""What a DPO step costs, on paper: FLOPs and peak memory per device, from a model's ``config.json`` and the
data's lengths. No weights, no model built; ``lightning-dpo plan`` prints it and ``ThroughputCallback`` counts
each step's FLOPs with :func:`step_flops`.

Notation, for a decoder of ``L`` layers, hidden ``H``, MLP width ``I``, ``Hq`` query and ``Hkv`` key/value
heads of width ``D``, vocabulary ``V``:

    forward FLOPs per token and layer:   2·H·(Hq·D + 2·Hkv·D) + 2·Hq·D·H + 2·3·H·I     (gated MLP)
    attention, per (query, visible key): 4·Hq·D                                       (QKᵀ and PV)
    LM head, per scored position:        2·H·V

A step's *model* FLOPs (issue 15's convention, what MFU divides): the layers over each unique token (a pair's
prompt once), the head at completion-predicting positions only, backward twice the forward (once when only
adapters train: no weight gradients of the base), the policy forward + backward and the reference forward.
*Hardware* FLOPs add what the implementation recomputes: the fused head's backward recomputes its logits
(one more head forward), activation checkpointing one more forward of the layers.

Peak memory (:func:`peak_memory`) is static memory (runtime, weights, optimizer state, reference, sharded as
the strategy shards them) plus the largest of four moments of a step, because what is freed in one is reused
in the next: the end of the forward (activations, the head's blocks), the start of backward (activations, the
head's gradient accumulator), the end of backward (all gradients, a tied embedding's two dense gradient
halves) and the optimizer step (gradients, the optimizer's temporaries). On a CPU, glibc's heap keeps some of
what a moment frees (``allocator_slack``, measured). Validated against measured peak RSS
(``benchmarks/validate_plan.py``; docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_dpo.ops.fused_head import DEFAULT_CHUNK_ELEMENTS, MIN_CHUNK_ROWS

GiB = 2**30

# -- the model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDims:
    """A decoder-only transformer's shape, as far as FLOPs and memory go."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    """Biases on the q/k/v projections (Qwen2)."""
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    """RMSNorm on each head's queries and keys (Qwen3)."""
    gated_mlp: bool = True
    experts: int = 0
    """Routed experts of a mixture-of-experts MLP (0: dense)."""
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_expert_intermediate: int = 0
    dense_layers: int = 0
    """Layers of a MoE model that keep a dense MLP (Qwen2-MoE's ``mlp_only_layers``)."""
    norms_per_layer: int = 2
    """RMSNorms per layer (4 in Gemma 2/3: around attention and around the MLP)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelDims:
        """From a Hugging Face ``config.json`` dict (Llama, Qwen2/3, Mistral, Gemma, Mixtral, Qwen-MoE, ...)."""
        text = config.get("text_config") or config
        missing = [
            k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size") if k not in text
        ]
        if missing:
            raise ValueError(
                f"config of model_type {text.get('model_type')!r} has no {missing}: lightning-dpo plan reads "
                "Llama-style decoder configs (num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, "
                "num_key_value_heads, vocab_size)"
            )
        model_type = str(text.get("model_type", ""))
        heads, hidden = int(text["num_attention_heads"]), int(text["hidden_size"])
        experts = int(text.get("num_local_experts") or text.get("num_experts") or 0)
        attention_bias = bool(text.get("attention_bias", False))
        qwen2 = model_type.startswith("qwen2")
        return cls(
            layers=int(text["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(text.get("intermediate_size") or 4 * hidden),
            heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab=int(text["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
            qkv_bias=qwen2 or attention_bias,
            o_bias=attention_bias and not qwen2,
            mlp_bias=bool(text.get("mlp_bias", False)),
            qk_norm=model_type.startswith("qwen3"),
            experts=experts,
            experts_per_token=int(text.get("num_experts_per_tok") or 0) if experts else 0,
            expert_intermediate=int(text.get("moe_intermediate_size") or text.get("intermediate_size") or 0)
            if experts
            else 0,
            shared_expert_intermediate=int(text.get("shared_expert_intermediate_size") or 0) if experts else 0,
            dense_layers=len(text.get("mlp_only_layers") or []) if experts else 0,
            norms_per_layer=4 if model_type.startswith(("gemma2", "gemma3")) else 2,
        )

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    def _dense_mlp_params(self, width: int) -> int:
        h = self.hidden
        return (3 if self.gated_mlp else 2) * h * width + ((2 * width + h) if self.mlp_bias else 0)

    @property
    def attention_params(self) -> int:
        h, q, kv = self.hidden, self.q, self.kv
        biases = ((q + 2 * kv) if self.qkv_bias else 0) + (h if self.o_bias else 0)
        return h * (q + 2 * kv) + q * h + biases + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def moe_mlp_params(self) -> int:
        shared = (
            self._dense_mlp_params(self.shared_expert_intermediate) + self.hidden
            if self.shared_expert_intermediate
            else 0
        )
        return self.experts * self.hidden + self.experts * self._dense_mlp_params(self.expert_intermediate) + shared

    @property
    def layer_params(self) -> int:
        """Parameters of one layer (a MoE layer's when the model has experts)."""
        mlp = self.moe_mlp_params if self.experts else self._dense_mlp_params(self.intermediate)
        return self.attention_params + mlp + self.norms_per_layer * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        dense = self.attention_params + self._dense_mlp_params(self.intermediate) + self.norms_per_layer * self.hidden
        body = (self.layers - self.dense_layers) * self.layer_params + self.dense_layers * dense
        return body + self.embedding_params * (1 if self.tied else 2) + self.hidden  # + final norm

    @property
    def largest_matrix(self) -> int:
        """Elements of the largest parameter tensor (the embedding, in most models)."""
        width = self.expert_intermediate if self.experts else self.intermediate
        return max(self.embedding_params, self.hidden * width, self.hidden * (self.q + 2 * self.kv))

    def layer_flops_per_token(self) -> int:
        """Forward matmul FLOPs of one token through all layers, attention scores excluded."""
        h = self.hidden
        projections = h * (self.q + 2 * self.kv) + self.q * h
        dense = (3 if self.gated_mlp else 2) * h * self.intermediate
        if not self.experts:
            return 2 * self.layers * (projections + dense)
        routed = self.experts_per_token * 3 * h * self.expert_intermediate + 3 * h * self.shared_expert_intermediate
        moe = routed + h * self.experts  # + the router
        moe_layers = self.layers - self.dense_layers
        return 2 * (self.layers * projections + moe_layers * moe + self.dense_layers * dense)

    def attention_flops(self, query_key_pairs: int) -> int:
        """Forward FLOPs of QKᵀ and PV over all layers for this many (query, visible key) pairs."""
        return 4 * self.layers * self.q * query_key_pairs

    def head_flops(self, positions: int) -> int:
        return 2 * self.hidden * self.vocab * positions


def lora_params(dims: ModelDims, rank: int, targets: str | Sequence[str] = "all-linear") -> int:
    """Trainable parameters of a LoRA of ``rank``: r·(in + out) per adapted matrix. ``targets``: ``all-linear``
    (every projection of every layer, not the LM head, as peft does), or names among q_proj, k_proj, v_proj,
    o_proj, gate_proj, up_proj, down_proj."""
    h, q, kv, i = dims.hidden, dims.q, dims.kv, dims.expert_intermediate or dims.intermediate
    shapes = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    names = list(shapes) if targets == "all-linear" else list(targets)
    unknown = sorted(set(names) - set(shapes))
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {unknown}; use all-linear or some of {sorted(shapes)}")
    per_expert = dims.experts if dims.experts else 1
    total = 0
    for name in names:
        n_in, n_out = shapes[name]
        total += rank * (n_in + n_out) * (per_expert if name.endswith(("gate_proj", "up_proj", "down_proj")) else 1)
    return total * dims.layers


# -- FLOPs ------------------------------------------------------------------------------------------------


def causal_pairs(length: int, prefix: int = 0) -> int:
    """(query, key) pairs of a causal span of ``length`` tokens that also sees ``prefix`` earlier tokens."""
    return length * prefix + length * (length + 1) // 2


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step (see the module docstring for the convention)."""

    policy_forward: float
    policy_backward: float
    reference_forward: float
    recompute: float
    """What the implementation computes again (hardware, not model, FLOPs)."""
    tokens: int
    """Unique tokens through each model (each pair's prompt once)."""
    scored: int
    """Completion-predicting positions (the head's rows)."""
    parts: dict[str, float]
    """Forward FLOPs of one model by part: projections + MLP (``layers``), ``attention``, ``head``."""

    @property
    def policy(self) -> float:
        return self.policy_forward + self.policy_backward

    @property
    def model(self) -> float:
        """The step's model FLOPs: the policy's forward and backward and the reference's forward."""
        return self.policy + self.reference_forward

    @property
    def hardware(self) -> float:
        return self.model + self.recompute


def step_flops(
    dims: ModelDims,
    pairs: Iterable[Sequence[int]],
    *,
    reference: bool = True,
    trainable_base: bool = True,
    fused_head: bool = True,
    checkpointing: bool = False,
) -> StepFlops:
    """FLOPs of one step over ``pairs`` of (prompt, chosen, rejected) token counts.

    ``reference``: a reference model runs forward in the step (``frozen``, ``adapter``; not ``precomputed``
    or ``none``). ``trainable_base``: the base weights train (``False`` under LoRA: the backward computes
    activation gradients only). ``fused_head`` and ``checkpointing`` change only the hardware FLOPs.
    """
    tokens = scored = qk = 0
    for prompt, chosen, rejected in pairs:
        tokens += prompt + chosen + rejected
        qk += causal_pairs(prompt + chosen) + causal_pairs(rejected, prompt)
        scored += chosen + rejected
    layers = float(dims.layer_flops_per_token() * tokens)
    parts = {"layers": layers, "attention": float(dims.attention_flops(qk)), "head": float(dims.head_flops(scored))}
    forward = sum(parts.values())
    backward = (2.0 if trainable_base else 1.0) * forward
    recompute = (parts["head"] if fused_head else 0.0) + ((layers + parts["attention"]) if checkpointing else 0.0)
    return StepFlops(forward, backward, forward if reference else 0.0, recompute, tokens, scored, parts)


# -- memory -----------------------------------------------------------------------------------------------

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

PRECISIONS = {  # (weight, activation, gradient and optimizer-state) bytes
    "32-true": (4, 4, 4),
    "32": (4, 4, 4),
    "bf16-mixed": (4, 2, 4),
    "16-mixed": (4, 2, 4),
    "bf16-true": (2, 2, 2),
    "16-true": (2, 2, 2),
}

ACTIVATION_WORDS = {"hidden": 7, "intermediate": 4, "query": 2, "kv": 2}
"""Values autograd keeps per token and decoder layer, by width, for a Llama-like Hugging Face layer under
packed segment attention (input and post-attention norms, q/k/v after RoPE, the attention output, the MLP's
gate, up, SiLU(gate) and product, residuals); counted with ``saved_tensors_hooks`` at the Qwen2.5-0.5B shape
(``benchmarks/profile_step.py``)."""

OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "rmsprop": 1, "sgd": 0, "sgd_momentum": 1}

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3")

ALLOCATOR_SLACK_CPU = 0.35
"""On a CPU, the share of a step's transient bytes that glibc's heap still holds at the peak (freed chunks it
keeps, fragmentation); fitted to the peak RSS measured at three shapes (``benchmarks/validate_plan.py``)."""


@dataclass(frozen=True)
class MemorySettings:
    """What decides a DPO step's peak memory on one device."""

    tokens: int = 1024
    """Tokens of one micro-batch through the model on one device (packed: each pair's prompt once; padded:
    2 × pairs × the longest row)."""
    scored: int = 512
    """Completion-predicting positions of that micro-batch (the fused head's rows)."""
    precision: str = "32-true"
    """Lightning precision: ``32-true``, ``bf16-mixed`` (fp32 weights, bf16 activations), ``bf16-true``."""
    accelerator: str = "cpu"
    """``cpu`` or ``gpu``: the runtime's own memory, the optimizer's default implementation."""
    reference: str = "frozen"
    """``frozen`` (a second model), or ``adapter`` / ``precomputed`` / ``none`` (none)."""
    reference_dtype: str | None = None
    """The frozen reference's weight dtype (``None``: the policy's)."""
    optimizer: str = "rmsprop"
    """``rmsprop`` (one state tensor per parameter), ``adamw`` (two), ``sgd`` (none)."""
    optimizer_impl: str | None = None
    """``for-loop``, ``foreach``, ``fused`` or ``blocked``; ``None``: torch's default on the accelerator
    (PaperRMSprop's blocked step on a CPU)."""
    optimizer_in_backward: bool = False
    lora_params: int = 0
    """Trainable LoRA parameters; > 0 freezes the base (no base gradients or optimizer state)."""
    checkpointing: bool = False
    strategy: str = "single"
    """``single``, ``ddp`` (a replica per device, plus DDP's gradient buckets), ``fsdp`` (weights, gradients,
    state and reference sharded), ``deepspeed_stage_2`` (gradients and state sharded), ``deepspeed_stage_3``
    (as ``fsdp``)."""
    devices: int = 1
    fused_head: bool | None = None
    """``None``: the fused head unless the strategy shards the head's weight (then full logits)."""
    runtime_bytes: float | None = None
    """The process before any model; ``None``: 0.55 GiB on a CPU (Python, torch, transformers, Lightning),
    0.75 GiB on a GPU (CUDA context, cuBLAS workspace, NCCL buffers)."""
    allocator_slack: float | None = None
    """Share of the step's transients the allocator keeps; ``None``: :data:`ALLOCATOR_SLACK_CPU` on a CPU, 0
    on a GPU (the caching allocator's reuse is not modelled)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.optimizer not in OPTIMIZER_STATES:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {self.optimizer!r}")
        if self.reference not in ("frozen", "adapter", "precomputed", "none"):
            raise ValueError(f"reference must be frozen, adapter, precomputed or none, got {self.reference!r}")


@dataclass(frozen=True)
class MemoryPlan:
    """Peak bytes per device, by cause, at the moment of the step that sets the peak."""

    parts: dict[str, float]
    moment: str
    """``forward end``, ``backward start``, ``backward end`` or ``optimizer step``."""

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def peak_memory(dims: ModelDims, s: MemorySettings) -> MemoryPlan:
    """Peak bytes per device by cause (see the module docstring)."""
    weight_b, act_b, grad_b = PRECISIONS[s.precision]
    lora = s.lora_params > 0
    trainable = s.lora_params if lora else dims.params
    shard = s.devices if s.strategy in ("fsdp", "deepspeed_stage_3") else 1
    grad_shard = s.devices if s.strategy != "single" and s.strategy != "ddp" else 1
    fused = s.fused_head if s.fused_head is not None else shard == 1
    gpu = s.accelerator == "gpu"

    static = {"runtime": float(s.runtime_bytes if s.runtime_bytes is not None else (0.75 if gpu else 0.55) * GiB)}
    static["weights"] = (dims.params * weight_b + (s.lora_params * 4 if lora else 0)) / shard
    ref_b = BYTES[s.reference_dtype] if s.reference_dtype else weight_b
    static["reference"] = dims.params * ref_b / shard if s.reference == "frozen" else 0.0
    state_b = 4 if lora else grad_b
    static["optimizer_state"] = trainable * state_b * OPTIMIZER_STATES[s.optimizer] / grad_shard
    if shard > 1:  # FSDP: the root unit (embeddings, head) gathered through the forward, two layers in flight
        root = dims.embedding_params * (1 if dims.tied else 2) * act_b
        static["gathered"] = root + 2.0 * dims.layer_params * act_b
    if s.strategy == "ddp" and s.devices > 1:  # DDP's gradient buckets: a second copy of the gradients
        static["ddp_buckets"] = trainable * grad_b

    # Moments of the step.
    per_token_layer = act_b * (
        ACTIVATION_WORDS["hidden"] * dims.hidden
        + ACTIVATION_WORDS["intermediate"] * (dims.expert_intermediate * dims.experts_per_token or dims.intermediate)
        + ACTIVATION_WORDS["query"] * dims.q
        + ACTIVATION_WORDS["kv"] * dims.kv
    )
    if s.checkpointing:  # each layer's input kept; one layer's activations rebuilt at a time in backward
        activations = s.tokens * (dims.hidden * act_b * dims.layers + per_token_layer)
    else:
        activations = s.tokens * per_token_layer * dims.layers
    head_trains = not lora
    if fused:
        rows = min(max(MIN_CHUNK_ROWS, DEFAULT_CHUNK_ELEMENTS // dims.vocab), max(s.scored, 1))
        head_forward = 3.0 * rows * dims.vocab * 4  # the block, its exponentials, logsumexp's temporary
        head_backward = 2.0 * rows * dims.vocab * 4 + (dims.embedding_params * 4 if head_trains else 0)
    else:  # full logits at every position: in the activation dtype, their fp32 copy, log-softmax's temporary
        head_forward = head_backward = s.tokens * dims.vocab * (act_b + 4 + 4)
    autocast = trainable * 2.0 if s.precision in ("bf16-mixed", "16-mixed") and not lora else 0.0
    gradients = trainable * grad_b / grad_shard
    if s.optimizer_in_backward:  # one tensor's gradient at a time
        gradients = (s.lora_params / dims.layers if lora else dims.largest_matrix) * grad_b
    tied = 2.0 * dims.embedding_params * grad_b if dims.tied and head_trains else 0.0
    impl = s.optimizer_impl or ("foreach" if gpu else ("blocked" if s.optimizer == "rmsprop" else "for-loop"))
    optimizer_transient = {
        "for-loop": dims.largest_matrix * state_b * (2 if OPTIMIZER_STATES[s.optimizer] == 2 else 1),
        "foreach": trainable * state_b / grad_shard,
        "fused": 0.0,
        "blocked": 0.0,
    }[impl]
    if s.optimizer_in_backward:
        optimizer_transient = min(optimizer_transient, dims.largest_matrix * state_b * 2)
    moments = {
        "forward end": {"activations": activations, "head": head_forward, "autocast_copies": autocast},
        "backward start": {"activations": activations, "head": head_backward, "autocast_copies": autocast},
        "backward end": {"gradients": gradients, "tied_embedding_gradients": tied},
        "optimizer step": {"gradients": gradients, "optimizer_transient": optimizer_transient},
    }
    if s.optimizer_in_backward:  # the optimizer runs inside backward, one tensor at a time
        moments["backward end"]["optimizer_transient"] = moments.pop("optimizer step")["optimizer_transient"]
    moment = max(moments, key=lambda m: sum(moments[m].values()))
    out = {**static, **{k: float(v) for k, v in moments[moment].items()}}
    slack = s.allocator_slack if s.allocator_slack is not None else (0.0 if gpu else ALLOCATOR_SLACK_CPU)
    others = sum(v for m, parts in moments.items() if m != moment for v in parts.values())
    out["allocator"] = slack * others
    return MemoryPlan({k: v for k, v in out.items() if v}, moment)
