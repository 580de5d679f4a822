"""Steering a frozen T5 with a soft prompt: the README's main job, as a
library (`prompt_tuning.main_job` is its command line).

1. Finds the frozen mini T5 of `prompt_tuning.recipes.frozen_model`: the
   copy shipped in `shared/` when it is what the current recipe builds
   (`frozen_model.verified_checkpoint`), else a build in the cache directory,
   building it there once (pretrained with span corruption, LM-adapted, then
   trained multi-task with task names in the inputs on SST-2 and tasks
   constructed on the same sentences).
2. Scores the frozen model on SST-2 dev (872 sentences) two ways: with the
   taskless input `sentence: S`, which does not say which of its tasks is
   wanted (`taskless_glue_sst2_v200`), and with T5's task name
   (`glue_sst2_v002`, `sst2 sentence: S`).
3. Trains a soft prompt on SST-2 train with the taskless input, the model
   frozen (the paper's Adafactor, lr 0.3; the prompt initialised from the
   class labels), and scores it on the same 872 sentences.

Everything it makes lives under `<work_dir>/steering_<sha12>/` (sha12: the
frozen checkpoint's sha256, so another frozen model never meets these
results): `eval_no_prompt/` and `eval_task_name/` (each `metrics.json`), and
`sst2_prompt/` (a training run). Run again, it reads the finished results
back; an interrupted run goes on where it stopped.
"""

import dataclasses
import json
import os
import time
from typing import Any, Optional, Sequence

import numpy as np

from prompt_tuning.data import glue_tasks
from prompt_tuning.data import vocab
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import t5
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import models as prompt_models
from prompt_tuning.recipes import frozen_model
from prompt_tuning.training import data
from prompt_tuning.training import evaluation
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings
from prompt_tuning.training import state
from prompt_tuning.training import trainer


TASKLESS = glue_tasks.task_name("sst2", taskless=True)
PREFIXED = glue_tasks.task_name("sst2", taskless=False)
# SST-2 train's longest phrase is 85 tokens with `sentence:` and EOS; dev's
# longest sentence 79 with `sst2 sentence:`: nothing is truncated.
TRAIN_LENGTHS = {"inputs": 88, "targets": 4}
EVAL_LENGTHS = {"inputs": 96, "targets": 4}
PROMPT_LENGTH = 20
PROMPT_STEPS = 400
PROMPT_BATCH_SIZE = 32
EVAL_BATCH_SIZE = 128
METRICS_FILE = "metrics.json"
PROMPT_RUN = "sst2_prompt"
# What the frozen model is scored with: result key -> task.
FROZEN_EVALS = {"no_prompt": TASKLESS, "task_name": PREFIXED}


@dataclasses.dataclass(frozen=True)
class FrozenModel:
  """The frozen checkpoint the job steers.

  Attributes:
    path: its `checkpoint_<step>` directory.
    sha256: `frozen_model.checkpoint_digest` of it.
  """
  path: str
  sha256: str


def _say(line: str) -> None:
  print(line, flush=True)


def _print_stage(name: str, row: dict[str, Any]) -> None:
  _say(f"  stage {name:9s} {row['steps']:5d} steps  {row['seconds']:7.1f} s  "
       f"final loss/token {row['final_loss_per_token']:.3f}")


def find_or_build(cache_dir: str, shared_dir: str,
                  config: config_lib.T5Config, *, seed: int = 0,
                  stages: Sequence[frozen_model.Stage] = frozen_model.STAGES,
                  shipped_dir: Optional[str] = None, force_build: bool = False,
                  progress: bool = True) -> FrozenModel:
  """The frozen model: the shipped copy if it is the current recipe's, else
  the build in `cache_dir/recipe_<fingerprint12>/`, built now if needed.
  Prints one line (and one per stage built).

  Args:
    cache_dir: builds go under it, one folder per recipe fingerprint.
    shared_dir: the project's `shared/` folder.
    config: the architecture (`models/t5_1_1_mini.gin`'s for the recipe).
    seed: the build's.
    stages: the build's stages (`frozen_model.STAGES`).
    shipped_dir: the shipped copy; default `shared_dir/SHIPPED_DIR`.
    force_build: use (or make) a build here even if the shipped copy fits.
    progress: tqdm bars.
  """
  frozen_model.register_tasks(shared_dir)
  recipe = frozen_model.fingerprint(config, stages, seed)
  shipped_dir = shipped_dir or os.path.join(shared_dir,
                                            frozen_model.SHIPPED_DIR)
  why = "a build was asked for (--build)"
  if not force_build:
    path, why = frozen_model.verified_checkpoint(shipped_dir, recipe)
    if path:
      found = FrozenModel(path, frozen_model.read_recipe(shipped_dir)[
          "frozen"]["sha256"])
      _say(f"Frozen model: the shipped copy {path}, what this code's recipe "
           f"builds (recipe {recipe[:12]}, sha256 {found.sha256[:12]}).")
      return found
  build_dir = os.path.join(cache_dir, f"recipe_{recipe[:12]}")
  path, _ = frozen_model.verified_checkpoint(build_dir, recipe)
  if path:
    _say(f"Frozen model: built earlier, {path} (recipe {recipe[:12]}).")
  else:
    _say(f"Building the frozen model into {build_dir}, once (about 20 "
         f"minutes on 2 idle cores), since {why}.")
    start = time.time()
    path = frozen_model.build(build_dir, config, shared_dir=shared_dir,
                              seed=seed, stages=stages, progress=progress,
                              on_stage=_print_stage)
    _say(f"Frozen model built in {time.time() - start:.0f} s: {path}.")
  return FrozenModel(path,
                     frozen_model.read_recipe(build_dir)["frozen"]["sha256"])


def _recorded_scores(directory: str,
                     num_examples: Optional[int]) -> Optional[dict[str, Any]]:
  """A finished evaluation's results in `directory/metrics.json`, if it
  scored the same examples."""
  path = os.path.join(directory, METRICS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  if record.get("num_examples") != num_examples:
    return None
  return record["results"]


def score_frozen(model: EncoderDecoderModel, frozen: FrozenModel,
                 work: str, num_examples: Optional[int]) -> dict[str, float]:
  """SST-2 dev accuracy of the frozen model for each of `FROZEN_EVALS`,
  read back from `work/eval_<key>/metrics.json` when recorded, else scored
  (the weights loaded once) and recorded there."""
  scores, due = {}, []
  for key, task in FROZEN_EVALS.items():
    results = _recorded_scores(os.path.join(work, f"eval_{key}"),
                               num_examples)
    if results is None:
      due.append(key)
    else:
      scores[key] = float(results[task]["accuracy"])
  if not due:
    return scores
  boxed = state.model_shapes(model, EVAL_LENGTHS)
  split = freezing.compute_split(boxed, (".*",), allow_all_trainable=True)
  loaded = state.load_trained_params(model, EVAL_LENGTHS, None, frozen.path,
                                     split)
  for key in due:
    task, output_dir = FROZEN_EVALS[key], os.path.join(work, f"eval_{key}")
    results = evaluation.Evaluation(
        task, model, loaded.mesh, loaded.param_shardings,
        batch_size=EVAL_BATCH_SIZE, feature_lengths=EVAL_LENGTHS,
        log_dir=output_dir, num_examples=num_examples)(loaded.params, 0)
    record = {"step": 0, "split": "validation", "num_examples": num_examples,
              "frozen": frozen.path, "frozen_sha256": frozen.sha256,
              "results": results}
    run_dir.write_atomically(os.path.join(output_dir, METRICS_FILE),
                             json.dumps(record, indent=2, default=str))
    scores[key] = float(results[task]["accuracy"])
  return scores


def _prompt_accuracy(prompt_dir: str, step: int) -> Optional[float]:
  """The prompt run's recorded accuracy at `step`, if evaluated."""
  key = run_dir.metric_key(TASKLESS, "accuracy")
  for record in run_dir.eval_records(prompt_dir):
    if record["step"] == step and key in record:
      return float(record[key])
  return None


def majority_share(num_examples: Optional[int]) -> float:
  """Percentage of SST-2 dev (or its first `num_examples`) in the most
  frequent class: what always answering one label scores."""
  dataset = data.get_task(PREFIXED).get_dataset(
      sequence_length=None, split="validation", shuffle=False)
  if num_examples is not None:
    dataset = dataset.take(num_examples)
  labels = [x["targets_pretokenized"] for x in dataset.as_numpy_iterator()]
  _, counts = np.unique(labels, return_counts=True)
  return 100.0 * counts.max() / len(labels)


def run(cache_dir: str, shared_dir: str, config: config_lib.T5Config, *,
        work_dir: Optional[str] = None, seed: int = 0,
        prompt_steps: int = PROMPT_STEPS, prompt_length: int = PROMPT_LENGTH,
        stages: Sequence[frozen_model.Stage] = frozen_model.STAGES,
        shipped_dir: Optional[str] = None, force_build: bool = False,
        num_examples: Optional[int] = None,
        progress: bool = True) -> dict[str, float]:
  """Finds (or builds) the frozen model, then scores and trains a prompt;
  one line per stage, the last line the result.

  Args:
    cache_dir: frozen-model builds (`find_or_build`).
    shared_dir: the project's `shared/` folder.
    config: the architecture (`models/t5_1_1_mini.gin`'s for the recipe).
    work_dir: where `steering_<sha12>/` goes (default `cache_dir`).
    seed: the build's and the prompt's.
    prompt_steps: prompt-tuning steps (batch `PROMPT_BATCH_SIZE`).
    prompt_length: prompt positions.
    stages: the build's stages (`frozen_model.STAGES`).
    shipped_dir: the shipped frozen model; default in `shared_dir`.
    force_build: ignore the shipped copy.
    num_examples: score the first N dev sentences only (default all 872).
    progress: tqdm bars.

  Returns:
    `{'no_prompt', 'task_name', 'prompt_tuned', 'majority'}` SST-2 dev
    accuracies.
  """
  config = dataclasses.replace(config, dropout_rate=0.0)
  frozen = find_or_build(cache_dir, shared_dir, config, seed=seed,
                         stages=stages, shipped_dir=shipped_dir,
                         force_build=force_build, progress=progress)
  work = os.path.join(work_dir or cache_dir, f"steering_{frozen.sha256[:12]}")
  os.makedirs(work, exist_ok=True)
  start = time.time()
  scores = score_frozen(EncoderDecoderModel(t5.Transformer(config)), frozen,
                        work, num_examples)
  _say(f"SST-2 dev accuracy of the frozen model: {scores['no_prompt']:.1f} "
       f"without a prompt, {scores['task_name']:.1f} with its task name "
       f"({time.time() - start:.0f} s).")

  prompt_dir = os.path.join(work, PROMPT_RUN)
  accuracy = _prompt_accuracy(prompt_dir, prompt_steps)
  if accuracy is not None:
    _say(f"Prompt tuning: finished earlier, {prompt_dir}.")
  else:
    prompted = EncoderDecoderModel(prompt_models.PromptTransformer(
        config, prompt_length=prompt_length,
        prompt_init=initializers.class_labels(
            glue_tasks.config("sst2").label_names,
            encode=vocab.get_vocabulary())))
    start = time.time()
    trainer.train(  # Resumes a run an interruption left.
        model=prompted,
        train_dataset_cfg=run_settings.DatasetConfig(
            TASKLESS, TRAIN_LENGTHS, "train", PROMPT_BATCH_SIZE),
        train_steps=prompt_steps, model_dir=prompt_dir,
        initial_checkpoint_path=frozen.path,
        eval_cfg=run_settings.EvalConfig(
            run_settings.DatasetConfig(TASKLESS, EVAL_LENGTHS, "validation",
                                       EVAL_BATCH_SIZE),
            num_examples=num_examples),
        checkpoint_cfg=run_settings.CheckpointConfig(period=prompt_steps),
        seed=seed, progress=progress)
    accuracy = _prompt_accuracy(prompt_dir, prompt_steps)
    _say(f"Prompt tuning: {prompt_steps} steps in {time.time() - start:.0f} s "
         f"({prompt_length} prompt positions, {prompt_length * config.emb_dim}"
         f" trained parameters), checkpoints in {prompt_dir}.")
  scores["prompt_tuned"] = accuracy
  scores["majority"] = majority_share(num_examples)
  _say(f"SST-2 dev accuracy: {scores['no_prompt']:.1f} without a prompt -> "
       f"{scores['prompt_tuned']:.1f} with the learned prompt (task name "
       f"given: {scores['task_name']:.1f}; majority class "
       f"{scores['majority']:.1f}).")
  return scores
