"""Soft prompts as Hugging Face PEFT prompt-tuning adapters, both ways.

A PEFT prompt-tuning adapter directory holds

  adapter_config.json        peft_type 'PROMPT_TUNING', task_type
                             'SEQ_2_SEQ_LM', num_virtual_tokens, token_dim,
                             num_transformer_submodules, ...
  adapter_model.safetensors  `prompt_embeddings`
                             [num_virtual_tokens * num_transformer_submodules,
                              token_dim]

For T5 (a seq2seq model) PEFT defaults to 2 submodules, but its prompt
tuning forward (`PeftModelForSeq2SeqLM.forward`, peft 0.21) prepends only the
first `num_virtual_tokens` rows to the encoder's input embeddings, with
attention-mask ones for them, and leaves the decoder alone: exactly our
encoder-only prefix prompt. We write 1 submodule (the file holds our prompt
and nothing else) and, reading a 2-submodule adapter, keep the rows PEFT's
forward uses (the first `num_virtual_tokens`).
"""

import json
import os
import pathlib
from typing import Any, Optional

import numpy as np
import safetensors.numpy

from prompt_tuning.models import config as config_lib

PathLike = str | os.PathLike[str]

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
PEFT_TYPE = "PROMPT_TUNING"
TASK_TYPE = "SEQ_2_SEQ_LM"


class PeftAdapterError(ValueError):
  """A directory is not a PEFT prompt-tuning adapter we can read."""


def adapter_config(prompt_length: int, config: config_lib.T5Config,
                   base_model: str) -> dict[str, Any]:
  """The `adapter_config.json` dict of our `[prompt_length, embed]` prompt.

  Args:
    prompt_length: prompt positions (PEFT's num_virtual_tokens).
    config: the frozen T5's configuration.
    base_model: `base_model_name_or_path` (a Hugging Face directory or hub
      name of the frozen model).
  """
  return {
      "peft_type": PEFT_TYPE,
      "task_type": TASK_TYPE,
      "num_virtual_tokens": int(prompt_length),
      "token_dim": int(config.emb_dim),
      "num_transformer_submodules": 1,
      "num_attention_heads": int(config.num_heads),
      "num_layers": int(config.num_encoder_layers),
      "prompt_tuning_init": "RANDOM",
      "prompt_tuning_init_text": None,
      "tokenizer_name_or_path": None,
      "tokenizer_kwargs": None,
      "base_model_name_or_path": base_model,
      "revision": None,
      "inference_mode": True,
      "modules_to_save": None,
      "auto_mapping": None,
  }


def write_peft_prompt(output_dir: PathLike, prompt: Any,
                      config: config_lib.T5Config,
                      base_model: str) -> pathlib.Path:
  """Writes a `[length, embed]` prompt as a PEFT prompt-tuning adapter.

  Args:
    output_dir: created if missing.
    prompt: `[length, embed]`, embed = `config.emb_dim`.
    config: the frozen T5's configuration.
    base_model: see `adapter_config`.

  Returns:
    The directory.

  Raises:
    PeftAdapterError: for a bank or deep prompt, or a width mismatch.
  """
  prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
  if prompt.ndim != 2:
    raise PeftAdapterError(
        f"A PEFT prompt-tuning adapter holds one [length, embed] prompt; got "
        f"shape {list(prompt.shape)} (export one prompt of a bank at a time).")
  if prompt.shape[1] != config.emb_dim:
    raise PeftAdapterError(
        f"The prompt's width {prompt.shape[1]} is not the model's embedding "
        f"width {config.emb_dim}.")
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file({PROMPT_KEY: prompt},
                              str(out / ADAPTER_WEIGHTS_FILE),
                              metadata={"format": "pt"})
  content = adapter_config(prompt.shape[0], config, base_model)
  (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(content, indent=2) + "\n")
  return out


def read_peft_config(adapter_dir: PathLike) -> dict[str, Any]:
  """The parsed `adapter_config.json`, checked to be prompt tuning."""
  path = pathlib.Path(adapter_dir) / ADAPTER_CONFIG_FILE
  if not path.is_file():
    raise PeftAdapterError(f"No {ADAPTER_CONFIG_FILE} in {adapter_dir}: not "
                           "a PEFT adapter directory.")
  content = json.loads(path.read_text())
  if content.get("peft_type") != PEFT_TYPE:
    raise PeftAdapterError(
        f"{path} has peft_type {content.get('peft_type')!r}; only "
        f"{PEFT_TYPE!r} adapters are soft prompts we can read.")
  return content


def read_peft_prompt(adapter_dir: PathLike,
                     embed_dim: Optional[int] = None) -> np.ndarray:
  """The encoder prompt of a PEFT prompt-tuning adapter, float32.

  Args:
    adapter_dir: a directory `save_pretrained` of a PEFT prompt-tuning model
      wrote (or `write_peft_prompt`).
    embed_dim: when given, the width the prompt must have.

  Returns:
    `[num_virtual_tokens, token_dim]`: the rows PEFT prepends to the
    encoder input (with 2 submodules the decoder half, which PEFT's
    seq2seq prompt tuning does not use, is dropped).

  Raises:
    PeftAdapterError: for a missing or non-prompt-tuning adapter, weights
      only in PyTorch's format, or inconsistent shapes.
  """
  adapter_dir = pathlib.Path(adapter_dir)
  content = read_peft_config(adapter_dir)
  weights = adapter_dir / ADAPTER_WEIGHTS_FILE
  if not weights.is_file():
    other = adapter_dir / "adapter_model.bin"
    raise PeftAdapterError(
        f"No {ADAPTER_WEIGHTS_FILE} in {adapter_dir}" +
        (" (adapter_model.bin needs PyTorch: save it again with "
         "safe_serialization=True)" if other.exists() else "") + ".")
  tensors = safetensors.numpy.load_file(str(weights))
  keys = [k for k in tensors if k.split(".")[-1] == PROMPT_KEY]
  if len(keys) != 1:
    raise PeftAdapterError(f"{weights} holds {sorted(tensors)}; expected one "
                           f"{PROMPT_KEY!r} tensor.")
  table = np.asarray(tensors[keys[0]], np.float32)
  tokens = int(content.get("num_virtual_tokens") or 0)
  submodules = int(content.get("num_transformer_submodules") or 1)
  if table.ndim != 2 or table.shape[0] != tokens * submodules:
    raise PeftAdapterError(
        f"{weights}: {PROMPT_KEY} has shape {list(table.shape)}, expected "
        f"[{tokens} virtual tokens x {submodules} submodules, token_dim].")
  if embed_dim is not None and table.shape[1] != embed_dim:
    raise PeftAdapterError(
        f"{adapter_dir}'s prompt is {table.shape[1]} wide; the model's "
        f"embedding is {embed_dim}.")
  return np.ascontiguousarray(table[:tokens])
