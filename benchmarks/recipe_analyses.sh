#!/usr/bin/env bash
# The paper's analyses on the recipe's frozen mini T5 (docs/frozen_model.md, "The frozen
# model"): five SST-2 prompts (seeds 0-4) trained from the command line, their
# majority-vote ensemble, the nearest vocabulary neighbours of one prompt,
# two tasks served with two prompts in one batch, and the prompt length x
# initialiser ablation PNG (200 steps per cell).
#
#   bash benchmarks/recipe_analyses.sh [CACHE_DIR] [OUT_DIR]
#
# The frozen model is the main job's (`python -m prompt_tuning.main_job
# --build_only --cache_dir=CACHE_DIR`: the shipped copy when it is the current
# recipe's, else the build in CACHE_DIR, default ~/.cache/prompt_tuning, made
# there first if missing); results go to OUT_DIR (default
# /tmp/recipe_analyses): sst2_s<seed>/, negation/, ensemble.md,
# neighbors.md, served/, ablation/{results.csv,ablation.png}, summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-$HOME/.cache/prompt_tuning}
OUT=${2:-/tmp/recipe_analyses}
SHARED=${PROMPT_TUNING_SHARED:-../shared}
PY=${PYTHON:-python}
CKPT=$($PY -m prompt_tuning.main_job --build_only --cache_dir="$CACHE" | tail -1)
echo "frozen model: $CKPT"
export PROMPT_TUNING_GLUE_DIR=$SHARED/data/glue
export PROMPT_TUNING_VOCAB=$SHARED/models/t5_vocab/spiece.model
mkdir -p "$OUT"
SST2=taskless_glue_sst2_v200
NEGATION=taskless_sst2_negation_v001
MODEL=(--gin_file=models/t5_1_1_mini.gin)
PROMPT=(--gin_file=prompts/prompt.gin --gin.PROMPT_LENGTH=20)
EVAL=(--inputs_length=96 --targets_length=4 --batch_size=128)

train_prompt() {  # MODEL_DIR TASK LABELS SEED
  $PY -m prompt_tuning.train "${MODEL[@]}" \
    --gin_file=prompts/from_class_labels.gin --gin_file=runs/prompt_finetune.gin \
    --gin.MODEL_DIR="'$1'" --gin.MIXTURE_OR_TASK_NAME="'$2'" \
    --gin.INITIAL_CHECKPOINT_PATH="'$CKPT'" --gin.CLASS_LABELS="$3" \
    --gin.PROMPT_LENGTH=20 --gin.DROPOUT_RATE=0.0 --gin.SEED="$4" \
    --gin.TRAIN_STEPS=400 --gin.BATCH_SIZE=32 \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 88, 'targets': 4}" \
    --gin.EVAL_TASK_FEATURE_LENGTHS="{'inputs': 96, 'targets': 4}" \
    --gin.CHECKPOINT_PERIOD=400 --gin.EVAL_PERIOD=400 | tail -1
}

start=$(date +%s)
for seed in 0 1 2 3 4; do
  echo "seed $seed: $(train_prompt "$OUT/sst2_s$seed" $SST2 "('negative', 'positive')" $seed)"
done
echo "five prompts: $(( $(date +%s) - start )) s"

$PY scripts/ensemble_prompts.py "${MODEL[@]}" "${PROMPT[@]}" --checkpoint="$CKPT" \
  --task=$SST2 "${EVAL[@]}" --output="$OUT/ensemble.md" \
  --prompts="$OUT/sst2_s0,$OUT/sst2_s1,$OUT/sst2_s2,$OUT/sst2_s3,$OUT/sst2_s4"

$PY scripts/nearest_neighbors.py --prompt="$OUT/sst2_s0" --checkpoint="$CKPT" \
  --vocab="$PROMPT_TUNING_VOCAB" --task=$SST2 --k=5 --markdown="$OUT/neighbors.md"

echo "negation prompt: $(train_prompt "$OUT/negation" $NEGATION "('no', 'yes')" 0)"
$PY scripts/serve_mixture.py "${MODEL[@]}" "${PROMPT[@]}" --checkpoint="$CKPT" \
  --task_prompt=$SST2="$OUT/sst2_s0" --task_prompt=$NEGATION="$OUT/negation" \
  --split=validation "${EVAL[@]}" --output_dir="$OUT/served"

start=$(date +%s)
$PY scripts/prompt_ablation.py "${MODEL[@]}" --gin_file=prompts/prompt.gin \
  --checkpoint="$CKPT" --task=$SST2 --lengths=1,5,20 \
  --initializers=random_uniform,sampled_vocab,class_labels \
  --train_steps=200 --batch_size=32 --inputs_length=64 --targets_length=4 \
  --out_dir="$OUT/ablation"
echo "ablation: $(( $(date +%s) - start )) s"
