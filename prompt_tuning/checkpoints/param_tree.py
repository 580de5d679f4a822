"""The T5 parameter tree: '/'-joined names and the shapes a config implies.

Parameters are nested dicts of float32 arrays named as Flaxformer and T5X
name them, so a T5X checkpoint's `target` tree is already in our layout:

  token_embedder/embedding                               [vocab, embed]
  encoder/relpos_bias/rel_embedding                      [heads, buckets]
  encoder/layers_{i}/pre_attention_layer_norm/scale      [embed]
  encoder/layers_{i}/attention/{query,key,value}/kernel  [embed, heads*head_dim]
  encoder/layers_{i}/attention/out/kernel                [heads*head_dim, embed]
  encoder/layers_{i}/pre_mlp_layer_norm/scale            [embed]
  encoder/layers_{i}/mlp/wi/kernel                       [embed, mlp]  (1 act)
  encoder/layers_{i}/mlp/wi_{j}/kernel                   [embed, mlp]  (gated)
  encoder/layers_{i}/mlp/wo/kernel                       [mlp, embed]
  encoder/encoder_norm/scale                             [embed]
  decoder/relpos_bias/rel_embedding                      [heads, buckets]
  decoder/layers_{i}/pre_self_attention_layer_norm/scale
  decoder/layers_{i}/self_attention/{query,key,value,out}/kernel
  decoder/layers_{i}/pre_cross_attention_layer_norm/scale
  decoder/layers_{i}/encoder_decoder_attention/{query,key,value,out}/kernel
  decoder/layers_{i}/pre_mlp_layer_norm/scale
  decoder/layers_{i}/mlp/{wi | wi_0, wi_1, ...}/kernel, mlp/wo/kernel
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                            [embed, vocab]
      (absent when config.logits_via_embedding)
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from prompt_tuning.models.config import T5Config

# A nested dict of arrays (or of shapes), keyed by module and parameter name.
Params = dict[str, Any]

SEPARATOR = "/"


def flatten_params(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Flattens a nested mapping into {'a/b/c': leaf}.

  Only mappings are descended into; anything else (arrays, ShapeDtypeStructs,
  shape tuples) is a leaf.

  Args:
    tree: nested mapping with string keys.

  Returns:
    A flat dict from '/'-joined key paths to leaves, in traversal order.
  """
  flat = {}

  def visit(node: Mapping[str, Any], prefix: str) -> None:
    for key, value in node.items():
      name = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
      if isinstance(value, Mapping):
        visit(value, name)
      else:
        flat[name] = value

  visit(tree, "")
  return flat


def unflatten_params(flat: Mapping[str, Any],
                     fn: Callable[[Any], Any] = lambda x: x) -> Params:
  """Inverse of `flatten_params`, applying `fn` to every leaf.

  Args:
    flat: {'a/b/c': leaf}.
    fn: applied to each leaf.

  Returns:
    The nested dict.
  """
  tree: Params = {}
  for name, leaf in flat.items():
    *parents, last = name.split(SEPARATOR)
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = fn(leaf)
  return tree


def mlp_input_names(config: T5Config) -> tuple[str, ...]:
  """Names of the MLP input projections: ('wi',) or ('wi_0', 'wi_1', ...)."""
  if len(config.mlp_activations) == 1:
    return ("wi",)
  return tuple(f"wi_{i}" for i in range(len(config.mlp_activations)))


def t5_param_shapes(config: T5Config) -> Params:
  """Returns the parameter tree a T5 model of `config` must have.

  This is the contract between the checkpoint loaders and the Flax model:
  `jax.eval_shape(model.init, ...)['params']` must equal it.

  Args:
    config: model hyper-parameters.

  Returns:
    Nested dict of float32 `jax.ShapeDtypeStruct`s (see the module docstring
    for names and shapes).
  """
  embed, inner = config.emb_dim, config.num_heads * config.head_dim
  flat: dict[str, tuple[int, ...]] = {
      "token_embedder/embedding": (config.vocab_size, embed),
  }

  def attention(prefix: str) -> None:
    for name in ("query", "key", "value"):
      flat[f"{prefix}/{name}/kernel"] = (embed, inner)
    flat[f"{prefix}/out/kernel"] = (inner, embed)

  def mlp(prefix: str) -> None:
    for name in mlp_input_names(config):
      flat[f"{prefix}/{name}/kernel"] = (embed, config.mlp_dim)
    flat[f"{prefix}/wo/kernel"] = (config.mlp_dim, embed)

  relpos = (config.num_heads, config.relative_attention_num_buckets)
  flat["encoder/relpos_bias/rel_embedding"] = relpos
  for i in range(config.num_encoder_layers):
    layer = f"encoder/layers_{i}"
    flat[f"{layer}/pre_attention_layer_norm/scale"] = (embed,)
    attention(f"{layer}/attention")
    flat[f"{layer}/pre_mlp_layer_norm/scale"] = (embed,)
    mlp(f"{layer}/mlp")
  flat["encoder/encoder_norm/scale"] = (embed,)

  flat["decoder/relpos_bias/rel_embedding"] = relpos
  for i in range(config.num_decoder_layers):
    layer = f"decoder/layers_{i}"
    flat[f"{layer}/pre_self_attention_layer_norm/scale"] = (embed,)
    attention(f"{layer}/self_attention")
    flat[f"{layer}/pre_cross_attention_layer_norm/scale"] = (embed,)
    attention(f"{layer}/encoder_decoder_attention")
    flat[f"{layer}/pre_mlp_layer_norm/scale"] = (embed,)
    mlp(f"{layer}/mlp")
  flat["decoder/decoder_norm/scale"] = (embed,)
  if not config.logits_via_embedding:
    flat["decoder/logits_dense/kernel"] = (embed, config.vocab_size)

  return unflatten_params(
      flat, lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32))
