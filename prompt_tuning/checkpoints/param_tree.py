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

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import t5
from prompt_tuning.models.config import T5Config

# A nested dict of arrays (or of shapes), keyed by module and parameter name.
Params = dict[str, Any]

SEPARATOR = "/"
# T5's token embedding and (T5 1.1) separate output projection, by name.
EMBEDDING = "token_embedder/embedding"
LOGITS = "decoder/logits_dense/kernel"


def flatten_params(tree: Mapping[str, Any],
                   is_leaf: Callable[[Any], bool] | None = None
                   ) -> dict[str, Any]:
  """Flattens a nested mapping into {'a/b/c': leaf}.

  Only mappings are descended into; anything else (arrays, ShapeDtypeStructs,
  boxed `nn.LogicallyPartitioned` leaves, shape tuples) is a leaf. Empty
  mappings leave no entry.

  Args:
    tree: nested mapping with string keys.
    is_leaf: also treats the mappings it accepts as leaves (e.g. the
      tensorstore spec dicts of a T5X msgpack tree).

  Returns:
    A flat dict from '/'-joined key paths to leaves, in traversal order.
  """
  flat = {}

  def visit(node: Mapping[str, Any], prefix: str) -> None:
    for key, value in node.items():
      name = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
      if isinstance(value, Mapping) and not (is_leaf and is_leaf(value)):
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


def name_of_path(path: tuple[Any, ...]) -> str:
  """The '/'-joined name of a pytree key path, from its dict keys only.

  E.g. the path of an optimizer-state leaf `(GetAttrKey('v'),
  DictKey('encoder'), DictKey('layers_0'), ...)` names the parameter it
  tracks, 'encoder/layers_0/...'.
  """
  return SEPARATOR.join(str(k.key) for k in path
                        if isinstance(k, jax.tree_util.DictKey))


@functools.lru_cache(maxsize=16)
def _t5_param_shapes(config: T5Config) -> Params:
  module = t5.Transformer(config)
  tokens = jnp.ones((1, 1), jnp.int32)
  init = functools.partial(module.init, enable_dropout=False)
  boxed = jax.eval_shape(init, jax.random.PRNGKey(0), tokens, tokens, tokens)
  return nn.unbox(boxed)["params"]


def t5_param_shapes(config: T5Config) -> Params:
  """Returns the parameter tree a plain T5 model of `config` has.

  Derived from the model itself (`jax.eval_shape` of `t5.Transformer`'s
  init: no array is allocated), so the checkpoint readers check against
  exactly what the Flax model creates.

  Args:
    config: model hyper-parameters (hashable; results are cached).

  Returns:
    Nested dict of float32 `jax.ShapeDtypeStruct`s (see the module docstring
    for names and shapes); a fresh copy each call.
  """
  return unflatten_params(flatten_params(_t5_param_shapes(config)))
