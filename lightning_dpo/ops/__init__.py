"""Fast paths behind :func:`lightning_dpo.logps.completion_logps`, each with a simple reference path.

- ``fused_head``: LM head + log-softmax + gather in token chunks, with its own backward; the
  (tokens × vocab) logits never exist in full.
- ``causal_lm``: splits a Hugging Face causal LM into its decoder body and a plain linear head (or says
  why it cannot), so that the head runs only where DPO needs it.
"""

from lightning_dpo.ops.causal_lm import CausalLMParts, split_causal_lm
from lightning_dpo.ops.fused_head import HeadLogps, fused_head_logps, reference_head_logps

__all__ = ["CausalLMParts", "HeadLogps", "fused_head_logps", "reference_head_logps", "split_causal_lm"]
