"""Steering a frozen T5 with a soft prompt: the README's main job, as a
library (`prompt_tuning.main_job` is its command line).

1. Builds the frozen mini T5 of `prompt_tuning.recipes.frozen_model` into a
   cache directory (once; later runs reuse it): pretrained with span
   corruption, LM-adapted, then trained multi-task with task names in the
   inputs on SST-2 and two tasks constructed on the same sentences.
2. Scores the frozen model on SST-2 dev (872 sentences) two ways: with the
   taskless input `sentence: S`, which does not say which of its three tasks
   is wanted (`taskless_glue_sst2_v200`), and with T5's task name
   (`glue_sst2_v002`, `sst2 sentence: S`).
3. Trains a soft prompt on SST-2 train with the taskless input, the model
   frozen (the paper's Adafactor, lr 0.3; the prompt initialised from the
   class labels), and scores it on the same 872 sentences.
"""

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

import gin

from prompt_tuning import gin_utils
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import vocab
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import t5
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import models as prompt_models
from prompt_tuning.recipes import frozen_model
from prompt_tuning.training import evaluation
from prompt_tuning.training import state
from prompt_tuning.training import trainer


TASKLESS = glue_tasks.task_name("sst2", taskless=True)
PREFIXED = glue_tasks.task_name("sst2", taskless=False)
TRAIN_LENGTHS = {"inputs": 48, "targets": 4}
# SST-2 dev's longest sentence is 79 tokens with `sst2 sentence:`.
EVAL_LENGTHS = {"inputs": 96, "targets": 4}
PROMPT_LENGTH = 20
PROMPT_STEPS = 400
PROMPT_BATCH_SIZE = 32


def model_config(search_paths: Sequence[str] = ()) -> config_lib.T5Config:
  """The T5Config `models/t5_1_1_mini.gin` binds."""
  gin_utils.parse_gin([frozen_model.MODEL_GIN], (), search_paths)
  config = gin.get_configurable(config_lib.T5Config)()
  gin.clear_config()
  return config


def _accuracy(results, task: str) -> float:
  return float(results[task]["accuracy"])


def build(cache_dir: str, shared_dir: str, *, seed: int = 0,
          config: Optional[config_lib.T5Config] = None,
          stages: Sequence[frozen_model.Stage] = frozen_model.STAGES,
          progress: bool = True) -> str:
  """Builds the frozen model into `cache_dir` or finds it there; prints each
  stage's steps, time and final loss; returns the checkpoint path."""
  config = dataclasses.replace(config or model_config(), dropout_rate=0.0)
  start = time.time()
  cached = frozen_model.frozen_checkpoint(cache_dir)
  if cached:
    print(f"Reusing the frozen model {cached}.", flush=True)
  else:
    print(f"Building the frozen model into {cache_dir} (once).", flush=True)
  frozen = frozen_model.build(cache_dir, config, shared_dir=shared_dir,
                              seed=seed, stages=stages, progress=progress)
  for name, row in frozen_model.read_recipe(cache_dir)["stages"].items():
    print(f"  stage {name:9s} {row['steps']:5d} steps  "
          f"{row['seconds']:7.1f} s  final loss/token "
          f"{row['final_loss_per_token']:.3f}", flush=True)
  print(f"Frozen model ready after {time.time() - start:.0f} s: {frozen}",
        flush=True)
  return frozen


def _evaluate_frozen(model: EncoderDecoderModel, task: str, frozen: str,
                     num_examples: Optional[int],
                     output_dir: str) -> dict[str, dict[str, float]]:
  """`task`'s dev metrics of `model` with the frozen weights as they are,
  also written to `output_dir/metrics.json` (as `prompt_tuning.evaluate`)."""
  boxed = state.model_shapes(model, EVAL_LENGTHS)
  split = freezing.compute_split(boxed, (".*",), allow_all_trainable=True)
  loaded = state.load_trained_params(model, EVAL_LENGTHS, None, frozen,
                                     split)
  run_eval = evaluation.Evaluation(
      task, model, loaded.mesh, loaded.param_shardings, batch_size=128,
      feature_lengths=EVAL_LENGTHS, log_dir=output_dir,
      num_examples=num_examples)
  results = run_eval(loaded.params, 0)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump({"step": 0, "split": "validation", "results": results}, f,
              indent=2, default=str)
  return results


def run(cache_dir: str, shared_dir: str, *, work_dir: Optional[str] = None,
        seed: int = 0, prompt_steps: int = PROMPT_STEPS,
        prompt_length: int = PROMPT_LENGTH,
        config: Optional[config_lib.T5Config] = None,
        stages: Sequence[frozen_model.Stage] = frozen_model.STAGES,
        num_examples: Optional[int] = None,
        progress: bool = True) -> dict[str, float]:
  """Builds (or reuses) the frozen model, then scores and trains a prompt.

  Args:
    cache_dir: the frozen model's build directory (`frozen_model.build`).
    shared_dir: the project's `shared/` folder.
    work_dir: the prompt run and evaluations (default `cache_dir`).
    seed: the build's and the prompt's.
    prompt_steps: prompt-tuning steps (batch `PROMPT_BATCH_SIZE`).
    prompt_length: prompt positions.
    config: the architecture; default `models/t5_1_1_mini.gin`'s.
    stages: the build's stages (`frozen_model.STAGES`).
    num_examples: score the first N dev sentences only (default all 872).
    progress: tqdm bars.

  Returns:
    `{'no_prompt', 'task_name', 'prompt_tuned'}` SST-2 dev accuracies.
  """
  config = dataclasses.replace(config or model_config(), dropout_rate=0.0)
  frozen = build(cache_dir, shared_dir, seed=seed, config=config,
                 stages=stages, progress=progress)
  base = EncoderDecoderModel(t5.Transformer(config))
  scores = {}
  for key, task in (("no_prompt", TASKLESS), ("task_name", PREFIXED)):
    results = _evaluate_frozen(base, task, frozen, num_examples,
                               os.path.join(work_dir or cache_dir,
                                            f"eval_{key}"))
    scores[key] = _accuracy(results, task)
  print(f"SST-2 dev accuracy of the frozen model: {scores['no_prompt']:.1f} "
        f"without a prompt, {scores['task_name']:.1f} with its task name.",
        flush=True)

  prompted = EncoderDecoderModel(prompt_models.PromptTransformer(
      config, prompt_length=prompt_length,
      prompt_init=initializers.class_labels(
          glue_tasks.config("sst2").label_names,
          encode=vocab.get_vocabulary())))
  prompt_dir = os.path.join(work_dir or cache_dir, "sst2_prompt")
  start = time.time()
  result = trainer.train(
      model=prompted, mixture_or_task_name=TASKLESS,
      task_feature_lengths=TRAIN_LENGTHS, train_steps=prompt_steps,
      batch_size=PROMPT_BATCH_SIZE, model_dir=prompt_dir,
      initial_checkpoint_path=frozen,
      seed=seed,
      checkpoint_period=prompt_steps, eval_mixture_or_task_name=TASKLESS,
      eval_feature_lengths=EVAL_LENGTHS, eval_batch_size=128,
      eval_num_examples=num_examples,
      progress=progress)
  scores["prompt_tuned"] = _accuracy(result.eval_results[prompt_steps],
                                     TASKLESS)
  print(f"Prompt tuning: {prompt_steps} steps in {time.time() - start:.0f} s "
        f"({prompt_length} prompt positions, {prompt_length * config.emb_dim}"
        f" trained parameters), checkpoints in {prompt_dir}.", flush=True)
  print(f"SST-2 dev accuracy: {scores['no_prompt']:.1f} without a prompt -> "
        f"{scores['prompt_tuned']:.1f} with the learned prompt "
        f"(task name given: {scores['task_name']:.1f}; majority class 50.9).",
        flush=True)
  return scores


