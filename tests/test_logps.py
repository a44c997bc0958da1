"""Sequence log-probs against a naive per-token loop."""

import torch

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.logps import completion_logps, sequence_logps


def naive_logps(logits, input_ids, prompt_len, total_len):
    """Σ log softmax(logits[t-1])[token_t] for t in the completion, one token at a time."""
    total = torch.zeros((), dtype=torch.float64)
    for t in range(prompt_len, total_len):
        total = total + torch.log_softmax(logits[t - 1].double(), -1)[input_ids[t]]
    return total


def test_matches_naive_loop_with_pad_equal_to_eos():
    eos = 2
    pairs = [
        # the chosen completion ends with a real EOS; padding is also EOS
        {"prompt_input_ids": [1, 5, 6], "chosen_input_ids": [7, 8, eos], "rejected_input_ids": [9, eos]},
        {"prompt_input_ids": [1, 5], "chosen_input_ids": [eos], "rejected_input_ids": [3, 4, 7, 8, eos]},
    ]
    batch = PreferenceCollator(pad_token_id=eos)(pairs)
    torch.manual_seed(0)
    logits = torch.randn(4, batch["input_ids"].shape[1], 11, requires_grad=True)
    out = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])

    rows = [(p["prompt_input_ids"], p["chosen_input_ids"]) for p in pairs]
    rows += [(p["prompt_input_ids"], p["rejected_input_ids"]) for p in pairs]
    for i, (prompt, completion) in enumerate(rows):
        expected = naive_logps(logits[i], batch["input_ids"][i], len(prompt), len(prompt) + len(completion))
        assert torch.allclose(out.logps[i].double(), expected, atol=1e-5)
        assert out.num_tokens[i] == len(completion)  # every EOS counted, padding never
        naive_mean_logit = sum(logits[i, t - 1].mean() for t in range(len(prompt), len(prompt) + len(completion)))
        assert torch.allclose(out.logits_sum[i], naive_mean_logit, atol=1e-5)

    # Gradients agree too.
    out.logps.sum().backward()
    fast_grad = logits.grad.clone()
    logits.grad = None
    sum(
        naive_logps(logits[i], batch["input_ids"][i], len(p), len(p) + len(c)) for i, (p, c) in enumerate(rows)
    ).backward()
    assert torch.allclose(fast_grad, logits.grad.float(), atol=1e-6)


def test_prompt_and_padding_never_count():
    batch = PreferenceCollator(pad_token_id=0)(
        [{"prompt_input_ids": [1, 2, 3], "chosen_input_ids": [4], "rejected_input_ids": [5, 6, 7, 8]}]
    )
    logits = torch.randn(2, batch["input_ids"].shape[1], 9)
    base = sequence_logps(logits, batch["input_ids"], batch["completion_mask"]).logps
    # Changing logits that predict prompt tokens, or that sit at the last position / on padding, changes nothing.
    logits[:, :2] += 100.0
    logits[0, 4:] -= 50.0  # chosen row: tokens 0..3 real, 4.. padding
    assert torch.allclose(sequence_logps(logits, batch["input_ids"], batch["completion_mask"]).logps, base)


def _pairs_batch():
    pairs = [
        {"prompt_input_ids": [1, 5], "chosen_input_ids": [7, 8, 9, 2], "rejected_input_ids": [3, 2]},
        {"prompt_input_ids": [1], "chosen_input_ids": [4, 2], "rejected_input_ids": [6, 6, 6, 6, 2]},
    ]
    batch = PreferenceCollator(pad_token_id=0)(pairs)
    torch.manual_seed(1)
    return pairs, batch, torch.randn(4, batch["input_ids"].shape[1], 11, dtype=torch.float64)


def test_length_desensitized_sums_match_a_loop():
    pairs, batch, logits = _pairs_batch()
    alpha = 0.3
    out = sequence_logps(logits, batch["input_ids"], batch["completion_mask"], ld_alpha=alpha)
    rows = [(p["prompt_input_ids"], p["chosen_input_ids"]) for p in pairs]
    rows += [(p["prompt_input_ids"], p["rejected_input_ids"]) for p in pairs]
    for i, (prompt, completion) in enumerate(rows):
        pair = pairs[i % 2]
        shared = min(len(pair["chosen_input_ids"]), len(pair["rejected_input_ids"]))
        expected = 0.0
        for k in range(len(completion)):
            t = len(prompt) + k
            logp = torch.log_softmax(logits[i, t - 1], -1)[batch["input_ids"][i, t]]
            expected += logp if k < shared else alpha * logp
        assert torch.allclose(out.logps[i], expected)
        assert torch.allclose(
            out.raw_logps[i], naive_logps(logits[i], batch["input_ids"][i], len(prompt), len(prompt) + len(completion))
        )
    plain = sequence_logps(logits, batch["input_ids"], batch["completion_mask"], ld_alpha=1.0)
    assert torch.allclose(plain.logps, plain.raw_logps)


def test_wpo_log_weights_match_a_loop():
    pairs, batch, logits = _pairs_batch()
    out = sequence_logps(logits, batch["input_ids"], batch["completion_mask"], with_wpo=True)
    for i in range(4):
        positions = batch["completion_mask"][i].nonzero().flatten().tolist()
        total = 0.0
        for t in positions:
            p = torch.softmax(logits[i, t - 1], -1)
            total += torch.log(p[batch["input_ids"][i, t]]) - torch.log((p**2).sum())
        assert torch.allclose(out.wpo_log_weights[i], total / len(positions))


def test_the_reference_computes_with_the_module_options(tiny_model_dir, monkeypatch):
    """The module passes its LogpsOptions to the reference strategy's call, not only to the policy's."""
    from lightning_dpo import DPOModule
    from lightning_dpo.logps import LogpsOptions

    seen = []

    def recording(model, batch, *, options, **kwargs):
        seen.append(options)
        return completion_logps(model, batch, options=options, **kwargs)

    monkeypatch.setattr("lightning_dpo.reference.frozen.completion_logps", recording)
    options = {"fused_head": False, "chunk_size": 7, "padding_free": False, "share_prompt": False}
    module = DPOModule(model_name_or_path=str(tiny_model_dir), logps=options)
    module.configure_model()
    pair = {"prompt_input_ids": [1, 5, 6], "chosen_input_ids": [7, 2], "rejected_input_ids": [8, 9, 2]}
    module.dpo_step(PreferenceCollator(pad_token_id=0)([pair]))
    assert seen == [LogpsOptions(**options)]


def test_sums_over_sequences_match_the_padded_sums():
    """The fast path's per-token -> per-sequence sums (LD-DPO, WPO, logits) equal sequence_logps's."""
    from lightning_dpo.logps import sums_over_sequences
    from lightning_dpo.ops.fused_head import reference_head_logps
    from lightning_dpo.ops.packing import token_layout

    pairs, batch, logits = _pairs_batch()
    layout = token_layout(batch)
    selected = logits[layout.rows, layout.cols]  # (K, V): the logits at the target-predicting positions
    identity = torch.eye(selected.shape[1], dtype=selected.dtype)
    head = reference_head_logps(selected, identity, None, layout.labels, with_wpo=True)
    for ld_alpha in (None, 0.3):
        fast = sums_over_sequences(head, layout, ld_alpha=ld_alpha)
        slow = sequence_logps(logits, batch["input_ids"], batch["completion_mask"], ld_alpha=ld_alpha, with_wpo=True)
        for a, b in zip(fast, slow):
            if a is not None:
                assert torch.allclose(a.to(b.dtype), b)
