r"""Train a prompt (or a whole model) from gin files, T5X style.

  python -m prompt_tuning.train \
    --gin_file=models/t5_1_1_base.gin \
    --gin_file=prompts/from_class_labels.gin \
    --gin_file=runs/prompt_finetune.gin \
    --gin.MODEL_DIR="'/tmp/rte_prompt'" \
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'" \
    --gin.CLASS_LABELS="('entailment', 'not_entailment')"

Everything is checked before weights are loaded or files written: the gin
bindings (a command-line macro nothing reads is an error), the settings'
types, the task and its data, the vocabulary, the target length against the
task's labels, the checkpoint path and MODEL_DIR (one run at a time).
Re-running the same command after an interruption resumes from the latest
checkpoint in MODEL_DIR, first running any evaluation that was cut short.
The configuration is written once to MODEL_DIR/config.gin; a resume with
other settings (except TRAIN_STEPS, EVAL_PERIOD, CHECKPOINT_PERIOD and
MODEL_DIR) is refused, naming the differences.

A multi-process run (several hosts, or processes on one) runs the same
command on every process, adding

    --coordinator_address=HOST0:PORT --num_processes=N --process_id=I

(or --multihost where JAX detects them: TPU pods, SLURM, Open MPI). Each
process reads its shard of the data; all write the checkpoints together;
process 0 holds MODEL_DIR and writes its logs and records. MODEL_DIR must be
one directory all processes see.
"""

from typing import Sequence

from prompt_tuning import cli
from prompt_tuning import gin_utils


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  flag_values = cli.new_flags()
  cli.define_distributed_flags(flag_values)
  args = gin_utils.parse_gin_command(argv, __doc__, flag_values,
                                     before_gin=cli.initialize_distributed)
  # pylint: disable=g-import-not-at-top  (after the start-up logs are quiet)
  import gin
  import jax
  from prompt_tuning.training import trainer
  # pylint: enable=g-import-not-at-top
  train = gin.get_configurable(trainer.train)
  result = train(run_config=gin.config_str(),
                 validate_only=args.validate_only)
  if args.validate_only:
    print("Configuration valid: settings, task, data, vocabulary, "
          "checkpoint path and MODEL_DIR checked; nothing loaded or written.")
    return 0
  if jax.process_index() > 0:
    return 0  # Process 0 reports for the run.
  stop = result.early_stop
  if stop and not result.history and not result.eval_results:
    print(f"Stopped early at step {stop['step']} (BEST_METRIC last improved "
          f"at step {stop['best_step']}); raise EARLY_STOPPING_PATIENCE (or "
          "set it to None) to train further.")
  elif not result.history and not result.eval_results:
    print(f"Already trained to step {int(result.state.step)}; raise "
          "TRAIN_STEPS to train further.")
  if result.metrics:
    print("train " + ", ".join(f"{k}={v:.4g}" for k, v in
                               result.metrics.items()))
  for step, metrics in sorted(result.eval_results.items()):
    for task, values in metrics.items():
      shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in values.items())
      print(f"eval step {step} {task}: {shown}")
  return 0


if __name__ == "__main__":
  cli.run(main)
