"""Initial values for a deep prompt from `.npy` files or a trained run.

P-Tuning v2's multi-task option trains one deep prompt on a mixture and then
starts each task's run from it. A `DeepPromptSource` says where the values
come from; `DeepPromptTransformer.prompt_source` carries it and the trainer
applies it after loading the frozen base (`initialize_deep_prompt`), so only
`deep_prompt/...` leaves change: the classification head (whose classes
differ between tasks) and everything else keep their own initialisation.

  from_files(encoder=PATH[, decoder=PATH])   `.npy` prefixes per stack,
      `[layers, 2, p, h*d]` each (as `scripts/export_prompt.py
      --param=deep_prompt/encoder/prefix` writes them); a stack without a
      file keeps its random initialisation.
  from_run(MODEL_DIR[, step])                 the `deep_prompt/` parameters
      of a `prompt_tuning.train` run's checkpoint (latest, or `step`). A
      reparameterised source prompt may start a direct one: its MLP is
      evaluated once (as `deep.materialize` does).

`check(shapes)` validates a source against the model's parameter shapes
reading only file headers and checkpoint metadata; the errors
(`errors.ConfigError`) name the file, the expected and the actual shapes.
"""

import dataclasses
import os
from typing import Any, Mapping, Optional

import numpy as np

from prompt_tuning import errors
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import run_checkpoints
from prompt_tuning.prompts import initializers

PREFIX = "deep_prompt"
STACKS = ("encoder", "decoder")
Shapes = Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class DeepPromptSource:
  """Where a deep prompt's initial values come from (see module doc).

  Attributes:
    encoder_file: `.npy` of the encoder prefixes `[L, 2, p, h*d]`.
    decoder_file: `.npy` of the decoder prefixes `[L, 2, p, h*d]`.
    model_dir: MODEL_DIR of a trained run (instead of files).
    step: that run's checkpoint step; None for the latest.
  """
  encoder_file: Optional[str] = None
  decoder_file: Optional[str] = None
  model_dir: Optional[str] = None
  step: Optional[int] = None

  def __post_init__(self):
    has_files = self.encoder_file is not None or self.decoder_file is not None
    if has_files == (self.model_dir is not None):
      raise errors.ConfigError(
          "A deep prompt source takes either .npy files (DEEP_PROMPT_FILE, "
          "DEEP_PROMPT_DECODER_FILE) or a trained run (DEEP_PROMPT_RUN), "
          f"exactly one kind; got files {self.encoder_file!r}, "
          f"{self.decoder_file!r} and run {self.model_dir!r}.")

  def check(self, shapes: Shapes) -> None:
    """Raises `errors.ConfigError` unless this source fits `shapes`.

    Args:
      shapes: `{'/'-joined name: shape}` of the model's parameters (all of
        them, or just the `deep_prompt/` ones).
    """
    if self.model_dir is not None:
      _match_run(self, _deep(shapes), _run_shapes(self))
    else:
      for name, path in self._files(_deep(shapes)).items():
        _check_shape(path, _npy_shape(path), tuple(shapes[name]))

  def load(self, shapes: Shapes) -> dict[str, np.ndarray]:
    """`{'/'-joined name: float32 array}` for the `deep_prompt/` leaves set."""
    deep = _deep(shapes)
    if self.model_dir is None:
      out = {}
      for name, path in self._files(deep).items():
        value = _load_npy(path)
        _check_shape(path, value.shape, tuple(deep[name]))
        out[name] = value.astype(np.float32)
      return out
    flat = _read_run(self)
    _match_run(self, deep, {k: v.shape for k, v in flat.items()})
    if all(name in flat for name in deep):
      return {name: flat[name].astype(np.float32) for name in deep}
    return {f"{PREFIX}/{stack}/prefix": _materialize(flat, stack, shape)
            for stack, shape in _prefix_shapes(deep).items()}

  def _files(self, deep: Shapes) -> dict[str, str]:
    files = {}
    for stack, path in zip(STACKS, (self.encoder_file, self.decoder_file)):
      if path is None:
        continue
      name = f"{PREFIX}/{stack}/prefix"
      if name not in deep:
        have = sorted(deep) or ["none"]
        hint = (" Set DEEP_PROMPT_REPARAM=False: a file holds prefixes, not "
                "the MLP." if any("/embedding" in n for n in deep) else
                " Set DEEP_PROMPT_DECODER=True or drop the decoder file."
                if stack == "decoder" else "")
        raise errors.ConfigError(
            f"Deep prompt file {path} is for the {stack} prefixes "
            f"({name}), which this model does not have (its deep prompt "
            f"parameters: {have}).{hint}")
      files[name] = os.fspath(path)
    return files


def from_files(encoder: Optional[str] = None,
               decoder: Optional[str] = None) -> DeepPromptSource:
  """Prefixes from `.npy` files `[L, 2, p, h*d]`, one per stack."""
  return DeepPromptSource(encoder_file=encoder, decoder_file=decoder)


def from_run(model_dir: str, step: Optional[int] = None) -> DeepPromptSource:
  """The `deep_prompt/` parameters of a trained run's checkpoint."""
  return DeepPromptSource(model_dir=model_dir, step=step)


def initialize_deep_prompt(params: dict[str, Any],
                           source: DeepPromptSource) -> dict[str, Any]:
  """Returns `params` with its `deep_prompt/` leaves taken from `source`.

  No other leaf changes. Unboxed parameters (arrays or numpy).
  """
  flat = param_tree.flatten_params(params)
  shapes = {name: tuple(np.shape(value)) for name, value in flat.items()}
  for name, value in source.load(shapes).items():
    flat[name] = value.astype(np.asarray(flat[name]).dtype)
  return param_tree.unflatten_params(flat)


# ------------------------------------------------------------------ helpers


def _deep(shapes: Shapes) -> dict[str, tuple[int, ...]]:
  deep = {k: tuple(v) for k, v in shapes.items()
          if k.startswith(PREFIX + "/")}
  if not deep:
    raise errors.ConfigError(
        "A deep prompt source is set but the model has no deep prompt "
        "parameters (deep_prompt/...); include prompts/deep_prompt.gin.")
  return deep


def _prefix_shapes(deep: Shapes) -> dict[str, tuple[int, ...]]:
  return {stack: deep[f"{PREFIX}/{stack}/prefix"] for stack in STACKS
          if f"{PREFIX}/{stack}/prefix" in deep}


_FILE_FIX = ("A deep prompt file is a NumPy .npy array [layers, 2, length, "
             "heads*head_dim], as scripts/export_prompt.py "
             "--param=deep_prompt/encoder/prefix writes it.")


def _npy_shape(path: str) -> tuple[int, ...]:
  """The array shape in a `.npy` header (reads the header only)."""
  return tuple(_load_npy(path, mmap_mode="r").shape)


def _load_npy(path: str, mmap_mode: Optional[str] = None) -> np.ndarray:
  return initializers.load_npy(path, "Deep prompt file", _FILE_FIX, mmap_mode)


def _check_shape(path: str, actual: tuple[int, ...],
                 expected: tuple[int, ...]) -> None:
  if tuple(actual) != tuple(expected):
    raise errors.ConfigError(
        f"Deep prompt file {path} holds an array of shape {list(actual)}, "
        f"expected {list(expected)} ([layers, 2, PREFIX_LENGTH, "
        "heads*head_dim] of this model). Use a prompt exported from a model "
        "of the same size and PREFIX_LENGTH.")


def _run_shapes(source: DeepPromptSource) -> dict[str, tuple[int, ...]]:
  """The run checkpoint's `deep_prompt/` shapes, from its metadata only."""
  try:
    return run_checkpoints.trainable_shapes(source.model_dir, source.step,
                                            prefix=PREFIX)[0]
  except run_checkpoints.RunCheckpointNotFoundError as e:
    raise errors.ConfigError(f"DEEP_PROMPT_RUN {source.model_dir}: {e}") from e


def _read_run(source: DeepPromptSource) -> dict[str, np.ndarray]:
  """The run checkpoint's `deep_prompt/` parameters, on the host."""
  try:
    return run_checkpoints.read_trainable(source.model_dir, source.step,
                                          prefix=PREFIX)[0]
  except run_checkpoints.RunCheckpointNotFoundError as e:
    raise errors.ConfigError(f"DEEP_PROMPT_RUN {source.model_dir}: {e}") from e


def _mlp_output_shape(run: Shapes, stack: str) -> Optional[tuple[int, ...]]:
  """`[L, 2, p, h*d]` a reparameterised `stack` of the run computes, if any."""
  emb = run.get(f"{PREFIX}/{stack}/embedding")
  out = run.get(f"{PREFIX}/{stack}/output/bias")
  if emb is None or out is None:
    return None
  return (emb[0], out[0])  # (p, L*2*h*d), compared after reshaping.


def _match_run(source: DeepPromptSource, deep: Shapes, run: Shapes) -> None:
  """Raises unless the run's deep prompt can fill `deep`."""
  where = f"DEEP_PROMPT_RUN {source.model_dir}"
  if not run:
    raise errors.ConfigError(
        f"{where}: its checkpoint holds no deep_prompt/ parameters; give a "
        "run trained with prompts/deep_prompt.gin.")
  if all(name in run for name in deep):
    bad = [f"{n}: run {list(run[n])} vs model {list(s)}"
           for n, s in sorted(deep.items()) if tuple(run[n]) != tuple(s)]
  else:
    prefixes = _prefix_shapes(deep)
    bad = [] if prefixes else [f"model parameters {sorted(deep)} are not in "
                               "the run"]
    for stack, shape in prefixes.items():
      mlp = _mlp_output_shape(run, stack)
      if mlp is None:
        bad.append(f"{PREFIX}/{stack}/prefix: not in the run")
      elif (mlp[0] != shape[2] or mlp[1] != shape[0] * shape[1] * shape[3]):
        bad.append(f"{PREFIX}/{stack}/prefix: model {list(shape)}, the run's "
                   f"MLP gives [{mlp[0]} positions, {mlp[1]} values]")
  if bad:
    raise errors.ConfigError(
        f"{where}: its deep prompt does not fit this model: "
        + "; ".join(bad) + f" (run parameters: {sorted(run)}). Use the same "
        "model size, PREFIX_LENGTH and DEEP_PROMPT_DECODER as that run.")


def _materialize(flat: Mapping[str, np.ndarray], stack: str,
                 shape: tuple[int, ...]) -> np.ndarray:
  """The prefixes `[L, 2, p, h*d]` a reparameterised stack computes."""
  get = lambda n: np.asarray(flat[f"{PREFIX}/{stack}/{n}"], np.float64)
  hidden = np.tanh(get("embedding") @ get("hidden/dense/kernel")
                   + get("hidden/bias"))
  out = hidden @ get("output/dense/kernel") + get("output/bias")
  layers, _, length, joined = shape
  return out.reshape(length, layers, 2, joined).transpose(1, 2, 0, 3).astype(
      np.float32)
