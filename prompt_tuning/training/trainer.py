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
     TensorBoard scalars every `log_period` steps (`monitoring.LogWindow`);
     a NaN/Inf loss, or a trainable norm or update far outside the usual
     range (`monitoring.DivergenceGuard`), stops the run before any further
     checkpoint is written; checkpoints every `CheckpointConfig.period`
     steps and at the end (with `export_t5x`, each also as a T5X checkpoint
     `model_dir/checkpoint_<optimizer step>` holding the whole model, which
     a later run's `initial_checkpoint_path` loads); evaluation every
     `EvalConfig.period` steps, keeping the best checkpoint by
     `best_metric`; evaluations due before a resume that never finished are
     run first; SIGTERM or SIGINT (a preempting scheduler, Ctrl-C) checkpoints
     the step reached and ends the run with `preemption.Preempted`;
     with `EvalConfig.early_stopping_patience`, an evaluation that leaves
     that many in a row without an improvement of `best_metric` (counted
     from `eval_metrics.jsonl`) ends the run as its last step would, its
     stop recorded there; a re-run then trains no further and, while the
     stop still holds with its settings, loads nothing (`stopped_before`).

The settings come as `run_settings` objects (`DatasetConfig`, `EvalConfig`,
`CheckpointConfig`, `DivergenceGuardConfig`, `PartitioningConfig`), each
setting declared there once.

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
from typing import Any, Optional, Sequence

from clu import metric_writers
import jax
from jax.experimental import multihost_utils
import numpy as np
import optax
import tqdm

from prompt_tuning import partitioning
from prompt_tuning.checkpoints import run_checkpoints
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import checkpointer as train_ckpt
from prompt_tuning.training import data
from prompt_tuning.training import distributed
from prompt_tuning.training import evaluation
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import monitoring
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned
from prompt_tuning.training import preemption
from prompt_tuning.training import preflight
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings
from prompt_tuning.training import state as state_lib
from prompt_tuning.training import steps
from prompt_tuning.training.state import OPTIMIZER_STEP_RESTORED
from prompt_tuning.training.train_state import TrainState

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
  """Attributes:
    state: the final state (None for a `validate_only` call, and for a
      re-run of a run that stopped early: nothing is loaded then).
    metrics: the last logged window's training metrics.
    eval_results: `{step: {task: {metric: value}}}` of this call.
    history: every logged window, `(step, metrics)`.
    checks: what the checks before the run found.
    early_stop: early stopping's record (`run_dir.early_stop_due`) when the
      run stopped early, in this call or an earlier one; else None.
  """
  state: Optional[TrainState]
  metrics: dict[str, float]
  eval_results: dict[int, Any]
  history: list[tuple[int, dict[str, float]]]
  checks: Optional[preflight.Preflight] = None
  early_stop: Optional[dict[str, Any]] = None


def export_t5x_checkpoint(model_dir: str, state: TrainState,
                          keep: int) -> Optional[str]:
  """Writes `state`'s parameters as `model_dir/checkpoint_<N>` (T5X).

  N is Adafactor's step counter (the state's step if it has none), so a run
  continuing a restored counter numbers its checkpoints after the one it
  started from. The trainable parameters' Adafactor slots go into T5X's
  `param_states` (the frozen ones' are zeros), so T5X's own restore takes
  the export. Only the first process writes; the `keep` newest exports
  are kept.

  Returns:
    The checkpoint directory, or None on other processes.
  """
  step = optimizers.optimizer_step(state.opt_state)
  step = int(jax.device_get(state.step)) if step is None else step
  slots = optimizers.adafactor_slots(state.opt_state)
  if jax.process_count() > 1:
    params, slots = multihost_utils.process_allgather((state.params, slots),
                                                      tiled=True)
  else:
    params, slots = jax.device_get((state.params, slots))
  if jax.process_index() > 0:
    return None
  path = t5x.save_t5x_checkpoint(model_dir, params, step,
                                 param_states=slots)
  t5x.remove_old_checkpoints(model_dir, keep)
  return str(path)


def train(*,
          model: EncoderDecoderModel,
          train_dataset_cfg: run_settings.DatasetConfig,
          train_steps: int,
          model_dir: str,
          initial_checkpoint_path: Optional[str] = None,
          eval_cfg: Optional[run_settings.EvalConfig] = None,
          checkpoint_cfg: run_settings.CheckpointConfig = (
              run_settings.CheckpointConfig()),
          guard_cfg: run_settings.DivergenceGuardConfig = (
              run_settings.DivergenceGuardConfig()),
          partitioning_cfg: run_settings.PartitioningConfig = (
              run_settings.PartitioningConfig()),
          trainable_patterns: Optional[Sequence[str]] = None,
          allow_all_trainable: bool = False,
          optimizer: Optional[optax.GradientTransformation] = None,
          optimizer_step: str = OPTIMIZER_STEP_RESTORED,
          seed: int = 0,
          dropout_rng_impl: str = steps.DEFAULT_DROPOUT_RNG_IMPL,
          log_period: int = 10,
          run_config: Optional[str] = None,
          validate_only: bool = False,
          progress: bool = True) -> TrainResult:
  """Trains the model's trainable parameters; see the module doc.

  Everything is checked first (`preflight.check_train_run`): a bad setting
  fails before any weight is loaded or any file written. The settings of
  the `*_cfg` objects are documented in `run_settings`.

  Args:
    model: the model (e.g. gin's MODEL).
    train_dataset_cfg: what to train on (task, lengths, split, batch size,
      length buckets).
    train_steps: total steps; a resumed run continues up to it.
    model_dir: checkpoints, metrics and TensorBoard events go here; one run
      at a time (`run_dir.RunLock`).
    initial_checkpoint_path: pretrained weights (T5X or Hugging Face
      directory); None trains from random initialisation.
    eval_cfg: evaluation during training; None (or a dataset without a task)
      evaluates nothing.
    checkpoint_cfg: how often to checkpoint, how many to keep, what to save.
    guard_cfg: the divergence guard's limits.
    partitioning_cfg: the mesh and the microbatches.
    trainable_patterns: regexes over parameter names to train; None (the
      default) trains what the model declares (`model.trainable_patterns`:
      the soft prompt, the deep prompt and head, or both).
    allow_all_trainable: permit patterns matching every parameter (full
      fine-tuning, runs/model_finetune.gin).
    optimizer: default `optimizers.adafactor()` (the paper's settings).
    optimizer_step: 'restored' (the original's behaviour) starts Adafactor's
      step counter at the pretrained T5X checkpoint's step, or at 0 when the
      checkpoint holds none (Hugging Face, random init); 'zero' at 0.
    seed: parameter init, prompt init, data order and dropout.
    dropout_rng_impl: how dropout's bits are drawn, one of
      `steps.DROPOUT_RNG_IMPLS` ('unsafe_rbg', the fastest, by default;
      'threefry2x32' draws T5X's masks bit for bit).
    log_period: steps between metric logs (and NaN / divergence checks).
    run_config: the run's configuration text (the gin entry point passes
      `gin.config_str()`): written to `model_dir/config.gin` when the run
      starts fresh, compared with it when resuming (a difference is refused).
    validate_only: run the checks only; load and write nothing.
    progress: show a tqdm bar.

  Raises:
    preemption.Preempted: (a `SystemExit`, code 128 + the signal number)
      after SIGTERM or SIGINT, once the checkpoint of the step reached is
      written; re-running the same call resumes from it.
  """
  init_rng, dropout_rng = steps.run_keys(seed, dropout_rng_impl)
  checked = preflight.check_train_run(
      model=model, train_dataset_cfg=train_dataset_cfg, eval_cfg=eval_cfg,
      checkpoint_cfg=checkpoint_cfg, guard_cfg=guard_cfg,
      partitioning_cfg=partitioning_cfg, model_dir=model_dir,
      initial_checkpoint_path=initial_checkpoint_path,
      trainable_patterns=trainable_patterns,
      allow_all_trainable=allow_all_trainable, optimizer_step=optimizer_step,
      train_steps=train_steps, seed=seed, log_period=log_period,
      run_config=run_config)
  for note in checked.notes:
    _log.info("%s", note)
  for warning in checked.warnings:
    _log.warning("%s", warning)
  if validate_only:
    return TrainResult(state=None, metrics={}, eval_results={}, history=[],
                       checks=checked)
  stopped = stopped_before(model_dir, eval_cfg)
  if stopped is not None:
    _log.warning("This run stopped early at step %d (%s last improved at "
                 "step %d); not loading or training further. Raise "
                 "EARLY_STOPPING_PATIENCE (or set it to None) to continue "
                 "it.", stopped["step"], stopped["metric"],
                 stopped["best_step"])
    return TrainResult(state=None, metrics={}, eval_results={}, history=[],
                       checks=checked, early_stop=stopped)
  tx = optimizer or optimizers.adafactor()
  with run_dir.hold(model_dir):
    built = state_lib.build_train_state(
        model, checked.mesh, tx, initial_checkpoint_path, checked.split,
        boxed_params=checked.boxed_params, optimizer_step=optimizer_step,
        rng=init_rng, frozen_dtype=partitioning_cfg.frozen_dtype)
    # Weights loaded and checked: the run is real, record its configuration.
    run_dir.record_config(model_dir, run_config, checked.has_checkpoint)
    train_fn = partitioned.compile_train_step(
        model.loss_fn, tx, checked.mesh, built.shardings,
        partitioning_cfg.num_microbatches, model.module.config.remat_policy)
    if eval_cfg is not None and not eval_cfg.active:
      eval_cfg = None
    run = _Run(model, checked, built, model_dir, checkpoint_cfg, eval_cfg,
               train_steps)
    return run.loop(train_fn, train_dataset_cfg, guard_cfg, seed=seed,
                    dropout_rng=dropout_rng, log_period=log_period,
                    progress=progress)


def stopped_before(model_dir: str, eval_cfg: Optional[run_settings.EvalConfig]
                   ) -> Optional[dict[str, Any]]:
  """The early stop an earlier call recorded in `model_dir`, when the run is
  over as it left it: these settings' early stopping (patience, min delta)
  is still due at that step, and that step is the latest checkpoint. None
  otherwise (the loop then decides, after loading). Reads only."""
  if (eval_cfg is None or not eval_cfg.active or
      eval_cfg.early_stopping_patience is None):
    return None
  record = run_dir.early_stop_record(model_dir)
  steps = run_checkpoints.completed_steps(model_dir)
  if record is None or not steps or steps[-1] != int(record["step"]):
    return None
  due = run_dir.early_stop_due(
      run_dir.eval_records(model_dir), int(record["step"]),
      metric=eval_cfg.best_metric,
      patience=eval_cfg.early_stopping_patience,
      min_delta=eval_cfg.early_stopping_min_delta)
  return record if due is not None else None


class _Run:
  """`train` after its checks, holding MODEL_DIR's lock: the built state,
  its checkpoints and evaluations, and the loop."""

  def __init__(self, model: EncoderDecoderModel, checked: preflight.Preflight,
               built: state_lib.BuiltState, model_dir: str,
               checkpoint_cfg: run_settings.CheckpointConfig,
               eval_cfg: Optional[run_settings.EvalConfig], train_steps: int):
    self.model, self.checked, self.model_dir = model, checked, model_dir
    self.checkpoint_cfg, self.eval_cfg = checkpoint_cfg, eval_cfg
    self.train_steps = train_steps
    self.frozen_record = built.frozen_record
    self.checkpoints = train_ckpt.TrainCheckpointer(
        model_dir, keep=checkpoint_cfg.keep,
        save_frozen=checkpoint_cfg.save_frozen)
    self.state, self.data_position = built.state, 0
    if self.checkpoints.latest_step() is not None:
      restored = self.checkpoints.restore(self.state,
                                          frozen_record=self.frozen_record)
      self.state, self.data_position = restored.state, restored.data_position
    self.start_step = int(jax.device_get(self.state.step))
    self.last_good_checkpoint = self.checkpoints.latest_step()
    self.eval_results: dict[int, Any] = {}
    # This call's latest evaluation `{"step", metrics...}`: early stopping
    # reads it from memory (other processes may not see the file yet).
    self.last_eval: Optional[dict[str, Any]] = None
    self.evaluator, self.best = None, None
    if eval_cfg is not None:
      dataset = eval_cfg.dataset
      self.evaluator = evaluation.Evaluation(
          dataset.mixture_or_task_name, model, checked.mesh,
          partitioning.param_shardings(built.boxed_params, checked.mesh),
          batch_size=dataset.batch_size,
          feature_lengths=dict(dataset.task_feature_lengths),
          split=dataset.split,
          log_dir=os.path.join(model_dir, "inference_eval"),
          num_examples=eval_cfg.num_examples,
          length_buckets=dataset.length_buckets)
      if eval_cfg.best_metric:
        self.best = train_ckpt.TrainCheckpointer(
            model_dir, keep=1, save_frozen=checkpoint_cfg.save_frozen,
            subdir="best", best_metric=eval_cfg.best_metric)
    self.writer = metric_writers.create_default_writer(
        os.path.join(model_dir, "train"),
        just_logging=jax.process_index() > 0)

  def loop(self, train_fn: Any, data_cfg: run_settings.DatasetConfig,
           guard_cfg: run_settings.DivergenceGuardConfig, *, seed: int,
           dropout_rng: jax.Array, log_period: int,
           progress: bool) -> TrainResult:
    """Steps from the restored step to `train_steps`, logging, checking,
    checkpointing and evaluating on the way; closes everything."""
    # This process's rows of each global batch (all of it with one process).
    feed = distributed.batch_feed(
        partitioning.batch_sharding(self.checked.mesh), data_cfg.batch_size)
    lengths = dict(data_cfg.task_feature_lengths)
    batches = data.train_batches(
        data_cfg.mixture_or_task_name, lengths, feed.local_batch_size,
        seed=seed, start_position=self.data_position, split=data_cfg.split,
        with_label=self.model.is_classifier, shard_info=feed.shard_info,
        group_lengths=buckets_lib.LengthBuckets.from_spec(
            data_cfg.length_buckets, lengths).inputs
        if data_cfg.group_by_length else None)
    bucketer = buckets_lib.Bucketer(
        data_cfg.length_buckets, cut_targets=True,
        agree=distributed.max_over_processes if feed.shard_info else None)
    guard = monitoring.DivergenceGuard(
        guard_cfg, float(jax.device_get(optax.tree.norm(
            self.state.trainable))), self.start_step)
    bar = tqdm.tqdm(total=self.train_steps,
                    initial=min(self.start_step, self.train_steps),
                    disable=not progress or not distributed.is_primary(),
                    desc="train", dynamic_ncols=True)
    window = monitoring.LogWindow(self.writer, bar)

    def log(step: int) -> None:
      totals = window.totals()
      if totals is not None:
        guard.check(totals, step, self._stop_note())
        window.write(step, totals, bucketer.log.padding_share)

    stop, stopped_at = preemption.StopSignals(), None
    try:
      stop.install()  # SIGTERM / SIGINT: checkpoint, then stop.
      self._run_missing_evals()
      # A run that stopped early (or was killed before recording it).
      early_stop = self._stop_early(self.start_step, log)
      first = self.train_steps if early_stop else self.start_step
      for step in range(first, self.train_steps):
        batch = feed(bucketer(next(batches)))
        self.state, metrics = train_fn(self.state, batch, dropout_rng)
        self.data_position += 1
        window.add(metrics, batch["encoder_input_tokens"].size +
                   batch["decoder_target_tokens"].size)
        bar.update(1)
        done = step + 1
        if done % log_period == 0:
          log(done)
        if (done % self.checkpoint_cfg.period == 0 or
            done == self.train_steps):
          log(done)  # Never checkpoint past a non-finite loss.
          self._save(done)
        if self._eval_due(done):
          self._evaluate(done, self.state, self.data_position)
          early_stop = self._stop_early(done, log)
          if early_stop:
            break
        if done < self.train_steps and stop.requested(done):
          log(done)  # Never checkpoint past a non-finite loss.
          self._save(done, export=False)
          stopped_at = done
          break
      if (self.start_step >= self.train_steps and
          self.checkpoints.latest_step() is None):
        log(self.start_step)
        self._save(self.start_step)
    finally:
      stop.restore()
      bar.close()
      if bucketer.log.batches:
        _log.info("%s", bucketer.log.summary("Training batches"))
      self.checkpoints.close()
      if self.best is not None:
        self.best.close()
      self.writer.close()
    if stopped_at is not None:
      raise stop.preempted(stopped_at, self.checkpoints.directory)
    return TrainResult(state=self.state,
                       metrics=window.history[-1][1] if window.history else {},
                       eval_results=self.eval_results,
                       history=window.history, checks=self.checked,
                       early_stop=early_stop)

  def _stop_note(self) -> str:
    return (f"; stopped without writing another checkpoint. The last good "
            f"checkpoint is step {self.last_good_checkpoint} in "
            f"{self.checkpoints.directory}.")

  def _save(self, step: int, export: bool = True) -> None:
    if self.checkpoints.latest_step() != step:
      self.checkpoints.save(self.state, data_position=self.data_position,
                            frozen_record=self.frozen_record,
                            trainable_patterns=self.checked.split.patterns)
    if export and self.checkpoint_cfg.export_t5x:
      export_t5x_checkpoint(self.model_dir, self.state,
                            self.checkpoint_cfg.keep)
    self.last_good_checkpoint = step

  def _eval_due(self, step: int) -> bool:
    if self.evaluator is None:
      return False
    if not step:
      return self.eval_cfg.before_training
    period = self.eval_cfg.period
    return bool(period and step % period == 0) or step == self.train_steps

  def _evaluate(self, step: int, state: TrainState, position: int) -> None:
    results = self.evaluator(state.params, step)
    self.eval_results[step] = results
    flat = {run_dir.metric_key(task, name): value
            for task, metrics in results.items()
            for name, value in metrics.items() if np.isscalar(value)}
    monitoring.write_scalars(self.writer, step,
                             {f"eval/{k}": v for k, v in flat.items()})
    if self.best is not None:
      best_metric = self.eval_cfg.best_metric
      if best_metric not in flat:
        raise KeyError(f"best_metric {best_metric!r} is not among the eval "
                       f"metrics {sorted(flat)}.")
      self.best.save(state, data_position=position,
                     frozen_record=self.frozen_record,
                     trainable_patterns=self.checked.split.patterns,
                     metrics={best_metric: flat[best_metric]})
    # Recorded last: an evaluation killed before this line is re-run.
    run_dir.record_eval(self.model_dir, step, flat)
    self.last_eval = {"step": step, **flat}

  def _stop_early(self, step: int,
                  log: Any) -> Optional[dict[str, Any]]:
    """Early stopping after the evaluations up to `step`: if they leave
    `early_stopping_patience` in a row without an improvement, checkpoints
    `step` as the end of training would (after `log(step)`, the divergence
    check), records the stop once and returns its record; else None."""
    cfg = self.eval_cfg
    if self.evaluator is None or cfg.early_stopping_patience is None:
      return None
    records = run_dir.eval_records(self.model_dir)
    if self.last_eval is not None:
      records = [r for r in records if r["step"] != self.last_eval["step"]]
      records.append(self.last_eval)
    due = run_dir.early_stop_due(
        records, step, metric=cfg.best_metric,
        patience=cfg.early_stopping_patience,
        min_delta=cfg.early_stopping_min_delta)
    if due is None:
      return None
    if self.checkpoints.latest_step() != step:
      log(step)  # Never checkpoint past a non-finite loss.
      self._save(step)
    recorded = run_dir.early_stop_record(self.model_dir)
    what = (f"{due['evaluations_without_improvement']} evaluations without "
            f"an improvement of {due['metric']} by more than "
            f"{due['min_delta']:g} (EARLY_STOPPING_PATIENCE="
            f"{due['patience']}) since {due['best']} at step "
            f"{due['best_step']}; the best checkpoint is in "
            f"{self.best.directory}")
    if recorded is not None and recorded["step"] == step:
      _log.warning("This run stopped early at step %d after %s; not training "
                   "further. Raise EARLY_STOPPING_PATIENCE (or set it to "
                   "None) to continue it.", step, what)
      return recorded
    run_dir.record_early_stop(self.model_dir, due)
    _log.warning("Early stopping at step %d after %s; final checkpoint in %s.",
                 step, what, self.checkpoints.directory)
    return due

  def _run_missing_evals(self) -> None:
    """Evaluations due at or before the restored step with no result."""
    if self.evaluator is None:
      return
    done = run_dir.evaluated_steps(self.model_dir)
    start = self.start_step
    for step in sorted(set(self.checkpoints.all_steps()) | {start}):
      if step > start or step in done or not self._eval_due(step):
        continue
      if step == start:
        self._evaluate(step, self.state, self.data_position)
      else:
        old = self.checkpoints.restore(self.state, step,
                                       frozen_record=self.frozen_record)
        self._evaluate(step, old.state, old.data_position)
