"""A training run's settings: one small frozen object per concern.

`trainer.train` takes these objects (T5X's `DatasetConfig` /
`CheckpointConfig` style); `preflight.check_train_run` checks their fields
before anything is loaded; gin files build them by dynamic registration,
e.g. (configs/runs/prompt_finetune.gin)

    trainer.train.train_dataset_cfg = @train/run_settings.DatasetConfig()
    train/run_settings.DatasetConfig.batch_size = %BATCH_SIZE

Each setting is declared here once, with its default and meaning; the
macros a user sets (`BATCH_SIZE`, `EVAL_PERIOD`, ...) are named beside it.
This module does not import gin.
"""

import dataclasses
from typing import Mapping, Optional

from prompt_tuning import errors
from prompt_tuning.training import length_buckets as buckets_lib


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """What to read and how to batch it (training, or evaluation).

  Attributes:
    mixture_or_task_name: SeqIO task or mixture (MIXTURE_OR_TASK_NAME; for
      evaluation EVAL_MIXTURE_OR_TASK_NAME, where None turns evaluation off).
    task_feature_lengths: `{'inputs': int, 'targets': int}`
      (TASK_FEATURE_LENGTHS; for evaluation EVAL_TASK_FEATURE_LENGTHS, e.g.
      train on short inputs, evaluate on the full sentences).
    split: the dataset split, e.g. 'train' or 'validation'.
    batch_size: global batch size, over all devices and processes
      (BATCH_SIZE).
    length_buckets: an int N (each batch cut to the next multiple of N that
      holds its longest example, at most the feature length; default
      `length_buckets.DEFAULT_SPEC`, 64), a dict of lengths per feature, or
      None for T5X's fixed shapes (`training.length_buckets`;
      LENGTH_BUCKETS). Batches keep their order;
      one compilation per bucket. Evaluation batches its examples by input
      length when set.
    group_by_length: training only: batch together examples of similar
      input length (by the inputs buckets of `length_buckets`, which it
      needs), so that the cut batches hold little padding; changes which
      examples share a batch (`training.data.train_batches`;
      GROUP_BY_LENGTH).
  """
  mixture_or_task_name: Optional[str]
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  length_buckets: buckets_lib.Spec = buckets_lib.DEFAULT_SPEC
  group_by_length: bool = False


# Early stopping's defaults (`EvalConfig`): off, and any increase counts.
DEFAULT_EARLY_STOPPING_PATIENCE: Optional[int] = None
DEFAULT_EARLY_STOPPING_MIN_DELTA = 0.0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation during training (SeqIO metrics of the model's predictions).

  Attributes:
    dataset: what to evaluate; `dataset.mixture_or_task_name` None means no
      evaluation (`active`).
    period: steps between evaluations (EVAL_PERIOD); 0 evaluates only at
      the end. A resumed run first runs the evaluations due at or before its
      step that have no recorded result (e.g. one killed mid-way).
    num_examples: evaluate on the first N examples only; None: all.
    best_metric: `task/metric` to keep the best checkpoint by, under
      `model_dir/best` (BEST_METRIC), e.g.
      'taskless_super_glue_rte_v102/accuracy'; None keeps none.
    early_stopping_patience: end the run after this many evaluations in a
      row without an improvement of `best_metric` by more than
      `early_stopping_min_delta` (EARLY_STOPPING_PATIENCE); None (the
      default): off. Needs `best_metric`. Counted from the records in
      `model_dir/eval_metrics.jsonl`, so a killed and re-run run stops at
      the same evaluation; the stop is recorded there too
      (`run_dir.early_stop_due`), and a re-run of a stopped run trains no
      further. Resumable: a re-run may raise it (or turn it off) to continue
      a stopped run from its final checkpoint.
    early_stopping_min_delta: the least increase of `best_metric` over its
      best value so far that counts as an improvement
      (EARLY_STOPPING_MIN_DELTA, >= 0).
    before_training: also evaluate the initial state, as step 0, when the
      run starts fresh (T5X's evaluation before training): e.g. how well a
      prompt transferred from another task does before any step.
  """
  dataset: DatasetConfig
  period: int = 0
  num_examples: Optional[int] = None
  best_metric: Optional[str] = None
  early_stopping_patience: Optional[int] = DEFAULT_EARLY_STOPPING_PATIENCE
  early_stopping_min_delta: float = DEFAULT_EARLY_STOPPING_MIN_DELTA
  before_training: bool = False

  @property
  def active(self) -> bool:
    """Whether there is a task to evaluate."""
    return bool(self.dataset.mixture_or_task_name)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Training checkpoints under `model_dir/checkpoints` (`checkpointer.py`).

  Attributes:
    period: steps between checkpoints (CHECKPOINT_PERIOD); the last step is
      always saved.
    keep: the newest checkpoints kept (and T5X exports, with `export_t5x`).
    save_frozen: also checkpoint the frozen parameters (full fine-tuning,
      runs/model_finetune.gin).
    export_t5x: also write every checkpoint as the T5X checkpoint
      `model_dir/checkpoint_<N>` of all parameters, N being Adafactor's step
      counter (this run's steps plus a restored checkpoint's step);
      `initial_checkpoint_path` reads it (runs/pretrain.gin,
      runs/lm_adapt.gin).
  """
  period: int = 1000
  keep: int = 3
  save_frozen: bool = False
  export_t5x: bool = False


@dataclasses.dataclass(frozen=True)
class DivergenceGuardConfig:
  """When to stop a run whose training left the usual range.

  Checked on every logged window (`trainer.train`'s `log_period`) and before
  every checkpoint, so that no checkpoint is written past it; a NaN/Inf
  loss or parameter always stops the run (`monitoring.DivergenceGuard`).

  Attributes:
    max_update_ratio: stop when one step's update is more than this many
      times the norm of the trainable parameters; None: off.
    max_norm_growth: stop when the trainable parameters' norm exceeds this
      many times its value at the start; None: off.
  """
  max_update_ratio: Optional[float] = 100.0
  max_norm_growth: Optional[float] = 1e4


# Storage (and so memory) dtypes of the frozen parameters
# (`PartitioningConfig.frozen_dtype`).
DEFAULT_FROZEN_DTYPE = "float32"  # T5X's.
FROZEN_DTYPES = (DEFAULT_FROZEN_DTYPE, "bfloat16")


def check_frozen_dtype(frozen_dtype: str) -> None:
  """Raises `errors.ConfigError` unless `frozen_dtype` is in FROZEN_DTYPES."""
  if frozen_dtype not in FROZEN_DTYPES:
    raise errors.ConfigError(f"FROZEN_DTYPE must be one of {FROZEN_DTYPES}, "
                             f"got {frozen_dtype!r}.")


@dataclasses.dataclass(frozen=True)
class PartitioningConfig:
  """How a step is laid out in device memory: the mesh, the microbatches
  and the frozen weights' dtype (`python -m prompt_tuning.plan` plans them).

  Attributes:
    num_partitions: size of the mesh's `model` axis (NUM_PARTITIONS); data
      parallelism takes the other devices.
    mesh_shape: explicit `(data, model)` mesh shape; None: from
      `num_partitions` and the devices.
    num_microbatches: gradient accumulation steps per batch
      (NUM_MICROBATCHES).
    frozen_dtype: one of FROZEN_DTYPES (FROZEN_DTYPE): the frozen
      parameters are cast to it once when the state is built and stay so on
      the devices ('bfloat16' halves their memory); the trainable
      parameters, their gradients and the optimizer state stay float32. The
      model computes in its ACTIVATION_DTYPE either way.
  """
  num_partitions: int = 1
  mesh_shape: Optional[tuple[int, int]] = None
  num_microbatches: int = 1
  frozen_dtype: str = DEFAULT_FROZEN_DTYPE
