"""Writing our T5 parameters as a Hugging Face T5 directory (no PyTorch).

The inverse of what `sharded.open_checkpoint` reads (`hf`'s module
docstring has the names and layouts); the name mapping is `hf`'s one table
(`hf.param_name_to_hf_name`, checked against `hf.hf_name_to_param_name`),
not a second copy. A directory written here holds

  config.json              transformers' T5Config fields for our T5Config
  model.safetensors        float32 tensors under Hugging Face names
  spiece.model             the SentencePiece model (when given)
  tokenizer_config.json    T5Tokenizer settings (100 sentinel ids)
  special_tokens_map.json  </s>, <unk>, <pad> and the sentinels
  checksums.json           the checksums of the files above, written last
                           (`integrity.write_manifest`), which reads verify

so that `sharded.read_params(out)` gives back the same parameters and
transformers' `T5ForConditionalGeneration.from_pretrained(out)` and
`T5Tokenizer.from_pretrained(out)` load it.

Tied logits (T5 1.0, our `logits_via_embedding=True`): the file holds only
`shared.weight`, and the config says `tie_word_embeddings: true` (transformers
4.x: scale the decoder output by d_model**-0.5, multiply by the embedding)
and `scale_decoder_outputs: true` (transformers 5.x's explicit flag). Untied
(T5 1.1): `lm_head.weight` is our `decoder/logits_dense/kernel` transposed,
`tie_word_embeddings` and `scale_decoder_outputs` false.
"""

import json
import os
import pathlib
import shutil
from typing import Any, Mapping, Optional

import numpy as np
import safetensors.numpy

from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.models import config as config_lib

PathLike = str | os.PathLike[str]

EMBEDDING = param_tree.EMBEDDING
LOGITS = param_tree.LOGITS
SPIECE_FILE = "spiece.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
EXTRA_IDS = 100

# Our activation -> transformers' name, ungated (`dense_act_fn`).
_HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu_new",
                   "gelu_exact": "gelu", "silu": "silu"}


def feed_forward_proj(config: config_lib.T5Config) -> tuple[str, str, bool]:
  """(feed_forward_proj, dense_act_fn, is_gated_act) for `config`'s MLP.

  Raises:
    ValueError: for activations transformers' T5 cannot express (more than
      two projections, a gated MLP whose second factor is not linear, or a
      gated exact GELU, which 'gated-gelu' would turn into the tanh one).
  """
  acts = tuple(config.mlp_activations)
  if len(acts) == 1 and acts[0] in _HF_ACTIVATIONS:
    act = _HF_ACTIVATIONS[acts[0]]
    return act, act, False
  if len(acts) == 2 and acts[1] == "linear" and acts[0] in _HF_ACTIVATIONS:
    if acts[0] == "gelu":
      return "gated-gelu", "gelu_new", True
    if acts[0] != "gelu_exact":
      return f"gated-{acts[0]}", acts[0], True
  raise ValueError(
      f"mlp_activations={acts} has no Hugging Face T5 equivalent; "
      "supported: ('relu',), ('gelu', 'linear') (T5 1.1), ('silu',), "
      "('relu', 'linear'), ('silu', 'linear').")


def t5_config_to_hf_config(config: config_lib.T5Config) -> dict[str, Any]:
  """The `config.json` dict of a transformers T5 model equal to `config`.

  The inverse of `hf.hf_config_to_t5_config` (for the fields it reads);
  token ids are T5's (pad 0 = decoder start, EOS 1).
  """
  proj, act, gated = feed_forward_proj(config)
  tied = bool(config.logits_via_embedding)
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "is_encoder_decoder": True,
      "vocab_size": int(config.vocab_size),
      "d_model": int(config.emb_dim),
      "d_kv": int(config.head_dim),
      "d_ff": int(config.mlp_dim),
      "num_layers": int(config.num_encoder_layers),
      "num_decoder_layers": int(config.num_decoder_layers),
      "num_heads": int(config.num_heads),
      "relative_attention_num_buckets":
          int(config.relative_attention_num_buckets),
      "relative_attention_max_distance":
          int(config.relative_attention_max_distance),
      "dropout_rate": float(config.dropout_rate),
      "layer_norm_epsilon": float(config.layer_norm_epsilon),
      "initializer_factor": 1.0,
      "feed_forward_proj": proj,
      "dense_act_fn": act,
      "is_gated_act": gated,
      "tie_word_embeddings": tied,
      "scale_decoder_outputs": tied,
      "use_cache": True,
      "decoder_start_token_id": 0,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "torch_dtype": "float32",
  }


def _activations_from_shapes(flat: Mapping[str, Any]) -> tuple[str, ...]:
  """T5 1.1's gated GELU when the MLP has `wi_0`/`wi_1`, else ReLU (T5 1.0):
  what public T5 checkpoints use; pass `mlp_activations` otherwise."""
  gated = any(n.endswith("/mlp/wi_1/kernel") for n in flat)
  return config_lib.GATED_GELU if gated else config_lib.RELU


def infer_t5_config(flat_shapes: Mapping[str, Any], *,
                    relative_attention_max_distance: int = 128,
                    mlp_activations: Optional[tuple[str, ...]] = None
                    ) -> config_lib.T5Config:
  """The T5Config a (T5X) parameter tree's shapes imply.

  A T5X checkpoint records no configuration: sizes come from the shapes;
  the maximum relative distance and the activation cannot be seen in them
  (defaults: 128, and gated GELU when the MLP is gated, ReLU when not).

  Args:
    flat_shapes: {'/'-joined name: array or shape-like with `.shape`, or
      a shape tuple}.
    relative_attention_max_distance: the model's.
    mlp_activations: the model's; default from the MLP's projections.

  Returns:
    The config, checked to reproduce every shape (`param_tree`).

  Raises:
    ValueError: when the names are not a T5 tree or the shapes disagree.
  """
  shape = {n: tuple(getattr(v, "shape", v)) for n, v in flat_shapes.items()}

  def layers(stack: str) -> int:
    return len({n.split("/")[1] for n in shape
                if n.startswith(f"{stack}/layers_")})

  try:
    vocab, embed = shape[EMBEDDING]
    heads, buckets = shape["encoder/relpos_bias/rel_embedding"]
    qkv = shape["encoder/layers_0/attention/query/kernel"][1]
    mlp = shape["encoder/layers_0/mlp/wo/kernel"][0]
  except (KeyError, ValueError) as e:
    raise ValueError(f"Not a T5 parameter tree (missing or odd {e}); have "
                     f"{sorted(shape)[:5]}...") from e
  config = config_lib.T5Config(
      vocab_size=vocab, emb_dim=embed, num_heads=heads,
      head_dim=qkv // heads, mlp_dim=mlp,
      num_encoder_layers=layers("encoder"),
      num_decoder_layers=layers("decoder"),
      mlp_activations=mlp_activations or _activations_from_shapes(shape),
      logits_via_embedding=LOGITS not in shape,
      relative_attention_num_buckets=buckets,
      relative_attention_max_distance=relative_attention_max_distance)
  expected = {n: tuple(s.shape) for n, s in param_tree.flatten_params(
      param_tree.t5_param_shapes(config)).items()}
  if expected != shape:
    diff = sorted(set(expected.items()) ^ set(shape.items()))
    raise ValueError(f"The parameters do not form the T5 that their shapes "
                     f"suggest ({config}); differing: {diff[:6]}.")
  return config


def hf_tensor_name(name: str) -> tuple[str, bool]:
  """(Hugging Face tensor name, whether to transpose) for our parameter.

  Raises:
    ValueError: for a name T5 does not have (e.g. a prompt).
  """
  hf_name = hf.param_name_to_hf_name(name)
  if hf_name is None:
    raise ValueError(f"{name} is not a T5 parameter; Hugging Face T5 has no "
                     "place for it.")
  if hf_name == hf.EMBEDDING_NAMES[0]:
    return hf_name, False
  if hf_name == hf.LM_HEAD:
    return hf_name, True
  back = hf.hf_name_to_param_name(hf_name)
  if back is None or back[0] != name:  # The table must be its own inverse.
    raise AssertionError(f"{name} -> {hf_name} -> {back}")
  return hf_name, back[1]


def params_to_hf_tensors(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{Hugging Face name: contiguous float32 [out, in] tensor} of a T5 tree.

  Args:
    params: nested or flat ('/'-joined) dict of our arrays.
  """
  out = {}
  for name, value in param_tree.flatten_params(params).items():
    hf_name, transpose = hf_tensor_name(name)
    array = np.asarray(value, np.float32)
    out[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  return out


def _tokenizer_files(vocab_file: PathLike, out: pathlib.Path) -> None:
  """Copies the SentencePiece model and writes T5Tokenizer's settings."""
  shutil.copyfile(os.fspath(vocab_file), out / SPIECE_FILE)
  sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
  special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
             "additional_special_tokens": sentinels}
  tokenizer_config = {"tokenizer_class": "T5Tokenizer", "extra_ids": EXTRA_IDS,
                      "model_max_length": 512, "legacy": True, **special}
  for name, content in ((TOKENIZER_CONFIG_FILE, tokenizer_config),
                        (SPECIAL_TOKENS_FILE, special)):
    (out / name).write_text(json.dumps(content, indent=2) + "\n")


def write_hf_checkpoint(output_dir: PathLike, params: Mapping[str, Any],
                        config: config_lib.T5Config,
                        vocab_file: Optional[PathLike] = None
                        ) -> pathlib.Path:
  """Writes `params` as a Hugging Face T5 directory (see module docstring).

  Args:
    output_dir: created if missing; existing files of ours are replaced.
    params: nested or flat dict of our T5 parameters (`param_tree` names and
      shapes), exactly those of `config`.
    config: the model's configuration.
    vocab_file: the SentencePiece model to ship with it (None: no tokenizer
      files).

  Returns:
    The directory.

  Raises:
    validation.ParamMismatchError: when `params` are not `config`'s.
    ValueError: see `feed_forward_proj`.
  """
  hf_config = t5_config_to_hf_config(config)
  flat = param_tree.flatten_params(params)
  hf.check_against_own_config(param_tree.unflatten_params(flat), config,
                              output_dir)
  tensors = params_to_hf_tensors(flat)
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, str(out / hf.SAFETENSORS_FILE),
                              metadata={"format": "pt"})
  (out / hf.CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
  written = [hf.SAFETENSORS_FILE, hf.CONFIG_FILE]
  if vocab_file is not None:
    _tokenizer_files(vocab_file, out)
    written += [SPIECE_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE]
  integrity.write_manifest(out, [out / name for name in written])
  return out
