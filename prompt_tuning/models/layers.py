"""Building blocks of T5: dense projections, RMS norm, attention, MLP.

Every parameter is created through `nn.with_logical_partitioning`, so the
parameter tree carries logical axis names (`embed`, `mlp`, `joined_kv`, ...)
that `prompt_tuning.partitioning` maps onto a device mesh with one table of
rules. Main activations get `nn.with_logical_constraint` on the same names.

Parameters are created float32 (a training run may store its frozen ones in
bfloat16, FROZEN_DTYPE); `dtype` is the activation (compute) dtype, to which
every product casts its operands.

Shape legend used in docstrings:
  b: batch, l/q: query length, k: key length, e: embed (d_model),
  h: heads, d: head_dim, m: mlp (d_ff), v: vocabulary.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.models import config as config_lib

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Large negative number used to mask attention logits.
_NEG_INF = -1e10

default_kernel_init = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal")


def matmul(a: Array, b: Array, dtype: DType) -> Array:
  """`a @ b` in the compute dtype `dtype`, accumulated in float32.

  With bfloat16 the product reads bfloat16 operands and accumulates in
  float32 before rounding its output to bfloat16: what TPUs and GPUs do
  anyway, and on CPUs with bfloat16 dot instructions (AVX512-BF16, AMX) the
  fast kernel, where a bfloat16-output product is slower than float32's.
  """
  a, b = a.astype(dtype), b.astype(dtype)
  if jnp.dtype(dtype) == jnp.float32:
    return jnp.dot(a, b)
  return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(dtype)


def _activation(name: str) -> Callable[[Array], Array]:
  return {
      "relu": nn.relu,
      "gelu": lambda x: nn.gelu(x, approximate=True),
      "gelu_exact": lambda x: nn.gelu(x, approximate=False),
      "silu": nn.silu,
      "linear": lambda x: x,
  }[name]


class Dense(nn.Module):
  """A bias-free linear map `[..., in] -> [..., features]`.

  Attributes:
    features: output width.
    kernel_axes: logical names of the `[in, features]` kernel.
    dtype: compute dtype.
    kernel_init: initializer of the float32 kernel.
  """
  features: int
  kernel_axes: tuple[str, str]
  dtype: DType = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
        (inputs.shape[-1], self.features), jnp.float32)
    return matmul(inputs, jnp.asarray(kernel), self.dtype)


class Embed(nn.Module):
  """Token embedding `[vocab, embed]`, also usable as a tied output layer."""
  num_embeddings: int
  features: int
  dtype: DType = jnp.float32
  embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

  def setup(self):
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, ids: Array) -> Array:
    """Looks up `ids` `[b, l]` (int) -> `[b, l, e]`."""
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"Embed expects integer token ids, got {ids.dtype}.")
    embedded = jnp.take(jnp.asarray(self.embedding, self.dtype), ids, axis=0)
    return nn.with_logical_constraint(embedded, ("batch", "length", "embed"))

  def attend(self, query: Array) -> Array:
    """Dot product with every embedding: `[..., e] -> [..., v]`."""
    return matmul(query, jnp.asarray(self.embedding).T, self.dtype)


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, no bias.

  y = x / sqrt(mean(x**2) + epsilon) * scale, computed in float32.
  """
  epsilon: float = 1e-6
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`[..., e] -> [..., e]`."""
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(
        jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (y * scale).astype(self.dtype)


def relative_position_buckets(query_length: int, key_length: int,
                              bidirectional: bool, num_buckets: int,
                              max_distance: int) -> np.ndarray:
  """T5's bucketing of `key_position - query_position`, `[q, k]` int32.

  Distances below half the buckets (per direction) get a bucket each; larger
  ones share log-spaced buckets up to `max_distance`, beyond which all share
  the last bucket. In the bidirectional case half the buckets are for keys
  after the query. Computed with NumPy in float32 (lengths are static).
  """
  context = np.arange(query_length, dtype=np.int64)[:, None]
  memory = np.arange(key_length, dtype=np.int64)[None, :]
  n = -(memory - context)  # Positive when the key is before the query.
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int64) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  safe_n = np.maximum(n, 1).astype(np.float32)
  large = max_exact + (
      np.log(safe_n / np.float32(max_exact)) /
      np.float32(np.log(max_distance / max_exact)) *
      np.float32(num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  bucket += np.where(is_small, n, large)
  return bucket.astype(np.int32)


class RelativePositionBiases(nn.Module):
  """Learned per-head biases added to attention logits, one per bucket.

  Shared by all layers of a stack (as in T5 and T5X), so it lives on the
  encoder / decoder, not on each layer.
  """
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: DType = jnp.float32
  embedding_init: Initializer = nn.initializers.variance_scaling(
      1.0, "fan_avg", "uniform")

  @nn.compact
  def __call__(self, query_length: int, key_length: int,
               bidirectional: bool) -> Array:
    """Returns the bias `[1, h, q, k]`."""
    rel_embedding = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(self.embedding_init,
                                     ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    buckets = relative_position_buckets(query_length, key_length,
                                        bidirectional, self.num_buckets,
                                        self.max_distance)
    values = jnp.take(jnp.asarray(rel_embedding, self.dtype),
                      jnp.asarray(buckets), axis=1)  # [h, q, k]
    return values[None]


class MultiHeadDotProductAttention(nn.Module):
  """T5 attention with joined-head projections and an optional decode cache.

  Kernels are `[embed, heads * head_dim]` (`('embed', 'joined_kv')`) as T5X
  checkpoints store them. Logits are not scaled by 1/sqrt(head_dim): T5
  folds that into the query initialisation.

  Attributes:
    num_heads: h.
    head_dim: d.
    dtype: compute dtype.
    dropout_rate: dropout on the attention weights `[b, h, q, k]`, the same
      mask for every query `q`.
    float32_logits: softmax in float32.
    layout: how the weighted sum of values is computed, 'head_major' or
      't5x' (`config.ATTENTION_LAYOUTS`).
  """
  num_heads: int
  head_dim: int
  dtype: DType = jnp.float32
  dropout_rate: float = 0.0
  float32_logits: bool = True
  layout: str = config_lib.DEFAULT_ATTENTION_LAYOUT

  @nn.compact
  def __call__(self,
               inputs_q: Array,
               inputs_kv: Array,
               mask: Optional[Array] = None,
               bias: Optional[Array] = None,
               *,
               enable_dropout: bool = False,
               decode: bool = False,
               prefix_key: Optional[Array] = None,
               prefix_value: Optional[Array] = None,
               key_value: Optional[tuple[Array, Array]] = None) -> Array:
    """Attends from `inputs_q` `[b, q, e]` to `inputs_kv` `[b, k, e]`.

    Args:
      inputs_q: queries `[b, q, e]`.
      inputs_kv: keys/values `[b, k, e]`.
      mask: `[b, 1 or h, q, k]`, nonzero where attention is allowed.
      bias: added to the logits, `[1 or b, h, q, k]` (relative positions).
        In decode mode this is the full `[1, h, L, L]` bias; the current row
        is sliced out here.
      enable_dropout: apply dropout to attention weights.
      decode: autoregressive decoding with a key/value cache of the length
        given by `inputs_kv` at initialisation; `mask` is then ignored and
        positions up to the current one are attended.
      prefix_key: optional deep-prompt keys `[b or 1, p, h, d]`, prepended
        to the projected keys (after any decode cache, so the cache holds
        token keys only). Requires `prefix_value`. See `prepend_prefix`.
      prefix_value: the matching values `[b or 1, p, h, d]`.
      key_value: the projected keys and values of `inputs_kv`, head-major
        `[b', h, k, d]`, computed beforehand (`project_key_value`; cached
        decoding computes the cross-attention's once per decode), used
        instead of projecting `inputs_kv`. `b'` may divide `b`: query rows
        `i * r ... i * r + r - 1` (`r = b / b'`, e.g. the beams of example
        `i`) then share row `i`. Not with `decode`, prefixes, `bias` or
        dropout (cross-attention while decoding has none of them).

    Returns:
      `[b, q, e]`.
    """
    joined = self.num_heads * self.head_dim
    emb_dim = inputs_q.shape[-1]
    query_init = nn.initializers.variance_scaling(
        1.0 / self.head_dim, "fan_in", "truncated_normal")

    def projection(name, init=default_kernel_init):
      return Dense(joined, ("embed", "joined_kv"), self.dtype, init, name=name)

    def split_heads(x):  # [b, l, h*d] -> [b, l, h, d]
      x = x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
      return nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))

    query = split_heads(projection("query", query_init)(inputs_q))
    if key_value is None:
      key = split_heads(projection("key")(inputs_kv))
      value = split_heads(projection("value")(inputs_kv))
    else:
      if (decode or prefix_key is not None or prefix_value is not None or
          bias is not None or (enable_dropout and self.dropout_rate > 0.0)):
        raise ValueError("key_value cannot be combined with decode, "
                         "prefixes, a bias or dropout.")
      out = self._attend_shared(query, *key_value, mask)
      return Dense(emb_dim, ("joined_kv", "embed"), self.dtype,
                   name="out")(out)

    if decode:
      is_initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape,
                                 key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                   value.shape, value.dtype)
      cache_index = self.variable("cache", "cache_index",
                                  lambda: jnp.array(0, dtype=jnp.int32))
      if is_initialized:
        batch, max_length = cached_key.value.shape[:2]
        if query.shape[1] != 1:
          raise ValueError("Decode mode takes one token at a time, got "
                           f"query length {query.shape[1]}.")
        index = cache_index.value
        key = jax.lax.dynamic_update_slice(cached_key.value, key,
                                           (0, index, 0, 0))
        value = jax.lax.dynamic_update_slice(cached_value.value, value,
                                             (0, index, 0, 0))
        cached_key.value, cached_value.value = key, value
        cache_index.value = index + 1
        # Attend to every cached position up to and including this one.
        mask = (jnp.arange(max_length) <= index)[None, None, None, :]
        mask = jnp.broadcast_to(mask, (batch, 1, 1, max_length))
        if bias is not None:
          bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=2)

    if prefix_key is not None or prefix_value is not None:
      key, value, mask, bias = prepend_prefix(key, value, mask, bias,
                                              prefix_key, prefix_value)

    logits_dtype = jnp.float32 if self.float32_logits else self.dtype
    logits = jnp.einsum("bqhd,bkhd->bhqk", query.astype(logits_dtype),
                        key.astype(logits_dtype))
    if bias is not None:
      logits = logits + bias.astype(logits_dtype)
    if mask is not None:
      logits = jnp.where(mask > 0, logits, jnp.asarray(_NEG_INF, logits_dtype))
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    if enable_dropout and self.dropout_rate > 0.0:
      # One mask `[b, h, 1, k]` for all queries, as in T5X/Flaxformer.
      weights = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
          weights, deterministic=False)

    out = weighted_sum(weights, value.astype(self.dtype), "bkhd", self.layout)
    out = out.reshape(out.shape[:2] + (joined,))
    return Dense(emb_dim, ("joined_kv", "embed"), self.dtype, name="out")(out)

  def _attend_shared(self, query: Array, key: Array, value: Array,
                     mask: Optional[Array]) -> Array:
    """Queries `[b, q, h, d]` against head-major keys/values `[b', h, k, d]`
    shared by each `r = b / b'` consecutive query rows (no bias, no
    dropout); returns the heads' outputs joined, `[b, q, h * d]`.

    The keys/values stay in the layout the two batched matrix multiplies
    read (batch dimensions `b', h` leading), so a decode loop that calls
    this at every step does not transpose them again each time.
    """
    rows, length = query.shape[:2]
    shared = key.shape[0]
    if rows % shared:
      raise ValueError(f"{rows} query rows cannot share {shared} key rows.")
    r = rows // shared
    logits_dtype = jnp.float32 if self.float32_logits else self.dtype
    # [b', r * q, h, d]: each example's rows side by side along the queries.
    grouped = query.reshape((shared, r * length) + query.shape[2:])
    logits = jnp.einsum("bqhd,bhkd->bhqk", grouped.astype(logits_dtype),
                        key.astype(logits_dtype))
    if mask is not None:  # [b, m, q, k] -> [b', m, r * q, k]
      m = mask.reshape((shared, r) + mask.shape[1:]).transpose(0, 2, 1, 3, 4)
      m = m.reshape((shared, mask.shape[1], r * mask.shape[2], mask.shape[3]))
      logits = jnp.where(m > 0, logits, jnp.asarray(_NEG_INF, logits_dtype))
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = weighted_sum(weights, value.astype(self.dtype), "bhkd", self.layout)
    return out.reshape((rows, length, self.num_heads * self.head_dim))


def weighted_sum(weights: Array, value: Array, value_axes: str,
                 layout: str) -> Array:
  """Attention's weighted sum of values: `weights` `[b, h, q, k]` times
  `value` (`value_axes` names its axes, `bkhd` or `bhkd`) -> `[b, q, h, d]`.

  `layout` (`config.ATTENTION_LAYOUTS`): 'head_major' computes the product
  as `bhqd` and then moves the axes, which XLA's CPU backend runs 2-4x
  faster at inference, accumulating in float32 (as `matmul`); 't5x' is
  T5X/Flaxformer's einsum straight to `bqhd` (bit-for-bit the original),
  rounding differently.
  """
  if layout == "t5x":
    return jnp.einsum(f"bhqk,{value_axes}->bqhd", weights, value)
  if layout == "head_major":
    out = jnp.einsum(f"bhqk,{value_axes}->bhqd", weights, value,
                     preferred_element_type=jnp.float32)
    return jnp.swapaxes(out.astype(weights.dtype), 1, 2)
  raise ValueError(f"Unknown attention layout {layout!r}; use one of "
                   "config.ATTENTION_LAYOUTS.")


def project_key_value(params: Any, inputs_kv: Array, num_heads: int,
                      head_dim: int, dtype: DType = jnp.float32
                      ) -> tuple[Array, Array]:
  """The keys and values a `MultiHeadDotProductAttention` with `params`
  computes from `inputs_kv` `[b, k, e]`, head-major `[b, h, k, d]` each,
  for its `key_value` argument."""
  joined = num_heads * head_dim

  def project(name):
    y = Dense(joined, ("embed", "joined_kv"), dtype).apply(
        {"params": params[name]}, inputs_kv)
    y = y.reshape(y.shape[:-1] + (num_heads, head_dim))
    return nn.with_logical_constraint(jnp.transpose(y, (0, 2, 1, 3)),
                                      ("batch", "heads", "length", "kv"))
  return project("key"), project("value")


def prepend_prefix(key: Array, value: Array, mask: Optional[Array],
                   bias: Optional[Array], prefix_key: Optional[Array],
                   prefix_value: Optional[Array]
                   ) -> tuple[Array, Array, Optional[Array], Optional[Array]]:
  """Prepends `p` prefix positions to keys/values, mask and bias.

  Every query may attend to every prefix position (the mask gets ones). The
  prefix has no position, so its relative-position bias is zero: attention
  to it is content-only. (Giving it positions before the first token, as
  treating it like a decode cache would, ties a learned prefix to how far a
  query is from the start.)

  Args:
    key: `[b, k, h, d]`.
    value: `[b, k, h, d]`.
    mask: `[b, 1 or h, q, k]` or None (attend everywhere).
    bias: `[1 or b, h, q, k]` or None.
    prefix_key: `[b or 1, p, h, d]`.
    prefix_value: `[b or 1, p, h, d]`.

  Returns:
    (key, value `[b, p + k, h, d]`, mask `[b, 1 or h, q, p + k]` or None,
    bias `[1 or b, h, q, p + k]` or None).
  """
  if prefix_key is None or prefix_value is None:
    raise ValueError("prefix_key and prefix_value must be given together.")
  if prefix_key.shape != prefix_value.shape:
    raise ValueError(f"Prefix key {prefix_key.shape} and value "
                     f"{prefix_value.shape} shapes differ.")
  if prefix_key.ndim != 4 or prefix_key.shape[2:] != key.shape[2:]:
    raise ValueError(f"Prefix shape {prefix_key.shape} must be [b or 1, p, "
                     f"{key.shape[2]}, {key.shape[3]}].")
  batch, plen = key.shape[0], prefix_key.shape[1]

  def join(prefix, x):
    prefix = jnp.broadcast_to(prefix.astype(x.dtype),
                              (batch,) + prefix.shape[1:])
    return jnp.concatenate([prefix, x], axis=1)

  key, value = join(prefix_key, key), join(prefix_value, value)
  if mask is not None:
    ones = jnp.ones(mask.shape[:-1] + (plen,), mask.dtype)
    mask = jnp.concatenate([ones, mask], axis=-1)
  if bias is not None:
    zeros = jnp.zeros(bias.shape[:-1] + (plen,), bias.dtype)
    bias = jnp.concatenate([zeros, bias], axis=-1)
  return key, value, mask, bias


class MlpBlock(nn.Module):
  """T5 feed-forward block: `wo(act_0(wi_0 x) * act_1(wi_1 x) * ...)`.

  With one activation the input projection is named `wi` (T5 1.0), with
  several `wi_0, wi_1, ...` (gated variants, T5 1.1).
  """
  mlp_dim: int
  activations: Sequence[str] = ("relu",)
  dtype: DType = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, inputs: Array, *, enable_dropout: bool = False) -> Array:
    """`[b, l, e] -> [b, l, e]`."""
    hidden = None
    for i, act in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = _activation(act)(
          Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name=name)(inputs))
      hidden = h if hidden is None else hidden * h
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    if enable_dropout and self.dropout_rate > 0.0:
      # Same mask at every position, as in T5X.
      hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
          hidden, deterministic=False)
    return Dense(inputs.shape[-1], ("mlp", "embed"), self.dtype,
                 name="wo")(hidden)


def make_attention_mask(query_mask: Array, key_mask: Array) -> Array:
  """Pairwise mask `[b, 1, q, k]` from per-position masks `[b, q]`, `[b, k]`."""
  return (query_mask[:, None, :, None] * key_mask[:, None, None, :]).astype(
      jnp.float32)


def make_causal_mask(length: int) -> Array:
  """Lower-triangular `[1, 1, l, l]` mask."""
  return jnp.tril(jnp.ones((length, length), jnp.float32))[None, None]
