r"""Plan a training step's per-device memory on a mesh, loading no weights.

One model and mesh, a table of every component:

  python -m prompt_tuning.plan \
    --gin_file=models/t5_1_1_xxl.gin --gin_file=prompts/prompt.gin \
    --mesh=4x8 --batch_size=32 --inputs_length=512 --targets_length=8 \
    --device_memory=16GiB [--gin.PROMPT_LENGTH=100]

A sweep, one markdown table of GiB per device (model x mesh); a mesh may
carry its device memory after `@`:

  python -m prompt_tuning.plan --gin_file=prompts/prompt.gin \
    --models=small,base,large,xl,xxl --meshes=1x1@80GB,1x8@16GiB,4x8@16GiB

`--models` names T5 1.1 sizes (configs/models/t5_1_1_NAME.gin, parsed before
the --gin_file's, which must then not include a model file) or gin files.
Meshes are DATAxMODEL (`('data', 'model')` axes) and need not exist here.

The trainer's memory settings are planned as a run would set them: the
model file's REMAT_POLICY and ACTIVATION_DTYPE, and the run file's
NUM_MICROBATCHES and FROZEN_DTYPE as `--gin.` macros (e.g.
`--gin.REMAT_POLICY="'full'" --gin.FROZEN_DTYPE="'bfloat16'"`).
`--suggest` lists instead the cheapest of them under which the step fits
--device_memory, with the FLOPs rematerialisation adds
(`partitioning.suggest`):

  python -m prompt_tuning.plan --gin_file=models/t5_1_1_xxl.gin \
    --gin_file=prompts/prompt.gin --mesh=4x8 --device_memory=16GiB --suggest

Parameters, gradients and optimizer state are exact per-device shard sizes
(the trainer's logical-axis rules, uneven dimensions replicated);
activations are an estimate (see `partitioning.activations`).
The trainable parameters are `--trainable`, else the gin macro
TRAINABLE_PATTERNS, else what the model declares (the prompt file's soft
prompt, deep prompt, head).
Shapes come from `jax.eval_shape`: nothing is allocated.
"""

import dataclasses
from typing import Any, Optional, Sequence

from absl import flags

from prompt_tuning import cli

# Macros read here, not through a configurable: the training run file's
# NUM_MICROBATCHES and FROZEN_DTYPE (the model file binds REMAT_POLICY and
# ACTIVATION_DTYPE into MODEL's config).
_READ_DIRECTLY = ("MODEL", "TRAINABLE_PATTERNS", "NUM_MICROBATCHES",
                  "FROZEN_DTYPE")
_OPTIMIZERS = ("adafactor", "adam", "none")


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  flags.DEFINE_string("mesh", "1x1", "DATAxMODEL mesh, e.g. 4x8.",
                      flag_values=flag_values)
  cli.define_batch_flags(flag_values)
  flags.DEFINE_string("device_memory", None, "Memory of one device, e.g. "
                      "16GiB or 80GB: say whether the plan fits.",
                      flag_values=flag_values)
  flags.DEFINE_list("models", [], "Sweep: T5 1.1 sizes (small,base,...) or "
                    "model gin files.", flag_values=flag_values)
  flags.DEFINE_list("meshes", [], "Sweep: meshes, each DATAxMODEL or "
                    "DATAxMODEL@MEMORY (default --device_memory).",
                    flag_values=flag_values)
  flags.DEFINE_list("trainable", [], "Regexes of trainable parameter names "
                    "(default: see the help text).", flag_values=flag_values)
  flags.DEFINE_enum("optimizer", "adafactor", _OPTIMIZERS, "Optimizer whose "
                    "state is planned: the paper's Adafactor "
                    "(training.optimizers.adafactor), optax.adam, or none.",
                    flag_values=flag_values)
  flags.DEFINE_bool("suggest", False, "List the cheapest settings "
                    "(REMAT_POLICY, NUM_MICROBATCHES, ACTIVATION_DTYPE, "
                    "FROZEN_DTYPE) under which the step fits "
                    "--device_memory, with their recompute cost.",
                    flag_values=flag_values)
  return flag_values


@dataclasses.dataclass(frozen=True)
class _Setting:
  """What every plan of one command shares."""
  mesh: str
  batch_size: int
  inputs_length: int
  targets_length: int
  trainable: tuple[str, ...]
  optimizer: str


def _model_files(name: str) -> str:
  return name if name.endswith(".gin") else f"models/t5_1_1_{name}.gin"


def _parse_mesh(text: str, default_memory: Optional[str]
                ) -> tuple[dict[str, int], str, Optional[int]]:
  """`'4x8@16GiB'` -> (mesh shape, `'4x8'`, bytes or None)."""
  from prompt_tuning.partitioning import memory  # pylint: disable=g-import-not-at-top
  mesh_text, _, mem = text.partition("@")
  mem = mem or default_memory
  try:
    return (memory.parse_mesh(mesh_text), mesh_text.strip(),
            memory.parse_bytes(mem) if mem else None)
  except ValueError as e:
    raise cli.UsageError(str(e)) from e


def _tx(name: str) -> Any:
  # pylint: disable=g-import-not-at-top
  import optax
  from prompt_tuning.training import optimizers
  # pylint: enable=g-import-not-at-top
  if name == "adafactor":
    return optimizers.adafactor()
  if name == "adam":
    return optax.adam(1e-3)
  return None


def _configured_model(files: Sequence[str], bindings: Sequence[str],
                      search: Sequence[str]) -> tuple[Any, tuple[str, ...]]:
  """Parses gin afresh; returns (MODEL, the trainable patterns gin sets)."""
  # pylint: disable=g-import-not-at-top
  import gin
  from prompt_tuning import gin_utils
  # pylint: enable=g-import-not-at-top
  gin.clear_config()
  gin_utils.parse_gin(files, bindings, search)
  gin_utils.check_bindings_used(bindings, _READ_DIRECTLY)
  if gin_utils.query_macro("MODEL") is None:
    raise cli.UsageError("The gin files bind no MODEL; add a model file, "
                         "e.g. --gin_file=models/t5_1_1_base.gin.")
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  patterns = (gin_utils.query_macro("TRAINABLE_PATTERNS") or
              model.trainable_patterns)
  if not patterns:
    raise cli.UsageError(
        "The model declares no trainable parameters (no prompt file); add "
        "e.g. --gin_file=prompts/prompt.gin or pass --trainable.")
  return model, tuple(patterns), _levers(model)


def _levers(model: Any) -> Any:
  """The run's memory settings: the model config's REMAT_POLICY and
  ACTIVATION_DTYPE, the macros NUM_MICROBATCHES and FROZEN_DTYPE (default
  `run_settings.PartitioningConfig`'s)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from prompt_tuning import gin_utils
  from prompt_tuning.partitioning import memory
  from prompt_tuning.training import run_settings
  # pylint: enable=g-import-not-at-top
  default = run_settings.PartitioningConfig()
  config = model.module.config
  levers = memory.Levers(
      remat_policy=config.remat_policy,
      num_microbatches=gin_utils.query_macro("NUM_MICROBATCHES",
                                             default.num_microbatches),
      activation_dtype=np.dtype(config.dtype).name,
      frozen_dtype=gin_utils.query_macro("FROZEN_DTYPE",
                                         default.frozen_dtype))
  try:
    levers.check()
  except ValueError as e:
    raise cli.UsageError(str(e)) from e
  return levers


def _step_shape(model: Any, setting: _Setting) -> Any:
  from prompt_tuning.partitioning import activations  # pylint: disable=g-import-not-at-top
  module = model.module
  prefix = int(getattr(module, "prefix_length", 0) or 0)
  return activations.StepShape(
      setting.batch_size, setting.inputs_length, setting.targets_length,
      prompt_length=int(getattr(module, "prompt_length", 0) or 0),
      prefix_length=prefix,
      decoder_prefix_length=prefix if getattr(module, "decoder_prompt",
                                              False) else 0)


def plan_model(model: Any, mesh_shape: dict[str, int], setting: _Setting,
               patterns: Sequence[str], levers: Any,
               boxed: Optional[Any] = None) -> Any:
  """The `MemoryPlan` of `model` (an EncoderDecoderModel) on a mesh under
  `levers` (`memory.Levers`); `boxed`: its parameter shapes, if known."""
  # pylint: disable=g-import-not-at-top
  from prompt_tuning.partitioning import activations
  from prompt_tuning.partitioning import memory
  # pylint: enable=g-import-not-at-top
  if boxed is None:
    boxed = model.init_shapes(setting.inputs_length,
                              setting.targets_length)["params"]
  return memory.plan_memory(
      boxed, mesh_shape, setting.trainable or tuple(patterns),
      _tx(setting.optimizer), _step_shape(model, setting),
      activations.ActivationDims.from_config(model.module.config), levers)


def _suggestions(model: Any, mesh_shape: dict[str, int], setting: _Setting,
                 patterns: Sequence[str], device_bytes: Optional[int],
                 boxed: Optional[Any] = None) -> list[Any]:
  """`--suggest`: every fitting setting, cheapest first
  (`partitioning.suggest`)."""
  # pylint: disable=g-import-not-at-top
  from prompt_tuning.partitioning import activations
  from prompt_tuning.partitioning import suggest
  # pylint: enable=g-import-not-at-top
  if device_bytes is None:
    raise cli.UsageError("--suggest needs --device_memory (e.g. 16GiB) or "
                         "a mesh with its memory (--meshes=4x8@16GiB).")
  if boxed is None:
    boxed = model.init_shapes(setting.inputs_length,
                              setting.targets_length)["params"]
  dims = activations.ActivationDims.from_config(model.module.config)
  shape = _step_shape(model, setting)
  return suggest.suggest(
      lambda lv: plan_model(model, mesh_shape, setting, patterns, lv, boxed),
      lambda p: activations.step_flops(dims, shape, mesh_shape, p),
      device_bytes, setting.batch_size, mesh_shape["data"])


def _suggest_cell(best: Any) -> str:
  """`'12.34: full, 2 mb, bf16 act, bf16 frozen (+33%)'`."""
  from prompt_tuning.partitioning import memory  # pylint: disable=g-import-not-at-top
  lv = best.levers
  parts = [lv.remat_policy]
  if lv.num_microbatches > 1:
    parts.append(f"{lv.num_microbatches} microbatches")
  parts += [f"{dtype} {what}" for what, dtype in lv.narrow_dtypes().items()]
  cost = (f", +{100 * best.recompute_share:.0f}% FLOPs"
          if best.recompute_flops else "")
  return (f"{best.plan.per_device / memory.GiB:.2f}: " + ", ".join(parts) +
          cost)


def _sweep(args: flags.FlagValues, setting: _Setting) -> str:
  # pylint: disable=g-import-not-at-top
  from prompt_tuning.partitioning import memory
  from prompt_tuning.partitioning import suggest as suggest_lib
  # pylint: enable=g-import-not-at-top
  if any(f.startswith("models/") or "/models/" in f for f in args.gin_file):
    raise cli.UsageError("With --models, give no model --gin_file; the "
                         "sweep parses each model file first.")
  meshes = [_parse_mesh(m, args.device_memory)
            for m in (args.meshes or [setting.mesh])]
  header = ["model", "trainable params"] + [
      f"{name}" + (f" ({memory.format_bytes(mem)})" if mem else "")
      for _, name, mem in meshes]
  lines = ["| " + " | ".join(header) + " |",
           "|---|---:|" + "---:|" * len(meshes)]
  for name in args.models:
    model, patterns, levers = _configured_model(
        [_model_files(name), *args.gin_file], args.gin_bindings,
        cli.search_paths(args.gin_search_paths))
    boxed = model.init_shapes(setting.inputs_length,
                              setting.targets_length)["params"]
    cells = []
    for shape, _, mem in meshes:
      if args.suggest:
        found = _suggestions(model, shape, setting, patterns, mem, boxed)
        plan = plan_model(model, shape, setting, patterns, levers, boxed)
        cells.append(_suggest_cell(found[0]) if found else "**none fits**")
        continue
      plan = plan_model(model, shape, setting, patterns, levers, boxed)
      cell = f"{plan.per_device / memory.GiB:.2f}"
      if mem is not None:
        cell += " fits" if plan.fits(mem) else " **no**"
      cells.append(cell)
    lines.append(f"| {name} | {plan.num_trainable:,} | " + " | ".join(cells) +
                 " |")
  what = ("the cheapest fitting settings (REMAT_POLICY, NUM_MICROBATCHES, "
          "ACTIVATION/FROZEN dtypes; recompute FLOPs) and their GiB per "
          f"device, {suggest_lib.HEADROOM}" if args.suggest else
          f"GiB per device (parameters, gradients, {setting.optimizer} "
          f"state, estimated activations; {levers.describe()})")
  return "\n".join(
      [f"{what}; batch {setting.batch_size}, inputs "
       f"{setting.inputs_length}, targets {setting.targets_length}.", "",
       *lines])


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = cli.parse_flags(argv, _flags(), __doc__)
  cli.show_project_logs()
  setting = _Setting(args.mesh, args.batch_size, args.inputs_length,
                     args.targets_length, tuple(args.trainable),
                     args.optimizer)
  if args.models:
    print(_sweep(args, setting))
    return 0
  if args.meshes:
    raise cli.UsageError("--meshes is for sweeps with --models; give one "
                         "--mesh otherwise.")
  if not args.gin_file:
    raise cli.UsageError("Give a model, e.g. --gin_file=models/t5_1_1_base.gin"
                         " (or --models=small,base for a sweep).")
  # pylint: disable=g-import-not-at-top
  from prompt_tuning.partitioning import memory
  from prompt_tuning.partitioning import suggest as suggest_lib
  # pylint: enable=g-import-not-at-top
  shape, _, mem = _parse_mesh(args.mesh, args.device_memory)
  model, patterns, levers = _configured_model(
      args.gin_file, args.gin_bindings,
      cli.search_paths(args.gin_search_paths))
  if args.suggest:
    print(f"{args.mesh} @ {memory.format_bytes(mem or 0)}, batch "
          f"{setting.batch_size}, inputs {setting.inputs_length} (+ prompt), "
          f"targets {setting.targets_length}: the cheapest setting of each "
          f"REMAT_POLICY that fits, {suggest_lib.HEADROOM} (recompute: FLOPs "
          "rematerialisation adds to the step)")
    print(suggest_lib.format_suggestions(
        _suggestions(model, shape, setting, patterns, mem), mem))
    return 0
  plan = plan_model(model, shape, setting, patterns, levers)
  print(levers.describe())
  print(f"batch {setting.batch_size}, inputs {setting.inputs_length} "
        f"(+ prompt), targets {setting.targets_length}, optimizer "
        f"{setting.optimizer}, trainable {list(setting.trainable or patterns)}")
  print(memory.format_plan(plan, mem))
  return 0


if __name__ == "__main__":
  cli.run(main)
