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
   negation), at equal rates, so that the taskless input `sentence: S`
   leaves open which answer is wanted;
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
checkpoint; the frozen copy is made atomically. A seed fixes the
initialisation, the data order and the noise, so the same seed on the same
software and processor type writes the same bytes.

`<cache_dir>/recipe.json` records the recipe's fingerprint (`fingerprint`: a
sha256 over everything that defines the build: architecture, stages,
mixture rates, constructed tasks, text, optimizer, seed, `RECIPE_VERSION`),
each stage's steps, seconds and final loss, and the frozen checkpoint's step
and sha256 over its files (`checkpoint_digest`). `verified_checkpoint` finds
a frozen model in a build directory, or in a shipped copy (`SHIPPED_DIR`:
`recipe.json` beside `checkpoint_<step>/`), only when both agree with the
current recipe and the files on disk.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any, Mapping, Optional, Sequence

import seqio

from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import pretraining
from prompt_tuning.data import pretraining_tasks
from prompt_tuning.data import sentence_tasks
from prompt_tuning.data import text_files
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import t5
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import data as train_data
from prompt_tuning.training import optimizers
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings
from prompt_tuning.training import state
from prompt_tuning.training import trainer

_log = logging.getLogger(__name__)

MODEL_GIN = "models/t5_1_1_mini.gin"
MULTITASK_MIXTURE = "sst2_multitask_v001"
SPAN_CORRUPTION_TASK = "recipe_span_corruption"
PREFIX_LM_TASK = "recipe_prefix_lm"
RECIPE_FILE = "recipe.json"
FROZEN_DIR = "frozen"
# The recipe's output as shipped in the project's shared/ folder (relative
# to it): `recipe.json` and `checkpoint_<step>/` side by side.
SHIPPED_DIR = "models/t5_1_1_mini_frozen"
# Part of the fingerprint: bump it when a change to the code a build runs
# (not to the settings below, which the fingerprint reads) changes its bytes.
RECIPE_VERSION = 2


def build_config(config: config_lib.T5Config) -> config_lib.T5Config:
  """The architecture as the build trains it: without dropout, and with the
  original's literal attention (`attention_layout='t5x'`), as the build runs
  at fixed shapes (no length buckets): a rebuild is the shipped model byte
  for byte whatever the library's faster defaults."""
  return dataclasses.replace(config, dropout_rate=0.0, attention_layout="t5x")

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
    Stage("multitask", MULTITASK_MIXTURE, {"inputs": 48, "targets": 4}, 3000,
          64, eval_task="glue_sst2_v002",
          eval_feature_lengths={"inputs": 96, "targets": 4}),
)

# T5's pretraining optimizer: Adafactor with parameter scaling and the
# inverse-square-root schedule base / sqrt(max(step, warm-up)). The recipe's
# rate is 1 / sqrt(2500) = 0.02 for its first 2,500 steps, then decays to
# 1 / sqrt(3600) = 0.0167 at its last.
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


def fingerprint(config: config_lib.T5Config, stages: Sequence[Stage],
                seed: int) -> str:
  """sha256 over what defines a build: equal fingerprints, the same model
  (the same bytes on the same software and processor; XLA's CPU kernels
  round differently on other processors). Mixtures' tasks and rates are read
  from the registry."""

  def composition(name: str) -> Any:
    task = train_data.get_task(name)
    if isinstance(task, seqio.Mixture):
      return [[t.name, task.get_rate(t)] for t in task.tasks]
    return name

  spec = {
      "version": RECIPE_VERSION, "seed": seed,
      "config": dataclasses.asdict(build_config(config)),
      "stages": [{**dataclasses.asdict(stage),
                  "composition": composition(stage.task)}
                 for stage in stages],
      "text": PRETRAINING_TEXT,
      "constructed_tasks": sentence_tasks.definition(),
      "optimizer": [BASE_LEARNING_RATE, WARMUP_STEPS],
  }
  encoded = json.dumps(spec, sort_keys=True, default=str).encode()
  return hashlib.sha256(encoded).hexdigest()


def checkpoint_digest(path: str) -> str:
  """sha256 over a checkpoint's files but its checksum manifest (the same
  number as `cd PATH && find . -type f ! -path ./checksums.json |
  LC_ALL=C sort | xargs sha256sum | sha256sum`): a copy shipped before
  T5X exports held a manifest (`integrity.MANIFEST_NAME`) has the digest of
  a rebuild that holds one."""
  names = []
  for root, _, files in os.walk(path):
    names += ["./" + os.path.relpath(os.path.join(root, name), path)
              for name in files]
  names = [n for n in names if n != f"./{integrity.MANIFEST_NAME}"]
  lines = []
  for name in sorted(names, key=os.fsencode):
    h = hashlib.sha256()
    with open(os.path.join(path, name), "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    lines.append(f"{h.hexdigest()}  {name}\n")
  return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_recipe(directory: str) -> dict[str, Any]:
  """`recipe.json` of a build (or a shipped copy); `{}` when absent."""
  path = os.path.join(directory, RECIPE_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_recipe(directory: str, recipe: Mapping[str, Any]) -> None:
  """Writes `recipe.json` atomically (a kill leaves the old or the new)."""
  run_dir.write_atomically(os.path.join(directory, RECIPE_FILE),
                           json.dumps(recipe, indent=2, default=float))


def verified_checkpoint(directory: str,
                        recipe_fingerprint: str) -> tuple[Optional[str], str]:
  """The frozen checkpoint in `directory` (a build directory, its
  `FROZEN_DIR/checkpoint_<step>`, or a shipped copy, `checkpoint_<step>`
  beside `recipe.json`) if it is what the recipe of `recipe_fingerprint`
  builds and its files are intact.

  Returns:
    `(path, '')`, or `(None, why not)`: one clause naming what is missing or
    differs.
  """
  recipe = read_recipe(directory)
  if not recipe:
    return None, f"{os.path.join(directory, RECIPE_FILE)} does not exist"
  if "fingerprint" not in recipe:
    return None, (f"{directory} was built by an earlier recipe (its "
                  f"{RECIPE_FILE} records no fingerprint)")
  if recipe["fingerprint"] != recipe_fingerprint:
    return None, (f"{directory} holds a build of another recipe (fingerprint "
                  f"{str(recipe.get('fingerprint'))[:12]}, this code's is "
                  f"{recipe_fingerprint[:12]})")
  frozen = recipe.get("frozen")
  if not frozen:
    return None, f"the build in {directory} is not finished"
  name = t5x.checkpoint_name(frozen["step"])
  for path in (os.path.join(directory, FROZEN_DIR, name),
               os.path.join(directory, name)):
    if os.path.isdir(path):
      digest = checkpoint_digest(path)
      if digest != frozen["sha256"]:
        return None, (f"the files of {path} are not the ones its "
                      f"{RECIPE_FILE} records (sha256 {digest[:12]} vs "
                      f"{frozen['sha256'][:12]}): damaged or changed")
      return path, ""
  return None, f"{directory} has no {name}"


def _export(cache_dir: str, stage: Stage) -> Optional[str]:
  """The T5X checkpoint a finished stage left, or None."""
  directory = os.path.join(cache_dir, stage.name)
  steps = t5x.checkpoint_steps(directory) if os.path.isdir(directory) else {}
  return str(steps[max(steps)]) if steps else None


def _freeze(cache_dir: str, exported: str) -> str:
  """Copies the last stage's export to `FROZEN_DIR/` atomically (a copy cut
  short by a kill is never taken for the model, and is removed by the next
  call: `run_dir.replace_tree`); the copy's digest must be the export's.
  Returns its path."""
  frozen = os.path.join(cache_dir, FROZEN_DIR)
  name = os.path.basename(exported)

  def verify(tmp: str) -> None:
    if checkpoint_digest(os.path.join(tmp, name)) != checkpoint_digest(
        exported):
      raise OSError(f"The copy of {exported} differs from it (disk full or "
                    "failing?); nothing was replaced. Free space and re-run.")

  run_dir.replace_tree(
      frozen, lambda tmp: shutil.copytree(exported, os.path.join(tmp, name)),
      verify)
  return os.path.join(frozen, name)


def build(cache_dir: str, config: config_lib.T5Config, *, shared_dir: str,
          seed: int = 0, stages: Sequence[Stage] = STAGES,
          progress: bool = True,
          on_stage: Optional[Any] = None) -> str:
  """Runs the recipe into `cache_dir`; returns the frozen checkpoint's path.

  A build already complete in `cache_dir` (`verified_checkpoint`) is
  returned as it is; an interrupted one goes on from its last finished stage.

  Args:
    cache_dir: where every stage's run and export, the frozen checkpoint and
      `recipe.json` go.
    config: the model's architecture (`models/t5_1_1_mini.gin`'s T5Config).
    shared_dir: the project's `shared/` folder (its `data/` holds the text
      and GLUE's SST-2 files).
    seed: initialisation, data order, noise.
    stages: the training stages, in order.
    progress: tqdm bars.
    on_stage: called with `(stage name, its recipe.json row)` after each
      stage this call trains.

  Raises:
    ValueError: `cache_dir` holds a build of another recipe.
  """
  register_tasks(shared_dir)
  recipe_fingerprint = fingerprint(config, stages, seed)
  done, _ = verified_checkpoint(cache_dir, recipe_fingerprint)
  if done:
    return done
  recipe = read_recipe(cache_dir)
  if recipe and recipe.get("fingerprint") != recipe_fingerprint:
    raise ValueError(
        f"{cache_dir} holds a build of another recipe (its {RECIPE_FILE} "
        f"records fingerprint {recipe.get('fingerprint')}, this code's is "
        f"{recipe_fingerprint}); build into another directory or delete it.")
  os.makedirs(cache_dir, exist_ok=True)
  model = EncoderDecoderModel(t5.Transformer(build_config(config)))
  table = recipe.get("stages", {})
  previous = None
  for stage in stages:
    exported = _export(cache_dir, stage)
    if exported is None:
      _log.info("Recipe stage %s: %d steps of %s.", stage.name,
                stage.train_steps, stage.task)
      start = time.time()
      eval_cfg = None if stage.eval_task is None else run_settings.EvalConfig(
          run_settings.DatasetConfig(
              stage.eval_task,
              stage.eval_feature_lengths or stage.feature_lengths,
              "validation", stage.batch_size, length_buckets=None))
      result = trainer.train(
          model=model,
          train_dataset_cfg=run_settings.DatasetConfig(
              stage.task, stage.feature_lengths, "train", stage.batch_size,
              length_buckets=None),
          train_steps=stage.train_steps,
          model_dir=os.path.join(cache_dir, stage.name),
          initial_checkpoint_path=previous, eval_cfg=eval_cfg,
          checkpoint_cfg=run_settings.CheckpointConfig(
              period=stage.train_steps, keep=1, export_t5x=True),
          trainable_patterns=(".*",), allow_all_trainable=True,
          optimizer=optimizers.pretraining_adafactor(BASE_LEARNING_RATE,
                                                     WARMUP_STEPS),
          optimizer_step=state.OPTIMIZER_STEP_RESTORED, seed=seed,
          log_period=50, progress=progress)
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
      _write_recipe(cache_dir, {"fingerprint": recipe_fingerprint,
                                "seed": seed, "stages": table})
      _log.info("Recipe stage %s done: %s", stage.name, table[stage.name])
      if on_stage is not None:
        on_stage(stage.name, table[stage.name])
    previous = exported
  frozen = _freeze(cache_dir, previous)
  step = max(t5x.checkpoint_steps(os.path.dirname(frozen)))
  _write_recipe(cache_dir, {
      "fingerprint": recipe_fingerprint, "seed": seed, "stages": table,
      "frozen": {"step": step, "sha256": checkpoint_digest(frozen)}})
  return frozen
