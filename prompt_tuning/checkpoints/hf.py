"""Hugging Face T5 checkpoint directories: config and names (no PyTorch).

What `sharded.open_checkpoint` needs to read one: the config mapping and
the tensor-name mapping. A directory as `save_pretrained` writes it:
`config.json` plus a weights file (`hf_formats`: `model.safetensors`,
`pytorch_model.bin`, `flax_model.msgpack`, `tf_model.h5`, or a sharded
`*.index.json` with the shards it names). T5 1.0, T5 1.1, the LM-adapted T5 1.1 and
Flan-T5 all use the same tensor names (PyTorch's, which `hf_formats` gives
every format):

  shared.weight                          [vocab, d_model] -> token_embedder
  {encoder,decoder}.embed_tokens.weight  copies of shared.weight
  lm_head.weight                         [vocab, d_model] -> logits_dense.T
  {stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                         [buckets, heads] -> relpos_bias.T
  {stack}.block.{i}.layer.{j}.{SelfAttention,EncDecAttention}.{q,k,v,o}.weight
  {stack}.block.{i}.layer.{j}.DenseReluDense.{wi,wi_0,wi_1,wo}.weight
  {stack}.block.{i}.layer.{j}.layer_norm.weight
  {stack}.final_layer_norm.weight

PyTorch `Linear` weights are [out, in]; our kernels are [in, out], so they
are transposed. Sub-layer j is attention (0) and MLP (1) in the encoder;
self-attention (0), cross-attention (1) and MLP (2) in the decoder.

Tied logits. transformers 4.x writes `tie_word_embeddings`: true means the
decoder output is scaled by d_model**-0.5 and multiplied by `shared.weight`
(T5 1.0); false means an unscaled separate `lm_head` (T5 1.1). transformers
5.x always writes `tie_word_embeddings: true` and adds `scale_decoder_outputs`
for the scaling; there `lm_head.weight` is in the file only when it differs
from `shared.weight`. Scaling implies our `logits_via_embedding=True`; no
scaling gives `logits_via_embedding=False` with `decoder/logits_dense/kernel`
taken from `lm_head.weight`, or from `shared.weight` when the file has no
separate head and the config ties it.
"""

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Mapping

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import validation
from prompt_tuning.models import config as config_lib

Params = param_tree.Params

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"

# transformers' T5Config defaults, used for keys a config.json leaves out
# (older files omit e.g. relative_attention_max_distance).
_HF_DEFAULTS = {
    "vocab_size": 32128,
    "d_model": 512,
    "d_kv": 64,
    "d_ff": 2048,
    "num_layers": 6,
    "num_decoder_layers": None,
    "num_heads": 8,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
    "tie_word_embeddings": True,
    "is_encoder_decoder": True,
}

# transformers activation names -> ours (see config_lib.T5Config).
# transformers' "gelu" is the exact erf GELU; "gelu_new" and
# "gelu_pytorch_tanh" are the tanh approximation T5 1.1 was trained with.
_ACTIVATIONS = {
    "relu": "relu",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu_exact",
    "silu": "silu",
    "swish": "silu",
}

# (stack, sub-layer index) -> (HF module, our module, our layer norm).
_SUBLAYERS = {
    ("encoder", 0): ("SelfAttention", "attention", "pre_attention_layer_norm"),
    ("encoder", 1): ("DenseReluDense", "mlp", "pre_mlp_layer_norm"),
    ("decoder", 0):
        ("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
    ("decoder", 1): ("EncDecAttention", "encoder_decoder_attention",
                     "pre_cross_attention_layer_norm"),
    ("decoder", 2): ("DenseReluDense", "mlp", "pre_mlp_layer_norm"),
}
_ATTENTION_PROJECTIONS = {"q": "query", "k": "key", "v": "value", "o": "out"}
_MLP_PROJECTIONS = ("wi", "wi_0", "wi_1", "wo")
_STACK_NORMS = {"encoder": "encoder_norm", "decoder": "decoder_norm"}

_BLOCK = re.compile(
    r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(\w+)\.(\w+)\.weight$")
_LAYER_NORM = re.compile(
    r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.layer_norm\.weight$")
_FINAL_NORM = re.compile(r"^(encoder|decoder)\.final_layer_norm\.weight$")

# The token embedding and its copies, shared.weight first.
EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight",
                   "decoder.embed_tokens.weight")
LM_HEAD = "lm_head.weight"
# Old checkpoints carry a relative bias in the first cross-attention that the
# model never uses; transformers drops it on load too.
IGNORED = ("decoder.block.0.layer.1.EncDecAttention."
           "relative_attention_bias.weight",)


def _activations(hf_config: Mapping[str, Any]) -> tuple[str, ...]:
  """Returns our `mlp_activations` for a config.json's feed-forward type."""
  proj = hf_config.get("feed_forward_proj", _HF_DEFAULTS["feed_forward_proj"])
  parts = str(proj).split("-")
  if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise ValueError(
        f"Unsupported feed_forward_proj {proj!r} in the Hugging Face config: "
        "expected 'ACT' or 'gated-ACT', e.g. 'relu' (T5 1.0) or 'gated-gelu' "
        "(T5 1.1).")
  gated = len(parts) == 2
  act = parts[-1]
  # transformers maps 'gated-gelu' to the tanh approximation for
  # compatibility with the original T5 1.1 checkpoints.
  if proj == "gated-gelu":
    act = "gelu_new"
  # A config.json written by transformers also holds the derived values; they
  # are what the PyTorch model runs with.
  act = hf_config.get("dense_act_fn", act)
  gated = hf_config.get("is_gated_act", gated)
  if act not in _ACTIVATIONS:
    raise ValueError(
        f"Unsupported MLP activation {act!r} (feed_forward_proj={proj!r}) in "
        f"the Hugging Face config; supported: {sorted(_ACTIVATIONS)}.")
  ours = _ACTIVATIONS[act]
  return (ours, "linear") if gated else (ours,)


def _scales_decoder_output(hf_config: Mapping[str, Any]) -> bool:
  """Whether logits are computed from decoder output × d_model**-0.5."""
  if "scale_decoder_outputs" in hf_config:  # transformers >= 5.
    return bool(hf_config["scale_decoder_outputs"])
  return bool(hf_config.get("tie_word_embeddings",
                            _HF_DEFAULTS["tie_word_embeddings"]))


def hf_config_to_t5_config(hf_config: Mapping[str, Any]) -> config_lib.T5Config:
  """Maps a Hugging Face T5 `config.json` dict to a `T5Config`.

  Keys the dict leaves out take transformers' T5Config defaults.

  Args:
    hf_config: the parsed config.json.

  Returns:
    The equivalent T5Config (float32 activations).

  Raises:
    ValueError: for a model that is not a T5 encoder-decoder or an MLP
      activation we do not implement.
  """
  model_type = hf_config.get("model_type", "t5")
  if model_type != "t5":
    raise ValueError(
        f"Unsupported Hugging Face model_type {model_type!r}: only 't5' "
        "checkpoints (T5 1.0, T5 1.1, LM-adapted, Flan-T5) can be loaded.")
  if not hf_config.get("is_encoder_decoder", True):
    raise ValueError("The Hugging Face config has is_encoder_decoder=false; "
                     "only encoder-decoder T5 checkpoints can be loaded.")

  def get(key: str) -> Any:
    return hf_config.get(key, _HF_DEFAULTS[key])

  num_layers = int(get("num_layers"))
  num_decoder_layers = get("num_decoder_layers")
  return config_lib.T5Config(
      vocab_size=int(get("vocab_size")),
      emb_dim=int(get("d_model")),
      num_heads=int(get("num_heads")),
      head_dim=int(get("d_kv")),
      mlp_dim=int(get("d_ff")),
      num_encoder_layers=num_layers,
      num_decoder_layers=(num_layers if num_decoder_layers is None
                          else int(num_decoder_layers)),
      mlp_activations=_activations(hf_config),
      dropout_rate=float(get("dropout_rate")),
      logits_via_embedding=_scales_decoder_output(hf_config),
      relative_attention_num_buckets=int(
          get("relative_attention_num_buckets")),
      relative_attention_max_distance=int(
          get("relative_attention_max_distance")),
      layer_norm_epsilon=float(get("layer_norm_epsilon")),
  )


def hf_name_to_param_name(name: str) -> tuple[str, bool] | None:
  """Maps one Hugging Face block/norm tensor name to ours.

  Embedding and LM head names are handled by `tensors_to_params`.

  Args:
    name: e.g. 'encoder.block.0.layer.0.SelfAttention.q.weight'.

  Returns:
    (our '/'-joined name, whether the tensor must be transposed), or None
    when the name is not a T5 block or final-norm tensor.
  """
  if m := _FINAL_NORM.match(name):
    return f"{m.group(1)}/{_STACK_NORMS[m.group(1)]}/scale", False
  if m := _LAYER_NORM.match(name):
    stack, block, sub = m.group(1), int(m.group(2)), int(m.group(3))
    if (stack, sub) not in _SUBLAYERS:
      return None
    norm = _SUBLAYERS[(stack, sub)][2]
    return f"{stack}/layers_{block}/{norm}/scale", False
  if m := _BLOCK.match(name):
    stack, block, sub = m.group(1), int(m.group(2)), int(m.group(3))
    module, proj = m.group(4), m.group(5)
    if _SUBLAYERS.get((stack, sub), (None,))[0] != module:
      return None
    ours = _SUBLAYERS[(stack, sub)][1]
    if module == "DenseReluDense":
      if proj not in _MLP_PROJECTIONS:
        return None
      return f"{stack}/layers_{block}/mlp/{proj}/kernel", True
    if proj == "relative_attention_bias":
      if module != "SelfAttention" or block != 0:
        return None
      return f"{stack}/relpos_bias/rel_embedding", True
    if proj not in _ATTENTION_PROJECTIONS:
      return None
    return (f"{stack}/layers_{block}/{ours}/{_ATTENTION_PROJECTIONS[proj]}"
            "/kernel", True)
  return None


def param_name_to_hf_name(name: str) -> str | None:
  """Inverse of the mapping: our parameter name -> Hugging Face tensor name.

  Args:
    name: e.g. 'decoder/layers_1/encoder_decoder_attention/key/kernel'.

  Returns:
    The Hugging Face name, or None for a name T5 does not have.
  """
  if name == param_tree.EMBEDDING:
    return "shared.weight"
  if name == param_tree.LOGITS:
    return LM_HEAD
  parts = name.split(param_tree.SEPARATOR)
  stack = parts[0]
  if stack not in _STACK_NORMS:
    return None
  if parts[1:] == [_STACK_NORMS[stack], "scale"]:
    return f"{stack}.final_layer_norm.weight"
  if parts[1:] == ["relpos_bias", "rel_embedding"]:
    return (f"{stack}.block.0.layer.0.SelfAttention."
            "relative_attention_bias.weight")
  m = re.fullmatch(r"layers_(\d+)", parts[1]) if len(parts) > 1 else None
  if not m:
    return None
  prefix = f"{stack}.block.{m.group(1)}.layer"
  for (sub_stack, sub), (module, ours, norm) in _SUBLAYERS.items():
    if sub_stack != stack:
      continue
    if parts[2:] == [norm, "scale"]:
      return f"{prefix}.{sub}.layer_norm.weight"
    if len(parts) == 5 and parts[2] == ours and parts[4] == "kernel":
      proj = parts[3]
      if module != "DenseReluDense":
        inverse = {v: k for k, v in _ATTENTION_PROJECTIONS.items()}
        proj = inverse.get(proj)
      elif proj not in _MLP_PROJECTIONS:
        proj = None
      if proj:
        return f"{prefix}.{sub}.{module}.{proj}.weight"
  return None


def hf_name_hint(name: str) -> str | None:
  """'HF <tensor name>' for one of our parameter names, for error messages."""
  hf_name = param_name_to_hf_name(name)
  return f"HF {hf_name}" if hf_name else None


def embedding_copy_error(source: str, name: str) -> ValueError:
  """The error for an embedding copy `name` that differs from shared.weight."""
  return ValueError(
      f"{source}: {name} differs from {EMBEDDING_NAMES[0]}; T5 shares "
      "one token embedding between encoder, decoder and shared.")


def scaled_untied_head_error(source: str) -> ValueError:
  """The error for tied (scaled) logits with a different lm_head.weight."""
  return ValueError(
      f"{source}: the config scales the decoder output for tied logits "
      "(tie_word_embeddings / scale_decoder_outputs) but lm_head.weight "
      "differs from shared.weight. A scaled, untied output layer is not "
      "supported.")


def head_tied_to_embedding(hf_config: Mapping[str, Any]) -> bool:
  """Whether a missing lm_head.weight means `shared.weight` (config.json)."""
  return bool(hf_config.get("tie_word_embeddings",
                            _HF_DEFAULTS["tie_word_embeddings"]))


def checkpoint_source(model_dir: str | os.PathLike[str]) -> str:
  """How errors name a Hugging Face checkpoint directory."""
  return f"the Hugging Face checkpoint {model_dir}"


def check_against_own_config(params: Mapping[str, Any],
                             config: config_lib.T5Config,
                             model_dir: str | os.PathLike[str]) -> Params:
  """`validation.check_params` of `params` against the config's shapes.

  Args:
    params: nested dict of arrays (or of shapes, e.g. ShapeDtypeStructs).
    config: the checkpoint's own T5Config (from its config.json).
    model_dir: named in the error.

  Returns:
    `params` in the order of `param_tree.t5_param_shapes(config)`.

  Raises:
    validation.ParamMismatchError: listing every offending parameter, with
      the Hugging Face tensor name of each.
  """
  return validation.check_params(
      param_tree.t5_param_shapes(config), params,
      source=checkpoint_source(model_dir),
      expected_source=f"its own {CONFIG_FILE} ({config})",
      name_hint=hf_name_hint)


def read_hf_config(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Returns the parsed `config.json` of a Hugging Face model directory."""
  path = pathlib.Path(model_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"No {CONFIG_FILE} in {model_dir}.")
  with path.open() as f:
    return json.load(f)


def _renamed(tensor: Any, name: str, transpose: bool) -> Any:
  """`tensor` as our parameter `name` (our shape reversed if transposed)."""
  shape = tensor.shape[::-1] if transpose else tensor.shape
  return dataclasses.replace(tensor, name=name, shape=shape,
                             transpose=transpose)


def tensors_to_params(tensors: Mapping[str, Any], config: config_lib.T5Config,
                      head_tied_to_embedding: bool) -> dict[str, Any]:
  """Our parameters from Hugging Face tensors (see the module docstring):
  unknown names are kept, so that the shape check reports them.

  Args:
    tensors: {Hugging Face name: a dataclass with `name`, `shape` (the
      stored one) and `transpose` fields}, e.g. `sharded.ArraySource`s.
    config: the checkpoint's own config.
    head_tied_to_embedding: see `head_tied_to_embedding`.

  Returns:
    {our name: the tensor, renamed, its shape ours (reversed when
    transposed)}.
  """
  sources = {}
  for name, tensor in tensors.items():
    if name in EMBEDDING_NAMES or name == LM_HEAD or name in IGNORED:
      continue
    mapped = hf_name_to_param_name(name)
    if mapped is None:
      sources[name] = tensor
    else:
      sources[mapped[0]] = _renamed(tensor, *mapped)
  embeddings = [n for n in EMBEDDING_NAMES if n in tensors]
  embedding, logits = param_tree.EMBEDDING, param_tree.LOGITS
  if embeddings:
    sources[embedding] = _renamed(tensors[embeddings[0]], embedding, False)
  if config.logits_via_embedding:
    pass  # The head is the embedding; a stored lm_head is only compared.
  elif LM_HEAD in tensors:
    sources[logits] = _renamed(tensors[LM_HEAD], logits, True)
  elif head_tied_to_embedding and embeddings:
    sources[logits] = _renamed(tensors[embeddings[0]], logits, True)
  return sources
