#!/usr/bin/env bash
# The README's reward–KL frontier of the embedded default: DPO at three β values against Preferred-FT
# (SFT on the chosen completions), from the same SFT model, evaluated on the 200 held-out prompts.
# About 10 minutes on 2 CPU cores. Needs matplotlib for the PNG: pip install -e ".[plot]".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/frontier}
for BETA in 0.1 0.5 1.0; do
  lightning-dpo fit --model.loss.beta "$BETA" \
    --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name "beta-$BETA" \
    --trainer.callbacks+=lightning_dpo.HFExportCallback --trainer.callbacks.every_n_train_steps 25 \
    --trainer.enable_progress_bar false
done
python scripts/preferred_ft.py --save_dir "$OUT" --steps_per_export 25
lightning-dpo evaluate "$OUT"/beta-0.1 "$OUT"/beta-0.5 "$OUT"/beta-1.0 "$OUT"/preferred-ft embedded:tiny-polite-sft \
  --reference embedded:tiny-polite-sft --baseline embedded:tiny-polite-sft \
  --samples_per_prompt 2 --output_dir "$OUT"/evaluation
