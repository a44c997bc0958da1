"""Build the bundled tiny SFT model: a byte-level BPE tokenizer and a ~1.4M parameter Llama.

DPO starts from a supervised (SFT) model, so this script makes one for the "polite assistant"
task: it trains the tokenizer on the train text, then trains the model on prompt + chosen *and*
prompt + rejected, so the SFT model answers correctly but politely or rudely about half and half
(DPO should then move it towards polite).  With the same arguments on the same machine the run
is deterministic: ``model.safetensors`` and ``tokenizer.json`` come out byte-identical.

    python scripts/build_tiny_model.py --data lightning_dpo/assets/data/polite \\
        --out lightning_dpo/assets/models/tiny-polite-sft --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Set before tokenizers/torch start threads: one fixed thread layout keeps float sums in a fixed
# order, and tokenizers' own thread pool is not needed for a few thousand short lines.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from lightning_dpo.tasks.politeness import is_polite  # noqa: E402

DEFAULT_DATA = "lightning_dpo/assets/data/polite"
DEFAULT_OUT = "lightning_dpo/assets/models/tiny-polite-sft"
VOCAB_SIZE = 1024
MAX_LENGTH = 256
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE (no unknown tokens, exact round trip) with a Llama-like BOS post-processor."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    # Prepend BOS like Llama tokenizers; EOS is left to the caller (training appends it).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
    )


def check_tokenizer(out: Path, texts: list[str]) -> PreTrainedTokenizerFast:
    """Reload the saved tokenizer and check specials and the exact round trip on all texts."""
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tok("x")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids, ids
    assert tok.bos_token_id not in tok("x", add_special_tokens=False)["input_ids"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, text
    return tok


def tokenize_examples(tok, records: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) for prompt+chosen and prompt+rejected; loss on the completion + EOS."""
    examples = []
    for rec in records:
        prompt_ids = tok(rec["prompt"])["input_ids"]  # with BOS
        for completion in (rec["chosen"], rec["rejected"]):
            completion_ids = tok(completion, add_special_tokens=False)["input_ids"]
            completion_ids = completion_ids + [tok.eos_token_id]
            input_ids = (prompt_ids + completion_ids)[:MAX_LENGTH]
            labels = ([-100] * len(prompt_ids) + completion_ids)[:MAX_LENGTH]
            examples.append((input_ids, labels))
    return examples


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example in the batch; pads are masked and ignored by the loss."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(model, examples, *, steps: int, batch_size: int, lr: float, seed: int, pad_id: int):
    """Plain SFT loop; returns the mean loss over the last (up to) 20 steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 20)
    order: list[int] = []
    recent: list[float] = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:  # new epoch: a fresh seeded permutation
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch_idx, order = order[:batch_size], order[batch_size:]
        batch = collate([examples[i] for i in batch_idx], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent = (recent + [loss.item()])[-20:]
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {group['lr']:.2e}", flush=True)
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def complete(model, tok, prompts: list[str], *, sample: bool, seed: int, max_new_tokens: int = 48):
    """Completions for a batch of prompts (left-padded), pure temperature-1 sampling or greedy."""
    tok.padding_side = "left"  # decoder-only generation continues from the right edge
    enc = tok(prompts, return_tensors="pt", padding=True)
    tok.padding_side = "right"
    torch.manual_seed(seed)
    kwargs = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    out = model.generate(**enc, max_new_tokens=max_new_tokens, **kwargs)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


MODEL_CARD = """\
# tiny-polite-sft

A tiny Llama-style causal LM ({n_params:,} parameters, float32) supervised-fine-tuned on the
bundled "polite assistant" preference data, where chosen answers politely and rejected answers
rudely, both with the same correct fact:

    {data}

It was trained on **both** completions of every pair, so it answers factually but politely or
rudely about half and half: the default starting point (SFT / reference model) for the
`lightning_dpo` demo, where DPO should make it polite.

- Architecture: `LlamaForCausalLM`, hidden 128, 6 layers, 4 heads (4 KV heads), MLP 384,
  tied embeddings, max 256 positions.
- Tokenizer: byte-level BPE, vocab {vocab}, trained on the train split; `<s>` (BOS, prepended
  automatically), `</s>` (EOS, appended to training completions), `<pad>`.
- Training: {steps} steps of AdamW (peak lr {lr}, warmup + cosine), batch {batch_size}, loss on
  completion tokens only, {n_examples} examples (prompt+chosen and prompt+rejected).
- Final train loss (mean of last 20 steps): {loss:.4f}
- Fraction of temperature-1 samples judged polite by `lightning_dpo.tasks.is_polite`
  ({n_eval} val prompts): {polite:.2f}
- `model.safetensors` sha256: `{sha}`

Reproduce (deterministic on the same machine; torch {torch_version}, transformers
{tf_version}):

```
{command}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder with train.jsonl/val.jsonl")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument(
        "--max-train-records",
        type=int,
        default=None,
        help="use only the first K train records for SFT (for quick tests)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--num-eval", type=int, default=100, help="val prompts sampled to measure the polite fraction")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    # Determinism: fixed seeds, deterministic kernels and one fixed thread count.
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    data, out = Path(args.data), Path(args.out)
    train_records = read_jsonl(data / "train.jsonl")
    val_records = read_jsonl(data / "val.jsonl")
    texts = [r[k] for r in train_records for k in ("prompt", "chosen", "rejected")]

    # The tokenizer always sees the full train split (cheap), so --max-train-records changes
    # only the SFT data, not the vocabulary.
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(texts).save_pretrained(out)
    # transformers 5 records its new class name, which 4.x cannot resolve; the generic fast class
    # name loads the same tokenizer.json in both.
    tok_config_path = out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    val_texts = [r[k] for r in val_records for k in ("prompt", "chosen", "rejected")]
    tok = check_tokenizer(out, texts + val_texts + [r["prompt"] + r["chosen"] for r in val_records])

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=384,
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(args.seed)  # the weight init depends only on the seed
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")

    sft_records = train_records[: args.max_train_records]
    examples = tokenize_examples(tok, sft_records)
    t0 = time.perf_counter()
    loss = train(
        model,
        examples,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        pad_id=tok.pad_token_id,
    )
    print(f"SFT: {args.steps} steps in {time.perf_counter() - t0:.1f}s, final loss {loss:.4f}")

    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=48,
    )
    # float32 and safetensors (the default format of save_pretrained).
    model.save_pretrained(out)
    sha = sha256(out / "model.safetensors")

    prompts = [r["prompt"] for r in val_records]
    n_eval = min(max(3, args.num_eval), len(prompts))
    greedy = complete(model, tok, prompts[:3], sample=False, seed=args.seed)
    sampled = complete(model, tok, prompts[:n_eval], sample=True, seed=args.seed)
    for prompt, text in zip(prompts[:3], greedy):
        print(f"[greedy]  {prompt!r} -> {text!r}")
    for prompt, text in zip(prompts[:3], sampled):
        print(f"[sampled] {prompt!r} -> {text!r}")
    polite = sum(is_polite(t) for t in sampled) / n_eval
    print(f"polite fraction of {n_eval} sampled val completions: {polite:.2f}")

    command = (
        f"python scripts/build_tiny_model.py --data {args.data} --out {args.out} "
        f"--seed {args.seed} --steps {args.steps}"
    )
    if args.max_train_records is not None:
        command += f" --max-train-records {args.max_train_records}"
    if args.batch_size != 32 or args.lr != 2e-3 or args.num_eval != 100:
        command += f" --batch-size {args.batch_size} --lr {args.lr} --num-eval {args.num_eval}"
    card = MODEL_CARD.format(
        n_params=n_params,
        data=args.data,
        vocab=len(tok),
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        n_examples=len(examples),
        loss=loss,
        n_eval=n_eval,
        polite=polite,
        sha=sha,
        torch_version=torch.__version__,
        tf_version=__import__("transformers").__version__,
        command=command,
    )
    (out / "README.md").write_text(card, encoding="utf-8", newline="\n")
    print(f"model.safetensors sha256: {sha}")
    print(f"tokenizer.json sha256: {sha256(out / 'tokenizer.json')}")
    print(f"total time {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
