"""Deep prompts (P-Tuning v2, Liu et al., ACL 2022): per-layer prefixes.

Instead of joining trainable vectors to the input embedding only, a deep
prompt gives every self-attention layer `p` trainable key and value vectors
that all queries may attend to (see `layers.prepend_prefix`; the prefix gets
zero relative-position bias). The prefixes add no positions to the layer's
output, so the encoder output, its mask and the decoder's cross-attention
are exactly as without them.

Parameters live under `deep_prompt/` (`deep_prompt/encoder/...`, and
`deep_prompt/decoder/...` when decoder self-attention is prompted too), so a
single regex such as `deep_prompt/.*` selects everything trainable:

  direct:            deep_prompt/encoder/prefix      [layers, 2, p, h*d]
  reparameterised:   deep_prompt/encoder/embedding   [p, e]
                     deep_prompt/encoder/hidden/{kernel [e, H], bias [H]}
                     deep_prompt/encoder/output/{kernel [H, layers*2*h*d],
                                                 bias [layers*2*h*d]}

The reparameterisation (P-Tuning v2's option) computes all layers' keys and
values as `output(tanh(hidden(embedding)))`; after training the MLP can be
evaluated once and replaced by its output (`materialize`).

Shape legend: L layers, p prefix length, e embed, h heads, d head_dim,
H reparameterisation hidden width; index 0/1 of the `2` axis is key/value.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import layers
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.t5 import Transformer
from prompt_tuning.prompts import classification
from prompt_tuning.prompts import deep_init

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# P-Tuning v2 initialises prefixes like an embedding table: N(0, 1), about
# the scale of T5's projected keys and values at initialisation.
default_prefix_init = nn.initializers.normal(stddev=1.0)


class _DenseWithBias(nn.Module):
  """`layers.Dense` plus a float32 bias (the reparameterisation's layers)."""
  features: int
  kernel_axes: tuple[str, str]
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = layers.Dense(self.features, self.kernel_axes, self.dtype,
                     name="dense")(x)
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                             self.kernel_axes[1:]),
        (self.features,), jnp.float32)
    return y + jnp.asarray(bias, self.dtype)


class PrefixStack(nn.Module):
  """Key/value prefixes for every self-attention layer of one stack.

  Attributes:
    num_layers: L.
    prefix_length: p (0 gives empty prefixes: the base model exactly).
    joined_dim: h * d.
    embed_dim: e, width of the reparameterisation's prefix embedding.
    reparameterize: compute the prefixes with P-Tuning v2's MLP.
    hidden_dim: H, the MLP's hidden width.
    prefix_init: initializer of the direct prefix and of the embedding.
    dtype: dtype of the returned prefixes (parameters are float32).
  """
  num_layers: int
  prefix_length: int
  joined_dim: int
  embed_dim: int
  reparameterize: bool = False
  hidden_dim: int = 512
  prefix_init: Initializer = default_prefix_init
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self) -> Array:
    """Returns the prefixes `[L, 2, p, h*d]`."""
    n, p, j = self.num_layers, self.prefix_length, self.joined_dim
    if not self.reparameterize:
      prefix = self.param(
          "prefix", nn.with_logical_partitioning(
              self.prefix_init, ("layers", None, "prompt", "joined_kv")),
          (n, 2, p, j), jnp.float32)
      return jnp.asarray(prefix, self.dtype)
    embedding = self.param(
        "embedding", nn.with_logical_partitioning(self.prefix_init,
                                                  ("prompt", "embed")),
        (p, self.embed_dim), jnp.float32)
    hidden = jnp.tanh(_DenseWithBias(self.hidden_dim, ("embed", "mlp"),
                                     self.dtype, name="hidden")(embedding))
    out = _DenseWithBias(n * 2 * j, ("mlp", "joined_kv"), self.dtype,
                         name="output")(hidden)  # [p, L*2*h*d]
    return out.reshape(p, n, 2, j).transpose(1, 2, 0, 3)


class DeepPrompt(nn.Module):
  """The deep prompt of a T5: encoder (and optionally decoder) prefixes.

  Attributes:
    config: the model's `T5Config` (layers, heads, head_dim, emb_dim, dtype).
    prefix_length: p.
    decoder_prompt: also prefix the decoder's self-attention.
    reparameterize: see `PrefixStack`.
    hidden_dim: see `PrefixStack`.
    prefix_init: see `PrefixStack`.
    dropout_rate: dropout on the prefixes in training (P-Tuning v2 uses the
      model's hidden dropout there).
  """
  config: T5Config
  prefix_length: int
  decoder_prompt: bool = False
  reparameterize: bool = False
  hidden_dim: int = 512
  prefix_init: Initializer = default_prefix_init
  dropout_rate: float = 0.0

  def setup(self):
    cfg = self.config

    def stack(num_layers):
      return PrefixStack(num_layers, self.prefix_length,
                         cfg.num_heads * cfg.head_dim, cfg.emb_dim,
                         self.reparameterize, self.hidden_dim,
                         self.prefix_init, cfg.dtype)
    self.encoder = stack(cfg.num_encoder_layers)
    if self.decoder_prompt:
      self.decoder = stack(cfg.num_decoder_layers)
    self.dropout = nn.Dropout(self.dropout_rate)

  def _finish(self, prefixes: Array, enable_dropout: bool) -> Array:
    if enable_dropout and self.dropout_rate > 0.0:
      prefixes = self.dropout(prefixes, deterministic=False)
    return prefixes

  def encoder_prefixes(self, enable_dropout: bool = False) -> Array:
    """Encoder self-attention prefixes `[encoder layers, 2, p, h*d]`."""
    return self._finish(self.encoder(), enable_dropout)

  def decoder_prefixes(self, enable_dropout: bool = False) -> Optional[Array]:
    """Decoder self-attention prefixes `[decoder layers, 2, p, h*d]` or None."""
    if not self.decoder_prompt:
      return None
    return self._finish(self.decoder(), enable_dropout)


class DeepPromptTransformer(Transformer):
  """T5 with a deep prompt (and optionally a classification head).

  The base model's parameters are unchanged; the prompt's are under
  `deep_prompt/` and the head's under `classifier/`. Cached decoding works
  with decoder prefixes: they are prepended to the key/value cache at every
  step (the cache itself holds token positions only).

  Attributes:
    prefix_length: p.
    decoder_prompt: also prefix the decoder's self-attention.
    reparameterize: compute prefixes with P-Tuning v2's MLP.
    reparam_hidden_dim: that MLP's hidden width.
    prefix_dropout_rate: dropout on the prefixes in training.
    prefix_init: initializer of the prefixes (or of the MLP's embedding).
    num_classes: > 0 adds a `ClassificationHead` used by `classify`.
    prompt_source: where the trainer takes the deep prompt's initial values
      from after loading the frozen base (`deep_init`: `.npy` files or a
      trained run); None keeps `prefix_init`'s random values.
  """
  prefix_length: int = 100
  decoder_prompt: bool = False
  reparameterize: bool = False
  reparam_hidden_dim: int = 512
  prefix_dropout_rate: float = 0.0
  prefix_init: Initializer = default_prefix_init
  num_classes: int = 0
  prompt_source: Optional[deep_init.DeepPromptSource] = None

  def trainable_patterns(self) -> tuple[str, ...]:
    """The deep prompt, and the head when there is one."""
    return (r"deep_prompt/.*",) + ((r"classifier/.*",)
                                   if self.num_classes > 0 else ())

  def setup(self):
    super().setup()
    self.deep_prompt = DeepPrompt(
        self.config, self.prefix_length, self.decoder_prompt,
        self.reparameterize, self.reparam_hidden_dim, self.prefix_init,
        self.prefix_dropout_rate)
    if self.num_classes > 0:
      self.classifier = classification.ClassificationHead(
          self.num_classes, self.config.dtype)

  def layer_prefixes(self, stack: str,
                     enable_dropout: bool = False) -> Optional[Array]:
    """This model's encoder (and optionally decoder) prefixes."""
    if stack == "encoder":
      return self.deep_prompt.encoder_prefixes(enable_dropout)
    return self.deep_prompt.decoder_prefixes(enable_dropout)

  def encode(self, encoder_input_tokens: Array, *,
             enable_dropout: bool = False,
             prompt_index: Optional[Array] = None) -> tuple[Array, Array]:
    """`Transformer.encode`, also creating the head's parameters at `init`."""
    encoded, mask = super().encode(encoder_input_tokens,
                                   enable_dropout=enable_dropout,
                                   prompt_index=prompt_index)
    if self.num_classes > 0 and self.is_initializing():
      self.classifier(encoded, mask)  # So `init` via __call__ creates it.
    return encoded, mask

  def classify(self, encoder_input_tokens: Array, *,
               enable_dropout: bool = False,
               prompt_index: Optional[Array] = None) -> Array:
    """Class logits `[b, num_classes]` from tokens `[b, l]`."""
    if self.num_classes <= 0:
      raise ValueError("classify needs num_classes > 0.")
    encoded, mask = self.encode(encoder_input_tokens,
                                enable_dropout=enable_dropout,
                                prompt_index=prompt_index)
    return self.classifier(encoded, mask)


def materialize(module: DeepPromptTransformer, params: Any) -> Any:
  """Replaces a reparameterised deep prompt by its output prefixes.

  Returns params for the same module with `reparameterize=False`: each
  `deep_prompt/<stack>` becomes `{'prefix': [L, 2, p, h*d]}` (float32).
  """
  if not module.reparameterize:
    return params
  stacks = ["encoder"] + (["decoder"] if module.decoder_prompt else [])
  new_prompt = {}
  for name in stacks:
    out = module.apply({"params": params},
                       method=lambda m, n=name: getattr(m.deep_prompt, n)())
    new_prompt[name] = {"prefix": jnp.asarray(out, jnp.float32)}
  return {**params, "deep_prompt": new_prompt}
