"""`EncoderDecoderModel`: loss, scoring and decoding around a T5 module.

The wrapper holds no state: every method is a pure function of `params` and
a batch of SeqIO-style features

  encoder_input_tokens   [b, l]  int32
  decoder_input_tokens   [b, t]  int32 (targets shifted right, start id 0)
  decoder_target_tokens  [b, t]  int32 (0 = padding)
  decoder_loss_weights   [b, t]  optional, defaults to targets > 0
  label                  [b]     int32 class id (classification objective)

so callers `jax.jit` them with whatever shardings they need.

Two training objectives share the wrapper: `objective='seq2seq'` (the
default) is T5's teacher-forced cross entropy over target tokens;
`objective='classification'` (P-Tuning v2) is the cross entropy of a
classification head's logits (`module.classify(tokens) -> [b, c]`, e.g.
`prompts.deep.DeepPromptTransformer` with `num_classes > 0`) against the
batch's `label`, and `classify_batch` gives the head's argmax class ids.
"""

import dataclasses
import functools
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from prompt_tuning.models import decoding
from prompt_tuning.models import losses
from prompt_tuning.models import t5

Array = jax.Array
Batch = Mapping[str, Array]
Params = Any

SEQ2SEQ = "seq2seq"
CLASSIFICATION = "classification"
OBJECTIVES = (SEQ2SEQ, CLASSIFICATION)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderModel:
  """A T5-style `Transformer` with its training and inference functions.

  Attributes:
    module: a `prompt_tuning.models.t5.Transformer` (or a prompt variant).
    z_loss: coefficient of the z-loss added to the cross entropy.
    eos_id: end-of-sequence id.
    decoder_start_id: first decoder input id.
    objective: what `loss_fn` trains, `'seq2seq'` or `'classification'`
      (see the module doc).
  """
  module: nn.Module
  z_loss: float = 1e-4
  eos_id: int = 1
  decoder_start_id: int = 0
  objective: str = SEQ2SEQ

  @property
  def trainable_patterns(self) -> tuple[str, ...]:
    """What the module declares it trains (`prompt/prompt`, `deep_prompt/.*`,
    `classifier/.*`, ...); empty for a plain T5."""
    declared = getattr(self.module, "trainable_patterns", None)
    return tuple(declared()) if declared is not None else ()

  @property
  def is_classifier(self) -> bool:
    """Whether this model trains and predicts through a classification head."""
    return self.objective == CLASSIFICATION

  def init(self, rng: Array, encoder_length: int, decoder_length: int,
           batch_size: int = 1) -> Any:
    """Initial variables, parameters boxed with their logical axis names."""
    enc = jnp.ones((batch_size, encoder_length), jnp.int32)
    dec = jnp.ones((batch_size, decoder_length), jnp.int32)
    return self.module.init(rng, enc, dec, dec, enable_dropout=False)

  def init_shapes(self, encoder_length: int = 1,
                  decoder_length: int = 1) -> Any:
    """`init`'s variables as boxed `ShapeDtypeStruct`s, allocating nothing."""
    return jax.eval_shape(
        functools.partial(self.init, encoder_length=encoder_length,
                          decoder_length=decoder_length),
        jax.random.PRNGKey(0))

  def param_shapes(self, encoder_length: int = 1,
                   decoder_length: int = 1) -> Any:
    """Unboxed parameter `ShapeDtypeStruct`s, as loaders check against."""
    return nn.unbox(self.init_shapes(encoder_length, decoder_length))["params"]

  def logits(self, params: Params, batch: Batch, *,
             dropout_rng: Optional[Array] = None) -> Array:
    """Teacher-forced logits `[b, t, v]`; dropout on iff `dropout_rng`.

    An optional `batch['prompt_index']` `[b]` (int) selects each example's
    prompt in a prompt model with a bank of prompts.
    """
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return self.module.apply(
        {"params": params}, batch["encoder_input_tokens"],
        batch["decoder_input_tokens"], batch["decoder_target_tokens"],
        enable_dropout=dropout_rng is not None, rngs=rngs,
        prompt_index=batch.get("prompt_index"))

  def class_logits(self, params: Params, batch: Batch, *,
                   dropout_rng: Optional[Array] = None) -> Array:
    """The classification head's logits `[b, c]` from `encoder_input_tokens`."""
    if not hasattr(self.module, "classify"):
      raise ValueError(
          f"objective='classification' needs a module with a classification "
          f"head (a `classify` method), got {type(self.module).__name__}; "
          "include prompts/deep_prompt.gin and set NUM_CLASSES.")
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return self.module.apply(
        {"params": params}, batch["encoder_input_tokens"],
        enable_dropout=dropout_rng is not None, rngs=rngs,
        prompt_index=batch.get("prompt_index"), method="classify")

  def classify_batch(self, params: Params, batch: Batch) -> Array:
    """The head's predicted class ids `[b]` (int32), without dropout."""
    return jnp.argmax(self.class_logits(params, batch), axis=-1).astype(
        jnp.int32)

  def classification_loss_fn(self, params: Params, batch: Batch,
                             dropout_rng: Optional[Array] = None
                             ) -> tuple[Array, dict[str, Array]]:
    """Class cross entropy summed over the labelled examples (`label >= 0`).

    The metrics have `loss_fn`'s keys, so the trainer logs them alike: one
    prediction per example, so `num_tokens` counts labelled examples and
    `accuracy_correct` correct classes; `z_loss` is 0.
    """
    logits = self.class_logits(params, batch, dropout_rng=dropout_rng)
    labels = batch["label"].astype(jnp.int32)
    weights = (labels >= 0).astype(jnp.float32)
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.maximum(labels, 0))
    loss = jnp.sum(per_example * weights)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
    metrics = {"loss": loss, "z_loss": jnp.zeros((), jnp.float32),
               "num_tokens": jnp.sum(weights), "accuracy_correct": correct}
    return loss, metrics

  def loss_fn(self, params: Params, batch: Batch,
              dropout_rng: Optional[Array] = None
              ) -> tuple[Array, dict[str, Array]]:
    """The training loss of `objective`.

    `'seq2seq'`: cross entropy (+ z-loss) summed over target tokens, as T5X
    trains; `'classification'`: `classification_loss_fn`.

    Returns:
      (loss, metrics) with metrics `loss`, `z_loss`, `num_tokens`,
      `accuracy_correct` (all summed over the batch).
    """
    if self.objective == CLASSIFICATION:
      return self.classification_loss_fn(params, batch, dropout_rng)
    if self.objective != SEQ2SEQ:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got "
                       f"{self.objective!r}.")
    logits = self.logits(params, batch, dropout_rng=dropout_rng)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    weights = (targets > 0) if weights is None else weights
    weights = weights.astype(jnp.float32)
    token_loss, token_z = losses.cross_entropy_with_z_loss(
        logits, targets, self.z_loss)
    loss = jnp.sum(token_loss * weights)
    correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    metrics = {
        "loss": loss,
        "z_loss": jnp.sum(token_z * weights),
        "num_tokens": jnp.sum(weights),
        "accuracy_correct": correct,
    }
    return loss, metrics

  def score_batch(self, params: Params, batch: Batch) -> Array:
    """Log-likelihood of each example's targets, `[b]` (rank classification)."""
    return losses.sequence_log_likelihood(
        self.logits(params, batch), batch["decoder_target_tokens"])

  def score_choices(self, params: Params, batch: Batch) -> Array:
    """Log-likelihood of each example's candidate targets, `[b, c]`, with
    one encoder pass per example (rank classification).

    The same scores as `score_batch` on the `b * c` rows that repeat each
    example's inputs once per candidate, up to float rounding: the encoder
    output `[b, l', e]` (prompt included) and each decoder layer's
    cross-attention keys and values `[b, h, l', d]` are computed once per
    example and shared by its `c` decoder rows.

    Args:
      params: model parameters.
      batch: `encoder_input_tokens` `[b, l]`; `decoder_input_tokens` and
        `decoder_target_tokens` `[b, c, t]` (candidate j of example i at
        `[i, j]`; an all-zero candidate scores 0); optional `prompt_index`
        `[b]`.
    """
    targets = batch["decoder_target_tokens"]
    b, c, t = targets.shape
    encoded, encoder_mask = self.module.apply(
        {"params": params}, batch["encoder_input_tokens"],
        prompt_index=batch.get("prompt_index"), method="encode")
    cross = t5.cross_attention_key_values(self.module.config, params,
                                          encoded)
    rows = targets.reshape(b * c, t)
    # The decoder reads `encoded` only through `cross` (each example's keys
    # and values shared by its c consecutive rows); the mask is per row.
    logits = self.module.apply(
        {"params": params}, encoded, jnp.repeat(encoder_mask, c, axis=0),
        batch["decoder_input_tokens"].reshape(b * c, t), rows,
        cross_key_values=cross, method="decode")
    return losses.sequence_log_likelihood(logits, rows).reshape(b, c)

  def predict_batch(self,
                    params: Params,
                    batch: Batch,
                    *,
                    num_decodes: int = 1,
                    alpha: float = 0.6,
                    max_decode_length: Optional[int] = None,
                    return_all_decodes: bool = False
                    ) -> tuple[Array, Array]:
    """Decodes `batch['encoder_input_tokens']`.

    Greedy when `num_decodes == 1`, beam search with `num_decodes` beams
    otherwise.

    Args:
      params: model parameters.
      batch: needs `encoder_input_tokens` `[b, l]`; `decoder_input_tokens`
        `[b, t]` sets the decode length unless `max_decode_length` is given;
        optional `prompt_index` `[b]` picks each example's prompt.
      num_decodes: beams.
      alpha: brevity-penalty exponent for beam search.
      max_decode_length: L.
      return_all_decodes: return every beam `[b, k, L]` instead of the best.

    Returns:
      (tokens `[b, L]` (or `[b, k, L]`), scores `[b]` (or `[b, k]`)).
    """
    inputs = batch["encoder_input_tokens"]
    if max_decode_length is None:
      if "decoder_input_tokens" not in batch:
        raise ValueError("predict_batch needs max_decode_length or a "
                         "'decoder_input_tokens' feature to size decoding.")
      max_decode_length = batch["decoder_input_tokens"].shape[1]
    batch_size = inputs.shape[0]
    rows = batch_size * num_decodes

    # The prompt is consumed by the encoder. The cross-attention keys and
    # values of its output are computed once here, not at every step; beams
    # share their example's (only the mask is repeated per beam).
    encoded, encoder_mask = self.module.apply(
        {"params": params}, inputs, prompt_index=batch.get("prompt_index"),
        method="encode")
    cross = t5.cross_attention_key_values(self.module.config, params,
                                          encoded)
    if num_decodes > 1:
      encoder_mask = jnp.repeat(encoder_mask, num_decodes, axis=0)

    def decode(tokens, variables):
      return self.module.apply(
          variables, encoded, encoder_mask, tokens, decode=True,
          max_decode_length=max_decode_length, cross_key_values=cross,
          method="decode", mutable=["cache"])

    # Shape the self-attention cache by tracing decode mode on the full
    # length.
    dummy = jnp.ones((rows, max_decode_length), jnp.int32)
    cache_shapes = jax.eval_shape(
        lambda: decode(dummy, {"params": params})[1]["cache"])
    cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                   cache_shapes)

    def tokens_to_logits(tokens, cache):
      logits, new_vars = decode(tokens, {"params": params, "cache": cache})
      return logits[:, -1, :], new_vars["cache"]

    if num_decodes == 1:
      tokens, scores = decoding.greedy_search(
          tokens_to_logits, cache, batch_size, max_decode_length, self.eos_id,
          self.decoder_start_id)
      if return_all_decodes:
        return tokens[:, None], scores[:, None]
      return tokens, scores
    tokens, scores = decoding.beam_search(
        tokens_to_logits, cache, batch_size, num_decodes, max_decode_length,
        alpha, self.eos_id, self.decoder_start_id)
    if return_all_decodes:
      return tokens, scores
    return tokens[:, 0], scores[:, 0]
