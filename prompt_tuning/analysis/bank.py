"""Serving several prompts at once: a prompt bank over one frozen model.

A `PromptTransformer` with `num_prompts=n` holds `prompt/prompt` `[n, p, e]`
and picks each example's prompt with the `prompt_index` `[b]` feature, so
examples meant for different prompts share one forward pass (Lester et al.
2021, Figure 2). This module builds the bank model and its parameters from
individual prompts and decodes arbitrary rows of features with it.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from prompt_tuning import partitioning
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import models as prompt_models
from prompt_tuning.training import data
from prompt_tuning.training import partitioned
from prompt_tuning.training import state

Params = Any
PROMPT_NAME = prompt_names.SOFT_PROMPT


def stack_prompts(prompts: Sequence[np.ndarray]) -> np.ndarray:
  """`n` prompts `[p, e]` -> a bank `[n, p, e]` (float32); shapes must agree."""
  if not prompts:
    raise ValueError("Need at least one prompt.")
  shapes = {tuple(np.shape(p)) for p in prompts}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"Prompts must all be [length, embed] of one shape; got "
                     f"{sorted(shapes)}.")
  return np.stack([np.asarray(p, np.float32) for p in prompts])


def bank_model(model: EncoderDecoderModel, num_prompts: int,
               prompt_length: Optional[int] = None) -> EncoderDecoderModel:
  """`model` with a bank of `num_prompts` prompts (same base, placement).

  The bank's initialiser is plain random uniform: its value is always
  replaced by `with_prompt`.
  """
  module = model.module
  if not isinstance(module, prompt_models.PromptTransformer):
    raise TypeError(f"A prompt bank needs a PromptTransformer model, got "
                    f"{type(module).__name__}; include prompts/prompt.gin.")
  changes = {"num_prompts": num_prompts,
             "prompt_init": initializers.random_uniform()}
  if prompt_length is not None:
    changes["prompt_length"] = prompt_length
  return dataclasses.replace(model, module=module.clone(**changes))


def with_prompt(params: Params, prompt: np.ndarray) -> Params:
  """A copy of `params` whose `prompt/prompt` is `prompt`."""
  flat = dict(param_tree.flatten_params(params))
  flat[PROMPT_NAME] = np.asarray(prompt, np.float32)
  return param_tree.unflatten_params(flat)


def load_base_params(model: EncoderDecoderModel,
                     initial_checkpoint_path: Optional[str],
                     seed: int = 0) -> Params:
  """The frozen pretrained weights for `model` (prompt freshly drawn), on
  the host: the predictors place them on their own mesh.

  Strict like the trainer (`training.state`): every non-prompt parameter
  must come from the checkpoint, with the right shape.
  """
  boxed = state.model_shapes(model, {"inputs": 1, "targets": 1})
  split = freezing.compute_split(boxed, freezing.PROMPT_PATTERNS)
  mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.local_devices()[:1])
  initial = state.initial_params(model, boxed, mesh, initial_checkpoint_path,
                                 split, jax.random.PRNGKey(seed))
  return jax.device_get(initial.params)


@dataclasses.dataclass
class BankPredictor:
  """Greedy decoding with a prompt bank, sharded over a mesh.

  Attributes:
    model: the bank model (`bank_model`).
    mesh: the device mesh.
    max_decode_length: decode length L.
  """
  model: EncoderDecoderModel
  mesh: jax.sharding.Mesh
  max_decode_length: int
  _fn: Optional[Callable[..., Any]] = None

  def __post_init__(self):
    boxed = self.model.init_shapes()["params"]
    shardings = partitioning.param_shardings(boxed, self.mesh)
    self._fn = partitioned.compile_model_fn(
        self.model.predict_batch, self.mesh, shardings,
        max_decode_length=self.max_decode_length)

  def __call__(self, params: Params, features: dict[str, np.ndarray],
               prompt_index: np.ndarray, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Decodes N rows, `batch_size` rows per forward pass.

    Args:
      params: bank-model parameters (`prompt/prompt` `[n, p, e]`).
      features: model features, each `[N, ...]`; only
        `encoder_input_tokens` is read.
      prompt_index: `[N]` the prompt of each row.
      batch_size: rows per pass; a multiple of the mesh's data axis.

    Returns:
      (tokens `[N, L]`, greedy log-likelihoods `[N]`).
    """
    inputs = features["encoder_input_tokens"]
    tokens, scores = [], []
    for start in range(0, len(inputs), batch_size):
      batch = {"encoder_input_tokens": inputs[start:start + batch_size],
               "prompt_index": np.asarray(
                   prompt_index[start:start + batch_size], np.int32)}
      batch, n = data.pad_batch(batch, batch_size)
      out_tokens, out_scores = jax.device_get(self._fn(params, batch))
      tokens.append(np.asarray(out_tokens)[:n])
      scores.append(np.asarray(out_scores)[:n])
    return np.concatenate(tokens), np.concatenate(scores)
