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

import logging
import os
from typing import Sequence

from absl import flags
import gin

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning.models import config as config_lib

_DEFAULT_CACHE_DIR = "~/.cache/prompt_tuning"


def model_config(gin_file: str) -> config_lib.T5Config:
  """The T5Config a model gin file (the recipe's `models/t5_1_1_mini.gin`)
  binds."""
  gin_utils.parse_gin([gin_file], (), ())
  config = gin.get_configurable(config_lib.T5Config)()
  gin.clear_config()
  return config


def _flags() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("cache_dir", _DEFAULT_CACHE_DIR, "Where the frozen "
                      "model is built once and reused.", **define)
  flags.DEFINE_string("shared_dir", None, "The project's shared/ folder "
                      f"(default $PROMPT_TUNING_SHARED, else beside the "
                      "repository root).", **define)
  flags.DEFINE_string("work_dir", None, "Prompt runs and evaluations "
                      "(default --cache_dir).", **define)
  flags.DEFINE_integer("seed", 0, "Seed of the build and the prompt run.",
                       **define)
  flags.DEFINE_bool("build", False, "Build the frozen model here (once) even "
                    "if shared/ ships the current recipe's.", **define)
  flags.DEFINE_bool("build_only", False, "Find or build the frozen model, "
                    "then stop.", **define)
  cli.define_verbose_flag(flag_values)
  cli.define_compilation_cache_flag(flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = cli.parse_flags(argv, _flags(), __doc__)
  cli.quiet_startup()
  cli.show_project_logs(level=logging.WARNING)
  # pylint: disable=g-import-not-at-top  (after the start-up logs are quiet)
  from prompt_tuning.data import locations
  from prompt_tuning.data import vocab
  from prompt_tuning.recipes import frozen_model, steering
  # pylint: enable=g-import-not-at-top
  shared = str(locations.shared_dir(args.shared_dir))
  for parts in (("data", "glue", "SST-2", "train.tsv"),
                locations.VOCAB_IN_SHARED):
    locations.shared_path(*parts, root=shared)
  config = model_config(frozen_model.MODEL_GIN)
  cache_dir = os.path.abspath(os.path.expanduser(args.cache_dir))
  os.environ.setdefault(locations.GLUE_DIR_ENV,
                        os.path.join(shared, "data", "glue"))
  os.environ.setdefault(vocab.VOCAB_ENV,
                        os.path.join(shared, *locations.VOCAB_IN_SHARED))
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
