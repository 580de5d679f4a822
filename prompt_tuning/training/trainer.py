"""The training loop: build a partitioned state, resume, step, checkpoint,
evaluate.

`train(...)` is a plain function (gin binds it in `prompt_tuning.train`):

  0. check every setting, the data, the vocabulary and the checkpoint path
     (`preflight.py`), then hold MODEL_DIR for this run (`run_dir.py`):
     nothing is loaded or written before the checks pass;
  1. build the sharded state (`state.py`): the frozen base read from
     `initial_checkpoint_path` straight into its shardings (strict: only
     trainable parameters may be absent from it), the missing parameters
     initialised, the prompt drawn from the loaded embedding table (and a
     deep prompt from its `prompt_source`, e.g. a multi-task run), the
     trainable half given optimizer state (step counter 0 or the pretrained
     checkpoint's);
  2. the trainable half is the split the checks computed once (the model's
     declared set, or TRAINABLE_PATTERNS), passed down to the state, the
     shardings and the checkpoints;
  3. resume from `model_dir/checkpoints` if a checkpoint is there (state,
     data position; the frozen base must match the recorded one);
  4. loop: jitted `train_step`, tqdm with loss, steps/s and tokens/s,
     TensorBoard scalars every `log_period` steps; a NaN/Inf loss, or a
     trainable norm or update far outside the usual range (the divergence
     guard), stops the run before any further checkpoint is written;
     checkpoints every
     `checkpoint_period` steps and at the end (with `export_t5x`, each also
     as a T5X checkpoint `model_dir/checkpoint_<optimizer step>` holding the
     whole model, which a later run's `initial_checkpoint_path` loads);
     evaluation every
     `eval_period` steps, keeping the best checkpoint by `best_metric`;
     evaluations due before a resume that never finished are run first.

Multi-process runs (`distributed.initialize` first, e.g. the entry point's
`--coordinator_address/--num_processes/--process_id`): every process runs
`train`; each reads the SeqIO shard of the batch rows its devices hold
(`distributed.batch_feed`) and the global batch is assembled from them;
checkpoints are saved and restored by all processes together; MODEL_DIR's
lock and records, TensorBoard and T5X exports come from process 0 only.
"""

import dataclasses
import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence

from clu import metric_writers
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from prompt_tuning import errors
from prompt_tuning import partitioning
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import checkpointer as train_ckpt
from prompt_tuning.training import data
from prompt_tuning.training import distributed
from prompt_tuning.training import evaluation
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned
from prompt_tuning.training import preflight
from prompt_tuning.training import run_dir
from prompt_tuning.training import state as state_lib
from prompt_tuning.training.state import OPTIMIZER_STEP_RESTORED
from prompt_tuning.training.train_state import TrainState

_log = logging.getLogger(__name__)

# Step metrics whose window value is the maximum, not the sum.
_MAX_METRICS = frozenset({"trainable_norm", "update_ratio"})


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf loss."""


class DivergenceError(FloatingPointError):
  """The trainable parameters or their updates left the usual range."""


@dataclasses.dataclass
class TrainResult:
  """Attributes:
    state: the final state (None for a `validate_only` call).
    metrics: the last logged window's training metrics.
    eval_results: `{step: {task: {metric: value}}}` of this call.
    history: every logged window, `(step, metrics)`.
    checks: what the checks before the run found.
  """
  state: Optional[TrainState]
  metrics: dict[str, float]
  eval_results: dict[int, Any]
  history: list[tuple[int, dict[str, float]]]
  checks: Optional[preflight.Preflight] = None


def export_t5x_checkpoint(model_dir: str, state: TrainState,
                          keep: int) -> Optional[str]:
  """Writes `state`'s parameters as `model_dir/checkpoint_<N>` (T5X).

  N is Adafactor's step counter (the state's step if it has none), so a run
  continuing a restored counter numbers its checkpoints after the one it
  started from. Only the first process writes; the `keep` newest exports
  are kept.

  Returns:
    The checkpoint directory, or None on other processes.
  """
  step = optimizers.optimizer_step(state.opt_state)
  step = int(jax.device_get(state.step)) if step is None else step
  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(state.params, tiled=True)
  else:
    params = jax.device_get(state.params)
  if jax.process_index() > 0:
    return None
  path = t5x.save_t5x_checkpoint(model_dir, params, step)
  t5x.remove_old_checkpoints(model_dir, keep)
  return str(path)


def _write_scalars(writer: Any, step: int, scalars: Mapping[str, float]):
  writer.write_scalars(step, dict(scalars))
  writer.flush()


def _accumulate(summed: Mapping[str, jax.Array],
                metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Adds a step's metrics to the window's (maximum for `_MAX_METRICS`)."""
  if not summed:
    return dict(metrics)
  return {k: (jnp.maximum if k in _MAX_METRICS else jnp.add)(summed[k], v)
          for k, v in metrics.items()}


def train(*,
          model: EncoderDecoderModel,
          mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int],
          train_steps: int,
          batch_size: int,
          model_dir: str,
          initial_checkpoint_path: Optional[str] = None,
          trainable_patterns: Optional[Sequence[str]] = None,
          allow_all_trainable: bool = False,
          optimizer: Optional[optax.GradientTransformation] = None,
          optimizer_step: str = OPTIMIZER_STEP_RESTORED,
          num_partitions: int = 1,
          mesh_shape: Optional[tuple[int, int]] = None,
          num_microbatches: int = 1,
          seed: int = 0,
          log_period: int = 10,
          checkpoint_period: int = 1000,
          keep_checkpoints: int = 3,
          save_frozen: bool = False,
          export_t5x: bool = False,
          eval_period: int = 0,
          eval_mixture_or_task_name: Optional[str] = None,
          eval_split: str = "validation",
          eval_batch_size: Optional[int] = None,
          eval_num_examples: Optional[int] = None,
          eval_feature_lengths: Optional[Mapping[str, int]] = None,
          length_buckets: buckets_lib.Spec = None,
          group_by_length: bool = False,
          best_metric: Optional[str] = None,
          max_update_ratio: Optional[float] = 100.0,
          max_norm_growth: Optional[float] = 1e4,
          run_config: Optional[str] = None,
          validate_only: bool = False,
          progress: bool = True) -> TrainResult:
  """Trains the parameters matching `trainable_patterns`; see module doc.

  Everything is checked first (`preflight.check_train_run`): a bad setting
  fails before any weight is loaded or any file written.

  Args:
    model: the model (e.g. gin's MODEL).
    mixture_or_task_name: SeqIO task or mixture to train on.
    task_feature_lengths: `{'inputs': ..., 'targets': ...}`.
    train_steps: total steps; a resumed run continues up to it.
    batch_size: global batch size.
    model_dir: checkpoints, metrics and TensorBoard events go here; one run
      at a time (`run_dir.RunLock`).
    initial_checkpoint_path: pretrained weights (T5X or Hugging Face
      directory); None trains from random initialisation.
    trainable_patterns: regexes over parameter names to train; None (the
      default) trains what the model declares (`model.trainable_patterns`:
      the soft prompt, the deep prompt and head, or both).
    allow_all_trainable: permit patterns matching every parameter (full
      fine-tuning, runs/model_finetune.gin).
    optimizer: default `optimizers.adafactor()` (the paper's settings).
    optimizer_step: 'restored' (the original's behaviour) starts Adafactor's
      step counter at the pretrained T5X checkpoint's step, or at 0 when the
      checkpoint holds none (Hugging Face, random init); 'zero' at 0.
    num_partitions: size of the mesh's `model` axis.
    mesh_shape: explicit `(data, model)` mesh shape.
    num_microbatches: gradient accumulation steps per batch.
    seed: parameter init, prompt init, data order and dropout.
    log_period: steps between metric logs (and NaN / divergence checks).
    checkpoint_period: steps between checkpoints.
    keep_checkpoints: recent checkpoints kept.
    save_frozen: also checkpoint the frozen parameters (full fine-tuning).
    export_t5x: also write every checkpoint as the T5X checkpoint
      `model_dir/checkpoint_<N>` of all parameters, N being Adafactor's step
      counter (this run's steps plus a restored checkpoint's step), keeping
      the `keep_checkpoints` newest; `initial_checkpoint_path` reads it
      (runs/pretrain.gin, runs/lm_adapt.gin).
    eval_period: steps between evaluations; 0 evaluates only at the end if
      `eval_mixture_or_task_name` is set, never otherwise. A resumed run
      first runs the evaluations due at or before its step that have no
      recorded result (e.g. one killed mid-way).
    eval_mixture_or_task_name: what to evaluate; default none.
    eval_split: split to evaluate.
    eval_batch_size: default `batch_size`.
    eval_num_examples: evaluate on the first N examples only.
    eval_feature_lengths: the evaluation's `{'inputs', 'targets'}` lengths;
      default `task_feature_lengths` (e.g. train on short inputs, evaluate on
      the full sentences).
    length_buckets: None (T5X's fixed shapes), an int N (each batch cut to
      the next multiple of N that holds its longest example, at most the
      feature length) or a dict of lengths per feature
      (`training.length_buckets`); the same for training and evaluation.
      Batches keep their order; one compilation per bucket.
    group_by_length: batch together examples of similar input length (by
      the inputs buckets of `length_buckets`, which it needs), so that the
      cut batches hold little padding; changes which examples share a batch
      (`training.data.train_batches`).
    best_metric: `task/metric` to keep the best checkpoint by (under
      `model_dir/best`), e.g. 'taskless_super_glue_rte_v102/accuracy'.
    max_update_ratio: divergence guard: stop when one step's update is more
      than this many times the norm of the trainable parameters; None: off.
    max_norm_growth: divergence guard: stop when the trainable parameters'
      norm exceeds this many times its value at the start; None: off.
    run_config: the run's configuration text (the gin entry point passes
      `gin.config_str()`): written to `model_dir/config.gin` when the run
      starts fresh, compared with it when resuming (a difference is refused).
    validate_only: run the checks only; load and write nothing.
    progress: show a tqdm bar.
  """
  checked = preflight.check_train_run(
      model=model, mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths, train_steps=train_steps,
      batch_size=batch_size, model_dir=model_dir,
      initial_checkpoint_path=initial_checkpoint_path,
      trainable_patterns=trainable_patterns,
      allow_all_trainable=allow_all_trainable, optimizer_step=optimizer_step,
      num_partitions=num_partitions, mesh_shape=mesh_shape,
      num_microbatches=num_microbatches, seed=seed, log_period=log_period,
      checkpoint_period=checkpoint_period, keep_checkpoints=keep_checkpoints,
      eval_period=eval_period,
      eval_mixture_or_task_name=eval_mixture_or_task_name,
      eval_split=eval_split, eval_batch_size=eval_batch_size,
      eval_num_examples=eval_num_examples, best_metric=best_metric,
      max_update_ratio=max_update_ratio, max_norm_growth=max_norm_growth,
      run_config=run_config)
  eval_feature_lengths = preflight.check_feature_lengths(
      eval_feature_lengths or task_feature_lengths,
      "EVAL_TASK_FEATURE_LENGTHS")
  buckets_lib.check_spec(length_buckets, task_feature_lengths)
  buckets_lib.check_spec(length_buckets, eval_feature_lengths)
  if group_by_length and length_buckets is None:
    raise errors.ConfigError(
        "GROUP_BY_LENGTH groups examples by the inputs length buckets, but "
        "LENGTH_BUCKETS is None; set e.g. --gin.LENGTH_BUCKETS=64 too.")
  for note in checked.notes:
    _log.info("%s", note)
  for warning in checked.warnings:
    _log.warning("%s", warning)
  if validate_only:
    return TrainResult(state=None, metrics={}, eval_results={}, history=[],
                       checks=checked)
  with run_dir.hold(model_dir):
    return _train_locked(
        checked, model=model, mixture_or_task_name=mixture_or_task_name,
        task_feature_lengths=dict(task_feature_lengths),
        train_steps=train_steps, batch_size=batch_size, model_dir=model_dir,
        initial_checkpoint_path=initial_checkpoint_path,
        tx=optimizer or optimizers.adafactor(), optimizer_step=optimizer_step,
        num_microbatches=num_microbatches, seed=seed, log_period=log_period,
        checkpoint_period=checkpoint_period,
        keep_checkpoints=keep_checkpoints, save_frozen=save_frozen,
        export_t5x=export_t5x, eval_period=eval_period,
        eval_mixture_or_task_name=eval_mixture_or_task_name,
        eval_split=eval_split, eval_batch_size=eval_batch_size,
        eval_num_examples=eval_num_examples,
        eval_feature_lengths=eval_feature_lengths,
        length_buckets=length_buckets, group_by_length=group_by_length,
        best_metric=best_metric, max_update_ratio=max_update_ratio, max_norm_growth=max_norm_growth,
        run_config=run_config, progress=progress)


def _train_locked(checked: preflight.Preflight, *, model, mixture_or_task_name,
                  task_feature_lengths, train_steps, batch_size, model_dir,
                  initial_checkpoint_path, tx, optimizer_step,
                  num_microbatches,
                  seed, log_period, checkpoint_period, keep_checkpoints,
                  save_frozen, export_t5x, eval_period,
                  eval_mixture_or_task_name, eval_split, eval_batch_size,
                  eval_num_examples, eval_feature_lengths, length_buckets,
                  group_by_length, best_metric,
                  max_update_ratio, max_norm_growth, run_config,
                  progress) -> TrainResult:
  """`train` after its checks, holding MODEL_DIR's lock."""
  mesh = checked.mesh
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  split = checked.split
  trainable_patterns = split.patterns
  built = state_lib.build_train_state(
      model, mesh, tx, initial_checkpoint_path, split,
      boxed_params=checked.boxed_params, optimizer_step=optimizer_step,
      rng=init_rng)
  state, shardings, boxed = built.state, built.shardings, built.boxed_params
  frozen_record = built.frozen_record
  # Weights loaded and checked: the run is real, record its configuration.
  run_dir.record_config(model_dir, run_config, checked.has_checkpoint)

  checkpointer = train_ckpt.TrainCheckpointer(
      model_dir, keep=keep_checkpoints, save_frozen=save_frozen)
  data_position = 0
  if checkpointer.latest_step() is not None:
    restored = checkpointer.restore(state, frozen_record=frozen_record)
    state, data_position = restored.state, restored.data_position
  start_step = int(jax.device_get(state.step))
  reference_norm = float(jax.device_get(optax.tree.norm(state.trainable)))

  train_fn = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings,
                                            num_microbatches)
  evaluator = None
  best = None
  if eval_mixture_or_task_name:
    param_shardings = partitioning.param_shardings(boxed, mesh)
    evaluator = evaluation.Evaluation(
        eval_mixture_or_task_name, model, mesh, param_shardings,
        batch_size=eval_batch_size or batch_size,
        feature_lengths=eval_feature_lengths, split=eval_split,
        log_dir=os.path.join(model_dir, "inference_eval"),
        num_examples=eval_num_examples, length_buckets=length_buckets)
    if best_metric:
      best = train_ckpt.TrainCheckpointer(
          model_dir, keep=1, save_frozen=save_frozen, subdir="best",
          best_metric=best_metric)

  writer = metric_writers.create_default_writer(
      os.path.join(model_dir, "train"), just_logging=jax.process_index() > 0)

  # This process's rows of each global batch (all of it with one process).
  feed = distributed.batch_feed(partitioning.batch_sharding(mesh), batch_size)
  batches = data.train_batches(mixture_or_task_name, task_feature_lengths,
                               feed.local_batch_size, seed=seed,
                               start_position=data_position,
                               with_label=model.is_classifier,
                               shard_info=feed.shard_info,
                               group_lengths=buckets_lib.LengthBuckets.from_spec(
                                   length_buckets, task_feature_lengths).inputs
                               if group_by_length else None)
  bucketer = buckets_lib.Bucketer(
      length_buckets, cut_targets=True,
      agree=distributed.max_over_processes if feed.shard_info else None)
  last_good_checkpoint = checkpointer.latest_step()
  summed: dict[str, jax.Array] = {}
  last_metrics: dict[str, float] = {}
  eval_results: dict[int, Any] = {}
  history: list[tuple[int, dict[str, float]]] = []
  window_start, window_steps, window_tokens = time.time(), 0, 0

  def check_and_log(step: int) -> None:
    nonlocal summed, window_start, window_steps, window_tokens
    nonlocal last_metrics
    if not summed:
      return
    host = {k: float(v) for k, v in jax.device_get(summed).items()}
    summed = {}
    stop = (f"; stopped without writing another checkpoint. The last good "
            f"checkpoint is step {last_good_checkpoint} in "
            f"{checkpointer.directory}.")
    if not np.isfinite(host["loss"]) or host["nonfinite_params"]:
      raise NonFiniteLossError(
          f"Loss became {host['loss']} (and {host['nonfinite_params']:.0f} "
          f"trainable values NaN/Inf) by step {step}" + stop +
          " Lower LEARNING_RATE or check the data.")
    if max_update_ratio is not None and host["update_ratio"] > max_update_ratio:
      raise DivergenceError(
          f"Training diverged by step {step}: an update was "
          f"{host['update_ratio']:.3g} times the norm of the trainable "
          f"parameters (limit max_update_ratio={max_update_ratio:g})" + stop +
          " Lower LEARNING_RATE, or raise/disable the guard with "
          "--gin.trainer.train.max_update_ratio=None.")
    if (max_norm_growth is not None and reference_norm > 0 and
        host["trainable_norm"] > max_norm_growth * reference_norm):
      raise DivergenceError(
          f"Training diverged by step {step}: the trainable parameters' norm "
          f"is {host['trainable_norm']:.3g}, {host['trainable_norm'] / reference_norm:.3g} "
          f"times its value {reference_norm:.3g} at step {start_step} (limit "
          f"max_norm_growth={max_norm_growth:g})" + stop +
          " Lower LEARNING_RATE, or raise/disable the guard with "
          "--gin.trainer.train.max_norm_growth=None.")
    elapsed = max(time.time() - window_start, 1e-9)
    last_metrics = {
        "loss": host["loss"] / window_steps,
        "loss_per_token": host["loss"] / max(host["num_tokens"], 1.0),
        "z_loss": host["z_loss"] / window_steps,
        "accuracy": host["accuracy_correct"] / max(host["num_tokens"], 1.0),
        "grad_norm": host["grad_norm"] / window_steps,
        "trainable_norm": host["trainable_norm"],
        "update_ratio": host["update_ratio"],
        "steps_per_second": window_steps / elapsed,
        "tokens_per_second": window_tokens / elapsed,
        "padding_share": bucketer.log.padding_share,
    }
    history.append((step, last_metrics))
    _write_scalars(writer, step, last_metrics)
    bar.set_postfix(loss=f"{last_metrics['loss']:.3f}",
                    steps_s=f"{last_metrics['steps_per_second']:.2f}",
                    tokens_s=f"{last_metrics['tokens_per_second']:.0f}")
    window_start, window_steps, window_tokens = time.time(), 0, 0

  def save(step: int) -> None:
    nonlocal last_good_checkpoint
    check_and_log(step)  # Never checkpoint past a non-finite loss.
    if checkpointer.latest_step() != step:
      checkpointer.save(state, data_position=data_position,
                        frozen_record=frozen_record,
                        trainable_patterns=trainable_patterns)
    if export_t5x:
      export_t5x_checkpoint(model_dir, state, keep_checkpoints)
    last_good_checkpoint = step

  def eval_due(step: int) -> bool:
    return bool(step) and (bool(eval_period and step % eval_period == 0) or
                           step == train_steps)

  def run_eval(step: int, eval_state: TrainState, position: int) -> None:
    results = evaluator(eval_state.params, step)
    eval_results[step] = results
    flat = {run_dir.metric_key(task, name): value
            for task, metrics in results.items()
            for name, value in metrics.items() if np.isscalar(value)}
    _write_scalars(writer, step, {f"eval/{k}": v for k, v in flat.items()})
    if best is not None:
      if best_metric not in flat:
        raise KeyError(f"best_metric {best_metric!r} is not among the eval "
                       f"metrics {sorted(flat)}.")
      best.save(eval_state, data_position=position,
                frozen_record=frozen_record,
                trainable_patterns=trainable_patterns,
                metrics={best_metric: flat[best_metric]})
    # Recorded last: an evaluation killed before this line is re-run.
    run_dir.record_eval(model_dir, step, flat)

  def run_missing_evals() -> None:
    """Evaluations due at or before the restored step with no result."""
    done = run_dir.evaluated_steps(model_dir)
    for step in sorted(set(checkpointer.all_steps()) | {start_step}):
      if step > start_step or step in done or not eval_due(step):
        continue
      if step == start_step:
        run_eval(step, state, data_position)
      else:
        old = checkpointer.restore(state, step, frozen_record=frozen_record)
        run_eval(step, old.state, old.data_position)

  bar = tqdm.tqdm(total=train_steps, initial=min(start_step, train_steps),
                  disable=not progress or not distributed.is_primary(),
                  desc="train", dynamic_ncols=True)
  try:
    if evaluator is not None:
      run_missing_evals()
    for step in range(start_step, train_steps):
      batch = feed(bucketer(next(batches)))
      state, metrics = train_fn(state, batch, dropout_rng)
      data_position += 1
      summed = _accumulate(summed, metrics)
      window_steps += 1
      window_tokens += (batch["encoder_input_tokens"].size +
                        batch["decoder_target_tokens"].size)
      bar.update(1)
      done = step + 1
      if done % log_period == 0:
        check_and_log(done)
      if done % checkpoint_period == 0 or done == train_steps:
        save(done)
      if evaluator is not None and eval_due(done):
        run_eval(done, state, data_position)
    if start_step >= train_steps and checkpointer.latest_step() is None:
      save(start_step)
  finally:
    bar.close()
    if bucketer.log.batches:
      _log.info("%s", bucketer.log.summary("Training batches"))
    checkpointer.close()
    if best is not None:
      best.close()
    writer.close()
  return TrainResult(state=state, metrics=last_metrics,
                     eval_results=eval_results, history=history,
                     checks=checked)
