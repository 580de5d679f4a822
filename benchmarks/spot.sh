#!/usr/bin/env bash
# Soft prompt transfer (SPoT, Vu et al. 2022) on the recipe's frozen mini T5
# (docs/frozen_model.md): does starting a task's prompt from another task's
# prompt help, and does the similarity of the prompts say which source helps?
#
#   bash benchmarks/spot.sh [CACHE_DIR] [OUT_DIR]
#
# 1. Source prompts (SOURCE_STEPS=400 steps, batch 32, 20 tokens, each from
#    its own class labels): the recipe's three tasks on SST-2's sentences,
#    taskless (`sentence: S`) -- sst2 (negative/positive), length
#    (short/long), negation (no/yes) -- and `mixture`, T5's multi-task
#    mixture of the three (`sst2_multitask_v001`, task names in the inputs,
#    initialised from all six class labels).
# 2. For each target task, its prompt trained (TARGET_STEPS=150 steps,
#    evaluated on the whole validation split every EVAL_PERIOD=5 steps and
#    before the first, `EvalConfig.before_training`) from its class labels
#    (the paper's best initialiser, the baseline), and from each source
#    prompt of another task (`prompts/from_run.gin`), for each of
#    SEEDS="0 1". Finished runs are skipped, so a re-run with more seeds
#    trains only the new ones.
# 3. `benchmarks/spot_report.py`: per target, the accuracy before training,
#    the steps to reach 98% of the baseline's final accuracy, the final and
#    the mean accuracy over the evaluations (the curve's area, the measure of
#    "helps" used below); the similarity matrix of the prompts (heat map) and,
#    for each target, its candidate sources ranked by each SPoT measure
#    against the target's own baseline prompt, next to the order by help.
#
# Writes OUT_DIR (default /tmp/spot): sources/<name>/, targets/<task>/
# <init>_s<seed>/ (training runs), spot.md, spot.json, similarity_pooled.png,
# similarity_max.png. About 5 minutes for the sources and 18 per seed on 2
# CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-$HOME/.cache/prompt_tuning}
OUT=${2:-/tmp/spot}
SHARED=${PROMPT_TUNING_SHARED:-../shared}
PY=${PYTHON:-python}
SOURCE_STEPS=${SOURCE_STEPS:-400}
TARGET_STEPS=${TARGET_STEPS:-150}
EVAL_PERIOD=${EVAL_PERIOD:-5}
SEEDS=${SEEDS:-"0 1"}
CKPT=$($PY -m prompt_tuning.main_job --build_only --cache_dir="$CACHE" | tail -1)
echo "frozen model: $CKPT"
export PROMPT_TUNING_GLUE_DIR=$SHARED/data/glue
export PROMPT_TUNING_VOCAB=$SHARED/models/t5_vocab/spiece.model
mkdir -p "$OUT/sources" "$OUT/targets"

declare -A TASK=([sst2]=taskless_glue_sst2_v200
                 [length]=taskless_sst2_length_v001
                 [negation]=taskless_sst2_negation_v001
                 [mixture]=sst2_multitask_v001)
declare -A LABELS=([sst2]="('negative', 'positive')"
                   [length]="('short', 'long')"
                   [negation]="('no', 'yes')"
                   [mixture]="('negative', 'positive', 'short', 'long', 'no', 'yes')")
TARGETS=(sst2 length negation)
SOURCES=(sst2 length negation mixture)

train() {  # MODEL_DIR NAME STEPS EVAL_PERIOD SEED [gin flags...]
  local dir=$1 name=$2 steps=$3 period=$4 seed=$5
  shift 5
  $PY -m prompt_tuning.train --gin_file=models/t5_1_1_mini.gin "$@" \
    --gin_file=runs/prompt_finetune.gin \
    --gin.MODEL_DIR="'$dir'" --gin.MIXTURE_OR_TASK_NAME="'${TASK[$name]}'" \
    --gin.INITIAL_CHECKPOINT_PATH="'$CKPT'" \
    --gin.PROMPT_LENGTH=20 --gin.DROPOUT_RATE=0.0 --gin.SEED="$seed" \
    --gin.TRAIN_STEPS="$steps" --gin.BATCH_SIZE=32 \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 88, 'targets': 4}" \
    --gin.EVAL_TASK_FEATURE_LENGTHS="{'inputs': 96, 'targets': 4}" \
    --gin.CHECKPOINT_PERIOD="$steps" --gin.EVAL_PERIOD="$period" \
    --gin.trainer.train.progress=False | tail -1
}

start=$(date +%s)
for source in "${SOURCES[@]}"; do
  echo "source $source: $(train "$OUT/sources/$source" "$source" \
    "$SOURCE_STEPS" "$SOURCE_STEPS" 0 \
    --gin_file=prompts/from_class_labels.gin \
    --gin.CLASS_LABELS="${LABELS[$source]}")"
done
echo "sources: $(( $(date +%s) - start )) s"

start=$(date +%s)
for target in "${TARGETS[@]}"; do
  for seed in $SEEDS; do
    echo "target $target from class_labels, seed $seed: $(train \
      "$OUT/targets/$target/class_labels_s$seed" "$target" "$TARGET_STEPS" \
      "$EVAL_PERIOD" "$seed" --gin_file=prompts/from_class_labels.gin \
      --gin.CLASS_LABELS="${LABELS[$target]}" \
      --gin.EvalConfig.before_training=True)"
    for source in "${SOURCES[@]}"; do
      [[ $source == "$target" ]] && continue
      echo "target $target from $source, seed $seed: $(train \
        "$OUT/targets/$target/${source}_s$seed" "$target" "$TARGET_STEPS" \
        "$EVAL_PERIOD" "$seed" --gin_file=prompts/from_run.gin \
        --gin.PROMPT_RUN="'$OUT/sources/$source'" \
        --gin.EvalConfig.before_training=True)"
    done
  done
done
echo "targets: $(( $(date +%s) - start )) s"

$PY benchmarks/spot_report.py --out_dir="$OUT" --seeds="${SEEDS// /,}"
