"""The README's main job: a soft prompt steering a frozen T5 to a task.

  python -m prompt_tuning.main_job --cache_dir=~/.cache/prompt_tuning

Takes the frozen mini T5 of `prompt_tuning.recipes.frozen_model` from
`shared/` when the shipped copy is what this code's recipe builds, else builds
it into `--cache_dir` once (`--build` builds even then); scores it on SST-2 dev
without a prompt and with its task name, trains a taskless soft prompt on
SST-2 train and scores that: the steps of `prompt_tuning.recipes.steering.run`.
Run again, it reads its finished results back; interrupted, it goes on.

It prints one line per stage and ends with the accuracies. `--build_only`
stops after the frozen model is found or built, its path the last line.
Every step is the library's (`prompt_tuning.training.trainer.train`,
`prompt_tuning.training.evaluation`); the same runs from the command line
are in the README.
"""

import argparse
import logging
import os
from typing import Sequence

import gin

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning.models import config as config_lib


def model_config(gin_file: str) -> config_lib.T5Config:
  """The T5Config a model gin file (the recipe's `models/t5_1_1_mini.gin`)
  binds."""
  gin_utils.parse_gin([gin_file], (), ())
  config = gin.get_configurable(config_lib.T5Config)()
  gin.clear_config()
  return config


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--cache_dir", default=os.path.expanduser("~/.cache/prompt_tuning"),
      help="where the frozen model is built once and reused")
  parser.add_argument(
      "--shared_dir", default=os.environ.get("PROMPT_TUNING_SHARED",
                                             "../shared"),
      help="the project's shared/ folder (data/ and models/t5_vocab)")
  parser.add_argument("--work_dir", default=None,
                      help="prompt runs and evaluations (default cache_dir)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--build", action="store_true",
                      help="build the frozen model here (once) even if "
                      "shared/ ships the current recipe's")
  parser.add_argument("--build_only", action="store_true",
                      help="find or build the frozen model, then stop")
  args = parser.parse_args(argv)
  shared = os.path.abspath(args.shared_dir)
  needed = [os.path.join(shared, "data", "glue", "SST-2", "train.tsv"),
            os.path.join(shared, "models", "t5_vocab", "spiece.model")]
  missing = [path for path in needed if not os.path.isfile(path)]
  if missing:
    raise FileNotFoundError(
        f"{missing[0]} does not exist: the main job reads the project's "
        f"shared/ folder ({shared}); pass --shared_dir=DIR or set "
        "PROMPT_TUNING_SHARED.")
  cli.quiet_startup()
  cli.show_project_logs(level=logging.WARNING)
  # pylint: disable-next=g-import-not-at-top  (after the start-up logs)
  from prompt_tuning.recipes import frozen_model, steering
  config = model_config(frozen_model.MODEL_GIN)
  cache_dir = os.path.abspath(os.path.expanduser(args.cache_dir))
  os.environ.setdefault("PROMPT_TUNING_GLUE_DIR",
                        os.path.join(shared, "data", "glue"))
  os.environ.setdefault("PROMPT_TUNING_VOCAB", os.path.join(
      shared, "models", "t5_vocab", "spiece.model"))
  if args.build_only:
    frozen = steering.find_or_build(cache_dir, shared, config,
                                    seed=args.seed, force_build=args.build)
    print(frozen.path)  # Last, for scripts.
  else:
    steering.run(cache_dir, shared, config, work_dir=args.work_dir,
                 seed=args.seed, force_build=args.build)
  return 0


if __name__ == "__main__":
  cli.run(main)
