#!/usr/bin/env bash
# Phase-1 feasibility run of issue 14 (notes/onpolicy_task.md): build the reviews task's SFT model and
# on-policy pairs, then per seed train DPO at three β and Preferred-FT with the current main CLI, evaluate
# them and Best-of-N on the test prompts, and summarise. Run it under the shared lock:
#   flock /tmp/heavy.lock bash notes/onpolicy/feasibility.sh
# Times per step go to $OUT/times.tsv (wall seconds and process CPU seconds).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/onpolicy}
SEEDS=${SEEDS:-"0 1 2"}
BETAS=${BETAS:-"0.1 0.5 2.0"}
BUILD=${BUILD:-1}
mkdir -p "$OUT"
TIMES="$OUT/times.tsv"
timed() {  # timed NAME CMD...: run, append "NAME wall_s cpu_s rc" to $TIMES
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$OUT/.cpu" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local t1; t1=$(date +%s.%N)
  echo -e "$name\t$(echo "$t1 - $t0" | bc)\t$(awk '{print $1 + $2}' "$OUT/.cpu")\t$rc" | tee -a "$TIMES"
}
if [ "$BUILD" = 1 ]; then
  timed build_sft python scripts/build_reviews_sft.py --hidden 96 --layers 4 --steps 800
  timed make_pairs python scripts/make_reviews_pairs.py --k 4
  timed tests python -m pytest -q -p no:cacheprovider tests/tasks/test_reviews.py
fi
COMMON=(--model.model_name_or_path embedded:reviews-sft --data.dataset embedded:reviews
        --trainer.limit_val_batches 0 --trainer.enable_progress_bar false
        --trainer.callbacks+=lightning_dpo.HFExportCallback --trainer.callbacks.every_n_train_steps 25)
for SEED in $SEEDS; do
  D="$OUT/seed-$SEED"
  for BETA in $BETAS; do
    timed "seed$SEED-dpo-$BETA" lightning-dpo fit "${COMMON[@]}" --model.beta "$BETA" --seed_everything "$SEED" \
      --data.seed "$SEED" --trainer.logger.init_args.save_dir "$D" --trainer.logger.init_args.name "dpo-$BETA"
  done
  # scripts/preferred_ft.py fixes the data module's seed (42); the training order is the seed here, so pass
  # it through (phase 2: a --data_seed flag).
  timed "seed$SEED-pft" python -c "
import functools, sys
sys.path.insert(0, 'scripts')
import preferred_ft
preferred_ft.PreferenceDataModule = functools.partial(preferred_ft.PreferenceDataModule, seed=$SEED)
sys.argv = ['preferred_ft.py', '--model', 'embedded:reviews-sft', '--dataset', 'embedded:reviews',
            '--save_dir', '$D', '--name', 'pft', '--steps_per_export', '25', '--seed', '$SEED']
preferred_ft.main()"
  MODELS=(); LABELS=()
  for BETA in $BETAS; do MODELS+=("$D/dpo-$BETA"); LABELS+=("\"DPO beta=$BETA\""); done
  MODELS+=("$D/pft" embedded:reviews-sft); LABELS+=('"Preferred-FT"' '"SFT"')
  timed "seed$SEED-evaluate" lightning-dpo evaluate "${MODELS[@]}" --labels "[$(IFS=,; echo "${LABELS[*]}")]" \
    --reference embedded:reviews-sft --reward lightning_dpo.tasks.reviews.sentiment_reward \
    --dataset embedded:reviews --split test --num_prompts 200 --samples_per_prompt 2 --max_new_tokens 64 \
    --seed "$SEED" --output_dir "$D/evaluation" --plot false
  timed "seed$SEED-bon" python scripts/best_of_n.py --num-prompts 64 --n 1 4 16 64 --seed "$SEED" \
    --output "$D/best_of_n.csv"
  python scripts/onpolicy_frontier.py "$OUT" > "$OUT/summary.md" 2>&1
done
cat "$OUT/summary.md"
