"""Checks a training run before anything is loaded or written.

`check_train_run(...)` takes the arguments of `trainer.train` (its
`run_settings` objects among them) and, in a few seconds and without reading
weights or writing a file, checks

  * the type and range of every run setting (steps, batch size, feature
    lengths, length buckets, periods, the divergence guard, ...);
  * the task or mixture names, and that their sources can serve the train
    and evaluation splits (local files present, or TFDS data prepared or
    downloadable) and that the vocabulary is reachable; that the evaluation
    task has metrics;
  * that `TASK_FEATURE_LENGTHS['targets']` holds the longest class label of
    every closed-label task (else the model could never emit a whole label);
  * the initial checkpoint path (present, a known format, T5X when the
    optimizer step is to be restored from it);
  * the model: its parameter shapes (prompt length, prompt file shape, a
    deep prompt's source files or run), logical axis names, and that the
    trainable patterns split it sensibly; for `objective='classification'`
    a head with enough classes for every task's labels, and a `label`
    feature in the training examples;
  * the mesh: the batch size splits over the data axis and microbatches;
  * the sizes: the training step (BATCH_SIZE, TASK_FEATURE_LENGTHS,
    PROMPT_LENGTH) can fit this machine's memory by the memory plan
    (`capacity.check_step_fits`; only clearly impossible sizes refused);
  * MODEL_DIR: no live run holds it (process 0 checks, as it takes the
    lock for all), and a resumed run has the recorded
    configuration.

It returns the notes a user should see once (inputs truncated at the feature
length, with the share of examples affected).
"""

import dataclasses
import functools
import numbers
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import seqio

from prompt_tuning import errors
from prompt_tuning import partitioning
from prompt_tuning.checkpoints import hf_formats
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import pretrained
from prompt_tuning.data import availability
from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import rank_classification
from prompt_tuning.data import truncation
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.models import model as model_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.training import capacity
from prompt_tuning.training import checkpointer as train_ckpt
from prompt_tuning.training import class_predictions
from prompt_tuning.training import data
from prompt_tuning.training import distributed
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings
from prompt_tuning.training.state import (OPTIMIZER_STEP_RESTORED,
                                          OPTIMIZER_STEP_ZERO)

FEATURES = ("inputs", "targets")


@dataclasses.dataclass
class Preflight:
  """What the checks found.

  Attributes:
    notes: facts to show once (e.g. the longest label's length).
    warnings: problems that do not stop the run, shown once (e.g. the share
      of training inputs truncated at the feature length).
    boxed_params: the model's parameter shapes with logical axis names.
    split: which parameters train (the model's declared patterns, or
      TRAINABLE_PATTERNS), checked against those shapes.
    mesh: the device mesh of the run.
    has_checkpoint: MODEL_DIR holds a checkpoint to resume from.
  """
  notes: list[str]
  warnings: list[str]
  boxed_params: Any
  split: freezing.ParamSplit
  mesh: jax.sharding.Mesh
  has_checkpoint: bool


def _fail(message: str) -> None:
  raise errors.ConfigError(message)


def check_int(name: str, value: Any, minimum: int = 1,
              macro: Optional[str] = None) -> None:
  """`value` is an int (not a bool) >= `minimum`; the error names the macro."""
  label = f"{name} ({macro})" if macro else name
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(f"{label} must be an integer >= {minimum}, got {value!r} "
          f"({type(value).__name__}); e.g. --gin.{macro or name}=100.")
  if value < minimum:
    _fail(f"{label} must be >= {minimum}, got {value}.")


def check_optional_number(name: str, value: Any) -> None:
  """None, or a positive real number; `name` is its gin binding."""
  if value is None:
    return
  if (isinstance(value, bool) or not isinstance(value, numbers.Real) or
      not value > 0):
    _fail(f"{name} must be a positive number or None (off), got {value!r}; "
          f"e.g. --gin.{name}=None.")


def check_feature_lengths(lengths: Any, what: str = "TASK_FEATURE_LENGTHS"
                          ) -> dict[str, int]:
  """`{'inputs': int, 'targets': int}` with positive lengths; errors name
  the setting `what`."""
  example = f"--gin.{what}=\"{{'inputs': 512, 'targets': 8}}\""
  if not isinstance(lengths, Mapping):
    _fail(f"{what} must be a dict of feature lengths, got "
          f"{lengths!r} ({type(lengths).__name__}); e.g. {example}.")
  keys = set(lengths)
  if keys != set(FEATURES):
    _fail(f"{what} must have exactly the keys {list(FEATURES)}, "
          f"got {sorted(map(str, keys))}; e.g. {example}.")
  for key in FEATURES:
    check_int(f"{what}[{key!r}]", lengths[key])
  return {k: int(lengths[k]) for k in FEATURES}


def _tasks(name: str) -> list[seqio.Task]:
  try:
    task = data.get_task(name)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  return list(task.tasks) if isinstance(task, seqio.Mixture) else [task]


def _check_task_data(name: str, split: str, what: str) -> list[seqio.Task]:
  if not isinstance(name, str) or not name:
    _fail(f"{what} must be a task or mixture name, got {name!r}.")
  tasks = _tasks(name)
  with_split = [task for task in tasks if split in task.splits]
  if not with_split:  # A mixture's tasks without the split are skipped.
    _fail(f"{name} has no {split!r} split (its splits: "
          f"{sorted({s for t in tasks for s in t.splits})}); choose another "
          "split or task.")
  availability.check_split_available(name, split)
  return with_split


def _uses_configured_vocabulary(tasks: Sequence[seqio.Task]) -> bool:
  return any(isinstance(f.vocabulary, vocab_lib.ConfiguredVocabulary)
             for t in tasks for f in t.output_features.values())


def _check_target_length(name: str, targets: int) -> Optional[str]:
  """Raises if `targets` cannot hold the longest label; returns a note."""
  longest = data_labels.longest_target(name)
  if longest is None:
    return None
  task, label, needed = longest
  if needed > targets:
    _fail(f"TASK_FEATURE_LENGTHS['targets'] = {targets} cannot hold the label "
          f"{label!r} of {task}: it is {needed} tokens with EOS, so training "
          "would teach a cut-off label and no prediction could parse. Set "
          f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': ..., 'targets': "
          f"{needed}}}\" or more.")
  where = name if task == name else f"{name} (in {task})"
  return (f"targets: the longest label of {where} is {label!r}, {needed} "
          f"tokens with EOS; TASK_FEATURE_LENGTHS['targets'] = {targets} "
          "holds it.")


def _check_checkpoint_path(path: Optional[str],
                           optimizer_step: str) -> Optional[str]:
  """Checks INITIAL_CHECKPOINT_PATH; returns notes on the Hugging Face
  weights file read and on Adafactor's step."""
  if optimizer_step not in (OPTIMIZER_STEP_ZERO, OPTIMIZER_STEP_RESTORED):
    _fail(f"OPTIMIZER_STEP must be {OPTIMIZER_STEP_ZERO!r} or "
          f"{OPTIMIZER_STEP_RESTORED!r}, got {optimizer_step!r}.")
  if path is None:
    return None
  if not isinstance(path, (str, os.PathLike)):
    _fail(f"INITIAL_CHECKPOINT_PATH must be a path string, got {path!r}.")
  try:
    fmt = pretrained.detect_checkpoint_format(path)
    weights = (hf_formats.find_weight_files(path).note(path)
               if fmt == pretrained.CheckpointFormat.HUGGING_FACE else None)
  except (FileNotFoundError, ValueError) as e:
    raise errors.ConfigError(
        f"INITIAL_CHECKPOINT_PATH: {e} Set --gin.INITIAL_CHECKPOINT_PATH="
        "\"'DIR'\" to a T5X checkpoint (or model) directory or a Hugging Face "
        "T5 directory.") from e
  if (optimizer_step == OPTIMIZER_STEP_RESTORED and
      fmt != pretrained.CheckpointFormat.T5X):
    return " ".join(filter(None, [weights, (
        f"optimizer step: {path} is a {fmt.value} checkpoint, which "
        "holds no step counter, so Adafactor's starts at 0 (a T5X "
        "checkpoint's own step would be restored).")]))
  return weights


def trainable_patterns_of(model: EncoderDecoderModel,
                          trainable_patterns: Optional[Sequence[str]]
                          ) -> tuple[str, ...]:
  """TRAINABLE_PATTERNS when set, else what the model declares it trains."""
  if trainable_patterns is not None:
    if (isinstance(trainable_patterns, str) or
        not all(isinstance(p, str) for p in trainable_patterns)):
      _fail(f"TRAINABLE_PATTERNS must be a tuple of regex strings (or None: "
            f"what the model declares), got {trainable_patterns!r}; e.g. "
            "--gin.TRAINABLE_PATTERNS=\"('prompt/prompt',)\".")
    return tuple(trainable_patterns)
  declared = model.trainable_patterns
  if not declared:
    _fail(f"The model ({type(model.module).__name__}) declares no trainable "
          "parameters: it has no prompt. Include a prompts/*.gin file, or "
          "set TRAINABLE_PATTERNS, e.g. \"('.*',)\" with runs/"
          "model_finetune.gin to train every parameter.")
  return declared


def _check_model(model: Any, lengths: Mapping[str, int],
                 trainable_patterns: Optional[Sequence[str]],
                 allow_all_trainable: bool,
                 fits: Optional[Callable[..., None]] = None
                 ) -> tuple[Any, freezing.ParamSplit]:
  """Checks the model's settings and shapes; returns (boxed parameter
  shapes, the trainable split). `fits(boxed_params=..., trainable_patterns=
  ...)` (`capacity.check_step_fits`) checks the step's sizes: first from
  the activations alone, before the shapes are built (an absurd
  PROMPT_LENGTH would exhaust memory building them), then whole."""
  if not isinstance(model, EncoderDecoderModel):
    _fail(f"model (MODEL) must be an EncoderDecoderModel, got "
          f"{type(model).__name__}; include a models/*.gin file.")
  prompt_length = getattr(model.module, "prompt_length", None)
  if prompt_length is not None:
    check_int("prompt_length", prompt_length, 0, "PROMPT_LENGTH")
  trainable_patterns = trainable_patterns_of(model, trainable_patterns)
  if model.objective not in model_lib.OBJECTIVES:
    _fail(f"The model's objective must be one of {model_lib.OBJECTIVES}, got "
          f"{model.objective!r} (models.EncoderDecoderModel.objective).")
  if fits is not None:
    fits()
  try:
    boxed = model.init_shapes(lengths["inputs"], lengths["targets"])["params"]
    partitioning.check_logical_axes(boxed)
    split = freezing.compute_split(boxed, trainable_patterns,
                                   allow_all_trainable=allow_all_trainable)
    if fits is not None:
      fits(boxed_params=boxed, trainable_patterns=split.patterns)
    shapes = {name: tuple(leaf.shape) for name, leaf in
              param_tree.flatten_params(nn.unbox(boxed)).items()}
    source = getattr(model.module, "prompt_source", None)
    if source is not None:
      source.check(shapes)
    if model.is_classifier:
      trained = set(split.trainable)
      frozen_head = sorted(n for n in shapes
                           if n.startswith("classifier/") and n not in trained)
      if frozen_head:
        _fail(f"TRAINABLE_PATTERNS {list(trainable_patterns)} leave the "
              f"classification head {frozen_head} frozen at its random "
              "initialisation; add 'classifier/.*' (runs/ptuning_v2_*.gin "
              "leave TRAINABLE_PATTERNS None: the model declares its head).")
  except errors.ConfigError:
    raise
  except (ValueError, TypeError, OSError) as e:
    raise errors.ConfigError(f"The model configuration is invalid: {e}") from e
  return boxed, split


def _check_mesh(batch_size: int, eval_batch_size: Optional[int],
                cfg: run_settings.PartitioningConfig) -> jax.sharding.Mesh:
  num_partitions, num_microbatches = cfg.num_partitions, cfg.num_microbatches
  try:
    mesh = partitioning.create_mesh(num_partitions, cfg.mesh_shape)
  except ValueError as e:
    raise errors.ConfigError(f"{e} (NUM_PARTITIONS)") from e
  data_ways = mesh.shape[partitioning.MESH_AXES[0]]
  for name, size in (("BATCH_SIZE", batch_size),
                     ("eval batch size", eval_batch_size or batch_size)):
    if size % data_ways:
      _fail(f"{name} {size} is not divisible by the mesh's {data_ways}-way "
            f"'data' axis ({jax.device_count()} devices, {num_partitions} "
            "model partitions); change the batch size or NUM_PARTITIONS.")
  if batch_size % num_microbatches:
    _fail(f"BATCH_SIZE {batch_size} is not divisible by NUM_MICROBATCHES "
          f"{num_microbatches}.")
  if distributed.is_multiprocess():
    for size in {batch_size, eval_batch_size or batch_size}:
      try:
        distributed.batch_feed(partitioning.batch_sharding(mesh), size)
      except ValueError as e:
        _fail(f"{e} (mesh {dict(mesh.shape)} over {jax.process_count()} "
              "processes; change PartitioningConfig.mesh_shape or "
              "NUM_PARTITIONS)")
  return mesh


def _check_has_metrics(name: str, tasks: Sequence[seqio.Task]) -> None:
  """Something to evaluate: a task without metrics (a pretraining
  objective) would make every evaluation an empty, silent pass."""
  if not any(t.metric_fns or getattr(t, "metric_objs", None) for t in tasks):
    _fail(f"The evaluation task {name} has no metrics (its tasks "
          f"{sorted(t.name for t in tasks)} are trained on, not evaluated, "
          "e.g. pretraining objectives); set --gin.EVAL_MIXTURE_OR_TASK_NAME="
          "None (or --gin.trainer.train.eval_cfg=None), or name a task with "
          "metrics.")


def _check_has_label(task: seqio.Task) -> None:
  """A classification run trains on the examples' int `label` feature."""
  spec = task.get_dataset(None, split="train", shuffle=False,
                          use_cached=False).element_spec
  if data.LABEL not in spec:
    _fail(f"{task.name}'s training examples have no {data.LABEL!r} feature "
          f"(they have {sorted(spec)}), which objective='classification' "
          "trains the head on; use a classification task or the seq2seq "
          "objective.")


def _gin_name(scope: str, cls: type, field: str) -> str:
  """The gin binding of a config object's field, e.g.
  'eval/DatasetConfig.batch_size' (gin matches the class by its name)."""
  return f"{scope + '/' if scope else ''}{cls.__name__}.{field}"


def _check_instance(value: Any, cls: type, argument: str,
                    binding: Optional[str] = None) -> None:
  """`value` is a `cls`; the error shows the gin binding that makes one."""
  if not isinstance(value, cls):
    binding = binding or (f"trainer.train.{argument} = "
                          f"@run_settings.{cls.__name__}()")
    _fail(f"{argument} must be a run_settings.{cls.__name__}, got "
          f"{value!r}; in gin: {binding}.")


def _check_dataset(cfg: run_settings.DatasetConfig, scope: str,
                   macros: Mapping[str, str]) -> dict[str, int]:
  """Checks a DatasetConfig's fields; errors name the gin macro the user
  sets (`macros`, by field), else the binding. Returns the lengths."""
  name = lambda field: macros.get(field) or _gin_name(  # pylint: disable=g-long-lambda
      scope, run_settings.DatasetConfig, field)
  check_int("batch_size", cfg.batch_size, 1, name("batch_size"))
  lengths = check_feature_lengths(cfg.task_feature_lengths,
                                  name("task_feature_lengths"))
  if not isinstance(cfg.split, str) or not cfg.split:
    _fail(f"{name('split')} must be a split name, got {cfg.split!r}.")
  buckets_lib.check_spec(cfg.length_buckets, lengths)
  if cfg.group_by_length and cfg.length_buckets is None:
    _fail("GROUP_BY_LENGTH groups examples by the inputs length buckets, but "
          "LENGTH_BUCKETS is None; set e.g. --gin.LENGTH_BUCKETS=64 too.")
  return lengths


_TRAIN_MACROS = {"mixture_or_task_name": "MIXTURE_OR_TASK_NAME",
                 "task_feature_lengths": "TASK_FEATURE_LENGTHS",
                 "batch_size": "BATCH_SIZE"}
_EVAL_MACROS = {"mixture_or_task_name": "EVAL_MIXTURE_OR_TASK_NAME",
                "task_feature_lengths": "EVAL_TASK_FEATURE_LENGTHS"}


def _check_early_stopping(eval_cfg: run_settings.EvalConfig) -> None:
  """EARLY_STOPPING_PATIENCE: None, or an int >= 1 with BEST_METRIC and an
  evaluation to watch; EARLY_STOPPING_MIN_DELTA: a finite number >= 0."""
  delta = eval_cfg.early_stopping_min_delta
  if (isinstance(delta, bool) or not isinstance(delta, numbers.Real) or
      not 0 <= delta < float("inf")):
    _fail(f"EARLY_STOPPING_MIN_DELTA must be a number >= 0 (the least "
          f"increase of BEST_METRIC that counts as an improvement), got "
          f"{delta!r}; e.g. --gin.EARLY_STOPPING_MIN_DELTA=0.01.")
  patience = eval_cfg.early_stopping_patience
  if patience is None:
    return
  check_int("early stopping patience", patience, 1, "EARLY_STOPPING_PATIENCE")
  if not eval_cfg.best_metric or not eval_cfg.active:
    _fail(f"EARLY_STOPPING_PATIENCE={patience} counts evaluations without an "
          "improvement of BEST_METRIC, but "
          + ("BEST_METRIC is None" if eval_cfg.active else
             "evaluation is off (EVAL_MIXTURE_OR_TASK_NAME=None)")
          + "; set e.g. --gin.BEST_METRIC=\"'task/accuracy'\" (and an "
          "evaluation task), or --gin.EARLY_STOPPING_PATIENCE=None.")


def _check_settings(*, train_dataset_cfg: Any, eval_cfg: Any,
                    checkpoint_cfg: Any, guard_cfg: Any,
                    partitioning_cfg: Any, model_dir: Any, train_steps: Any,
                    seed: Any, log_period: Any) -> dict[str, int]:
  """Type and range of every run setting; returns the training lengths."""
  rs = run_settings
  _check_instance(train_dataset_cfg, rs.DatasetConfig, "train_dataset_cfg",
                  "trainer.train.train_dataset_cfg = "
                  "@train/run_settings.DatasetConfig()")
  _check_instance(checkpoint_cfg, rs.CheckpointConfig, "checkpoint_cfg")
  _check_instance(guard_cfg, rs.DivergenceGuardConfig, "guard_cfg")
  _check_instance(partitioning_cfg, rs.PartitioningConfig,
                  "partitioning_cfg")
  if not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir):
    _fail(f"MODEL_DIR must be a directory path, got {model_dir!r}; e.g. "
          "--gin.MODEL_DIR=\"'/tmp/run'\".")
  check_int("train_steps", train_steps, 1, "TRAIN_STEPS")
  lengths = _check_dataset(train_dataset_cfg, "train", _TRAIN_MACROS)
  check_int("num_partitions", partitioning_cfg.num_partitions, 1,
            "NUM_PARTITIONS")
  check_int("num_microbatches", partitioning_cfg.num_microbatches, 1,
            "NUM_MICROBATCHES")
  frozen_dtype, default = (partitioning_cfg.frozen_dtype,
                           rs.DEFAULT_FROZEN_DTYPE)
  rs.check_frozen_dtype(frozen_dtype)
  if frozen_dtype != default and (checkpoint_cfg.save_frozen or
                                  checkpoint_cfg.export_t5x):
    _fail(f"FROZEN_DTYPE={frozen_dtype!r} would write the frozen parameters "
          f"in {frozen_dtype} (save_frozen / export_t5x checkpoint all "
          f"parameters); keep FROZEN_DTYPE={default!r} for such runs, or "
          "turn CheckpointConfig.save_frozen and export_t5x off.")
  check_int("seed", seed, 0, "SEED")
  check_int("log_period", log_period, 1, "trainer.train.log_period")
  check_int("checkpoint period", checkpoint_cfg.period, 1,
            "CHECKPOINT_PERIOD")
  check_int("checkpoints kept", checkpoint_cfg.keep, 1,
            _gin_name("", rs.CheckpointConfig, "keep"))
  for field in ("max_update_ratio", "max_norm_growth"):
    check_optional_number(_gin_name("", rs.DivergenceGuardConfig, field),
                          getattr(guard_cfg, field))
  if eval_cfg is not None:
    _check_instance(eval_cfg, rs.EvalConfig, "eval_cfg")
    _check_instance(eval_cfg.dataset, rs.DatasetConfig, "eval_cfg.dataset",
                    "run_settings.EvalConfig.dataset = "
                    "@eval/run_settings.DatasetConfig()")
    check_int("eval period", eval_cfg.period, 0, "EVAL_PERIOD")
    if eval_cfg.num_examples is not None:
      check_int("evaluated examples", eval_cfg.num_examples, 1,
                _gin_name("", rs.EvalConfig, "num_examples"))
    _check_early_stopping(eval_cfg)
    if eval_cfg.active:
      _check_dataset(eval_cfg.dataset, "eval", _EVAL_MACROS)
      if eval_cfg.dataset.group_by_length:
        _fail("Evaluation batches by length whenever LENGTH_BUCKETS is set; "
              "eval/DatasetConfig.group_by_length is for training batches "
              "only: leave it False.")
  return lengths


def check_train_run(*, model: Any,
                    train_dataset_cfg: run_settings.DatasetConfig,
                    eval_cfg: Optional[run_settings.EvalConfig],
                    checkpoint_cfg: run_settings.CheckpointConfig,
                    guard_cfg: run_settings.DivergenceGuardConfig,
                    partitioning_cfg: run_settings.PartitioningConfig,
                    model_dir: Any, initial_checkpoint_path: Optional[str],
                    trainable_patterns: Optional[Sequence[str]],
                    allow_all_trainable: bool, optimizer_step: str,
                    train_steps: Any, seed: Any, log_period: Any,
                    run_config: Optional[str]) -> Preflight:
  """Checks everything `trainer.train` will need (its arguments, which
  name the settings); see the module doc.

  Raises:
    errors.ConfigError (or a subclass): naming the setting and the fix.
    FileNotFoundError: for missing data files, naming the file.
  """
  lengths = _check_settings(
      train_dataset_cfg=train_dataset_cfg, eval_cfg=eval_cfg,
      checkpoint_cfg=checkpoint_cfg, guard_cfg=guard_cfg,
      partitioning_cfg=partitioning_cfg, model_dir=model_dir,
      train_steps=train_steps, seed=seed, log_period=log_period)
  train_name = train_dataset_cfg.mixture_or_task_name
  tasks = _check_task_data(train_name, train_dataset_cfg.split,
                           "MIXTURE_OR_TASK_NAME")
  rank_classification.check_not_training(tasks)
  eval_tasks, eval_name = [], None
  if eval_cfg is not None and eval_cfg.active:
    eval_name = eval_cfg.dataset.mixture_or_task_name
    eval_tasks = _check_task_data(eval_name, eval_cfg.dataset.split,
                                  "EVAL_MIXTURE_OR_TASK_NAME")
    _check_has_metrics(eval_name, eval_tasks)
  best_metric = None if eval_cfg is None else eval_cfg.best_metric
  if best_metric is not None:
    task_part = str(best_metric).split("/")[0]
    names = sorted(t.name for t in eval_tasks)
    if "/" not in str(best_metric) or task_part not in names:
      _fail(f"BEST_METRIC must be 'task/metric' with one of the evaluated "
            f"tasks {names}, got {best_metric!r}; e.g. "
            f"'{(names or ['TASK'])[0]}/accuracy'.")
  if _uses_configured_vocabulary(tasks + eval_tasks):
    vocab_lib.check_vocabulary()
  notes = [_check_target_length(train_name, lengths["targets"])]
  if eval_name:
    notes.append(_check_target_length(eval_name, lengths["targets"]))

  notes.append(_check_checkpoint_path(initial_checkpoint_path,
                                      optimizer_step))
  mesh = _check_mesh(train_dataset_cfg.batch_size,
                     eval_cfg.dataset.batch_size if eval_name else None,
                     partitioning_cfg)
  fits = functools.partial(
      capacity.check_step_fits, model=model, mesh=mesh,
      batch_size=train_dataset_cfg.batch_size, lengths=lengths,
      num_microbatches=partitioning_cfg.num_microbatches,
      frozen_dtype=partitioning_cfg.frozen_dtype)
  boxed, split = _check_model(model, lengths, trainable_patterns,
                              allow_all_trainable, fits)
  if model.is_classifier:
    notes += class_predictions.check_classifier_tasks(model,
                                                      tasks + eval_tasks)
    for task in tasks:
      _check_has_label(task)

  model_dir = os.fspath(model_dir)
  has_checkpoint = train_ckpt.has_checkpoint(model_dir)
  if distributed.is_primary():  # The others rely on its lock (run_dir.hold).
    run_dir.check_unlocked(model_dir)
  run_dir.check_run_config(model_dir, run_config, has_checkpoint)

  warnings = [report.message() for report in truncation.truncation_report(
      train_name, train_dataset_cfg.split, lengths) if report.num_truncated]
  return Preflight(notes=list(dict.fromkeys(n for n in notes if n)),
                   warnings=warnings, boxed_params=boxed, split=split,
                   mesh=mesh,
                   has_checkpoint=has_checkpoint)


def check_eval_run(*, model: Any, mixture_or_task_name: str,
                   task_feature_lengths: Any, batch_size: Any,
                   model_dir: Optional[str],
                   initial_checkpoint_path: Optional[str], split: str,
                   checkpoint_step: Optional[int],
                   trainable_patterns: Optional[Sequence[str]],
                   allow_all_trainable: bool,
                   output_dir: Optional[str] = None,
                   output_setting: str = "EVAL_OUTPUT_DIR"
                   ) -> freezing.ParamSplit:
  """Checks an evaluation or inference run (`evaluate`, `infer`) before it
  loads weights: settings, task data for `split`, vocabulary, label length,
  checkpoint path, model shapes, the trained run in `model_dir`, and that
  `output_dir` (the gin macro `output_setting`) can be written."""
  check_int("batch_size", batch_size, 1, "BATCH_SIZE")
  lengths = check_feature_lengths(task_feature_lengths)
  if checkpoint_step is not None:
    check_int("checkpoint_step", checkpoint_step, 0, "CHECKPOINT_STEP")
  tasks = _check_task_data(mixture_or_task_name, split,
                           "MIXTURE_OR_TASK_NAME")
  if _uses_configured_vocabulary(tasks):
    vocab_lib.check_vocabulary()
  _check_target_length(mixture_or_task_name, lengths["targets"])
  _check_checkpoint_path(initial_checkpoint_path, OPTIMIZER_STEP_ZERO)
  _, param_split = _check_model(model, lengths, trainable_patterns,
                                allow_all_trainable)
  if model.is_classifier:
    class_predictions.check_classifier_tasks(model, tasks)
  if model_dir is not None and not train_ckpt.has_checkpoint(
      os.fspath(model_dir)):
    _fail(f"No training checkpoint in {model_dir}/checkpoints; set MODEL_DIR "
          "to the directory a prompt_tuning.train run wrote.")
  if output_dir is not None:
    check_output_dir(output_dir, output_setting)
  return param_split


def check_output_dir(path: Any, setting: str) -> None:
  """Raises ConfigError unless `path` is a writable directory or can be
  created (its nearest existing ancestor is a writable directory); the
  error names the directory and the gin macro `setting` that moves it.
  Writes nothing. Paths with a scheme (`gs://...`) are not checked."""
  path = os.fspath(path)
  if "://" in path:
    return
  path = os.path.abspath(path)
  existing = path
  while not os.path.exists(existing):
    parent = os.path.dirname(existing)
    if parent == existing:
      break
    existing = parent
  fix = (f"Set --gin.{setting}=\"'/a/writable/folder'\" (created if "
         "missing).")
  if not os.path.isdir(existing):
    _fail(f"{setting}: the output directory {path} cannot be created: "
          f"{existing} is a file, not a directory. {fix}")
  if not os.access(existing, os.W_OK | os.X_OK):
    where = (f"{path} is not writable" if existing == path else
             f"{path} cannot be created: {existing} is not writable")
    _fail(f"{setting}: the output directory {where} (read-only directory "
          f"or file system), and the outputs are written there. {fix}")
