"""Builds a small frozen T5 that knows something, on 2 CPU cores.

No pretrained T5 can reach these machines, so this recipe makes one, the way
the paper's models were made, at toy scale:

1. `pretrain`: T5 1.1's span corruption (noise density 0.15, mean span 3)
   from random initialisation, on the real English text under `shared/data`
   (SST-2 train sentences, SuperGLUE passages and sentences, MRPC sentences);
2. `lm_adapt`: the paper's LM adaptation, prefix LM on the same text,
   continuing from stage 1;
3. `multitask`: T5's supervised multi-task training with task names in the
   inputs (`prompt_tuning.tasks.sentences`'s `sst2_multitask_v001`): SST-2
   sentiment plus two tasks constructed on the same sentences (length,
   negation), so that the taskless input `sentence: S` leaves open which
   answer is wanted;
4. `freeze`: the final weights are written as a T5X checkpoint,
   `<cache_dir>/frozen/checkpoint_<step>`, which `INITIAL_CHECKPOINT_PATH`
   takes like any T5X checkpoint (model gin `models/t5_1_1_mini.gin`).

Every stage trains all parameters with `prompt_tuning.training.trainer.train`
(Adafactor with parameter scaling, T5's inverse-square-root schedule; the
step counter continues across stages, as T5X restores it), in its own run
directory `<cache_dir>/<stage>`, and hands its weights to the next stage as
a T5X checkpoint `<cache_dir>/<stage>/checkpoint_<step>` (the trainer's
`export_t5x`, written after the stage's last step). A stage whose T5X
checkpoint exists is skipped; one interrupted resumes from its own last
checkpoint. A seed fixes
the initialisation, the data order and the noise, so the same seed on the
same software writes the same bytes. `<cache_dir>/recipe.json` records each
stage's steps, seconds and final loss.
"""

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Mapping, Optional, Sequence

from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import pretraining
from prompt_tuning.data import pretraining_tasks
from prompt_tuning.data import text_files
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import t5
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import optimizers
from prompt_tuning.training import state
from prompt_tuning.training import trainer

_log = logging.getLogger(__name__)

MODEL_GIN = "models/t5_1_1_mini.gin"
MULTITASK_MIXTURE = "sst2_multitask_v001"
SPAN_CORRUPTION_TASK = "recipe_span_corruption"
PREFIX_LM_TASK = "recipe_prefix_lm"
RECIPE_FILE = "recipe.json"
FROZEN_DIR = "frozen"

# The English text of `shared/data` the model is pretrained on, as
# `prompt_tuning.data.text_files` specs relative to `shared/data`. SST-2's
# dev and test sentences are left out: SST-2 dev is what prompts are scored on.
PRETRAINING_TEXT: tuple[str, ...] = (
    "glue/SST-2/train.tsv:sentence",
    "glue/MRPC/msr_paraphrase_train.txt:#1 String",
    "glue/MRPC/msr_paraphrase_train.txt:#2 String",
    "super_glue/BoolQ/val.jsonl:passage",
    "super_glue/CB/train.jsonl:premise",
    "super_glue/COPA/train.jsonl:premise",
    "super_glue/MultiRC/train.jsonl:passage.text",
    "super_glue/RTE/train.jsonl:premise",
    "super_glue/RTE/train.jsonl:hypothesis",
    "super_glue/WiC/train.jsonl:sentence1",
    "super_glue/WiC/train.jsonl:sentence2",
    "super_glue/WSC/train.jsonl:text",
)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage of the recipe.

  Attributes:
    name: `pretrain`, `lm_adapt` or `multitask`; also its run directory.
    task: the SeqIO task or mixture it trains on.
    feature_lengths: `{'inputs', 'targets'}` lengths.
    train_steps: steps of this stage (the optimizer's step counter continues
      from the previous stage).
    batch_size: examples per step.
    eval_task: evaluated after the last step, if set.
    eval_feature_lengths: lengths for that evaluation.
  """
  name: str
  task: str
  feature_lengths: Mapping[str, int]
  train_steps: int
  batch_size: int
  eval_task: Optional[str] = None
  eval_feature_lengths: Optional[Mapping[str, int]] = None


# Span corruption of 64-token inputs: chunks of 67 tokens, 11-token targets.
_PRETRAIN_TARGETS = pretraining.span_corruption_lengths(64)[1]

STAGES: tuple[Stage, ...] = (
    Stage("pretrain", SPAN_CORRUPTION_TASK,
          {"inputs": 64, "targets": _PRETRAIN_TARGETS}, 400, 32),
    Stage("lm_adapt", PREFIX_LM_TASK, {"inputs": 32, "targets": 32}, 200, 32),
    Stage("multitask", MULTITASK_MIXTURE, {"inputs": 48, "targets": 4}, 1500,
          64, eval_task="glue_sst2_v002",
          eval_feature_lengths={"inputs": 96, "targets": 4}),
)

# T5's pretraining optimizer: Adafactor with parameter scaling and the
# inverse-square-root schedule base / sqrt(max(step, warm-up)). The recipe's
# warm-up covers its 2,100 steps: a constant rate of 1 / sqrt(2500) = 0.02.
BASE_LEARNING_RATE = 1.0
WARMUP_STEPS = 2500


def register_tasks(shared_dir: str) -> None:
  """Registers the span-corruption and prefix-LM tasks over the shared text.

  Raises:
    FileNotFoundError: naming the first missing text file.
  """
  data_dir = os.path.join(shared_dir, "data")
  specs = [os.path.join(data_dir, spec) for spec in PRETRAINING_TEXT]
  pretraining_tasks.add_span_corruption_task(
      SPAN_CORRUPTION_TASK, text_files.text_files_source(specs))
  pretraining_tasks.add_prefix_lm_task(
      PREFIX_LM_TASK, text_files.text_files_source(specs))


def frozen_checkpoint(cache_dir: str) -> Optional[str]:
  """The frozen model's `checkpoint_<step>` under `cache_dir`, if built."""
  frozen = os.path.join(cache_dir, FROZEN_DIR)
  if not os.path.isdir(frozen):
    return None
  steps = t5x.checkpoint_steps(frozen)
  return str(steps[max(steps)]) if steps else None


def read_recipe(cache_dir: str) -> dict[str, Any]:
  """`recipe.json` of a build: its stages' steps, seconds and losses."""
  with open(os.path.join(cache_dir, RECIPE_FILE)) as f:
    return json.load(f)


def _export(cache_dir: str, stage: Stage) -> Optional[str]:
  """The T5X checkpoint a finished stage left, or None."""
  directory = os.path.join(cache_dir, stage.name)
  steps = t5x.checkpoint_steps(directory) if os.path.isdir(directory) else {}
  return str(steps[max(steps)]) if steps else None


def build(cache_dir: str, config: config_lib.T5Config, *, shared_dir: str,
          seed: int = 0, stages: Sequence[Stage] = STAGES,
          progress: bool = True) -> str:
  """Runs the recipe into `cache_dir`; returns the frozen checkpoint's path.

  A build already complete in `cache_dir` is returned as it is.

  Args:
    cache_dir: where every stage's run and export, the frozen checkpoint and
      `recipe.json` go.
    config: the model's architecture (`models/t5_1_1_mini.gin`'s T5Config).
    shared_dir: the project's `shared/` folder (its `data/` holds the text
      and GLUE's SST-2 files).
    seed: initialisation, data order, noise.
    stages: the training stages, in order.
    progress: tqdm bars.
  """
  done = frozen_checkpoint(cache_dir)
  if done:
    return done
  register_tasks(shared_dir)
  model = EncoderDecoderModel(t5.Transformer(
      dataclasses.replace(config, dropout_rate=0.0)))
  recipe_path = os.path.join(cache_dir, RECIPE_FILE)
  table = (read_recipe(cache_dir)["stages"]
           if os.path.exists(recipe_path) else {})
  previous = None
  for stage in stages:
    exported = _export(cache_dir, stage)
    if exported is None:
      _log.info("Recipe stage %s: %d steps of %s.", stage.name,
                stage.train_steps, stage.task)
      start = time.time()
      result = trainer.train(
          model=model, mixture_or_task_name=stage.task,
          task_feature_lengths=stage.feature_lengths,
          train_steps=stage.train_steps, batch_size=stage.batch_size,
          model_dir=os.path.join(cache_dir, stage.name),
          initial_checkpoint_path=previous, trainable_patterns=(".*",),
          allow_all_trainable=True, export_t5x=True,
          optimizer=optimizers.pretraining_adafactor(BASE_LEARNING_RATE,
                                                     WARMUP_STEPS),
          optimizer_step=state.OPTIMIZER_STEP_RESTORED, seed=seed,
          log_period=50, checkpoint_period=stage.train_steps,
          keep_checkpoints=1, eval_period=0,
          eval_mixture_or_task_name=stage.eval_task,
          eval_feature_lengths=stage.eval_feature_lengths,
          progress=progress)
      exported = _export(cache_dir, stage)
      evals = {task: metrics for by_step in result.eval_results.values()
               for task, metrics in by_step.items()}
      table[stage.name] = {
          "task": stage.task, "steps": stage.train_steps,
          "batch_size": stage.batch_size,
          "feature_lengths": dict(stage.feature_lengths),
          "seconds": round(time.time() - start, 1),
          "final_loss_per_token": round(
              float(result.metrics["loss_per_token"]), 4),
          "eval": evals, "checkpoint": os.path.relpath(exported, cache_dir)}
      with open(recipe_path, "w") as f:
        json.dump({"seed": seed, "stages": table}, f, indent=2,
                  default=float)
      _log.info("Recipe stage %s done: %s", stage.name, table[stage.name])
    previous = exported
  frozen = os.path.join(cache_dir, FROZEN_DIR)
  shutil.copytree(previous, os.path.join(frozen, os.path.basename(previous)))
  return frozen_checkpoint(cache_dir)
