"""Length bucketing: each batch cut to the smallest bucket length that holds it.

SeqIO pads every example to `TASK_FEATURE_LENGTHS` (T5X's fixed shapes). With
the paper's 512 input tokens most of an RTE or WiC batch is padding, which
the encoder still pays for. With buckets, a batch's encoder (and, when
training or scoring, decoder) features are cut after the longest example's
last token, rounded up to the next bucket length:

  encoder_input_tokens   [b, 512] -> [b, L_in]   (L_in a bucket >= longest)
  decoder_*              [b, 8]   -> [b, L_out]

Only trailing padding is removed, which the model masks out (attention
masks, loss weights), so an example's loss, scores and decoded tokens do not
depend on the bucket it lands in (`tests/test_length_buckets.py`); the
batches keep their order, so a run sees the same data. `jax.jit` compiles
once per distinct shape, i.e. at most once per bucket.

Decoding cuts only the encoder side: the decode length stays the targets
feature length (a prediction may be longer than its reference).

A bucket spec (gin's `LENGTH_BUCKETS`) is one of
  None                 off: fixed shapes, as T5X;
  an int N             multiples of N up to each feature length, which is
                       (DEFAULT_SPEC: 64)
                       always the last bucket (N = 64 with lengths 512 / 8:
                       inputs 64, 128, ..., 512; targets 8);
  a dict               `{'inputs': (128, 256, 512), 'targets': (8,)}`; each
                       feature length is added as the last bucket.
"""

import collections
import dataclasses
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from prompt_tuning import errors

Batch = Mapping[str, np.ndarray]
Spec = Union[None, int, Mapping[str, Sequence[int]]]

# The spec training, evaluation, scoring and inference use unless told
# otherwise (gin's LENGTH_BUCKETS defaults to it): each batch cut to the next
# multiple of 64 that holds its longest example. None restores T5X's fixed
# shapes.
DEFAULT_SPEC: Spec = 64

FEATURES = ("inputs", "targets")
ENCODER_FEATURES = ("encoder_input_tokens",)
DECODER_FEATURES = ("decoder_input_tokens", "decoder_target_tokens",
                    "decoder_loss_weights")


def _fail(message: str):
  raise errors.ConfigError(message)


def _lengths_from_step(step: int, feature_length: int) -> tuple[int, ...]:
  multiples = range(step, feature_length, step)
  return tuple(multiples) + (feature_length,)


def _check_lengths(what: str, values: Any, feature_length: int
                   ) -> tuple[int, ...]:
  if isinstance(values, numbers.Integral):
    values = (values,)
  if not isinstance(values, Sequence) or isinstance(values, str) or not all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
      for v in values):
    _fail(f"{what} must be a list of positive ints, got {values!r}; e.g. "
          "--gin.LENGTH_BUCKETS=\"{'inputs': (128, 256, 512), "
          "'targets': (8,)}\".")
  too_long = [v for v in values if v > feature_length]
  if too_long:
    _fail(f"{what} has lengths {too_long} beyond the feature length "
          f"{feature_length}; batches are never padded past "
          "TASK_FEATURE_LENGTHS: drop them or raise the feature length.")
  return tuple(sorted(set(int(v) for v in values) | {feature_length}))


@dataclasses.dataclass(frozen=True)
class LengthBuckets:
  """The allowed encoder and decoder lengths, each ascending.

  Attributes:
    inputs: encoder lengths; the last is the inputs feature length.
    targets: decoder lengths; the last is the targets feature length.
  """
  inputs: tuple[int, ...]
  targets: tuple[int, ...]

  @classmethod
  def from_spec(cls, spec: Spec, feature_lengths: Mapping[str, int],
                what: str = "LENGTH_BUCKETS") -> Optional["LengthBuckets"]:
    """The buckets of a spec (see the module doc); None when off.

    Raises:
      errors.ConfigError: naming `what` and the fix.
    """
    if spec is None:
      return None
    if isinstance(spec, bool) or not isinstance(spec, (numbers.Integral,
                                                       Mapping)):
      _fail(f"{what} must be None (off), an int (buckets at its multiples, "
            f"e.g. --gin.{what}=64) or a dict of lengths per feature, got "
            f"{spec!r} ({type(spec).__name__}).")
    if isinstance(spec, numbers.Integral):
      if spec <= 0:
        _fail(f"{what} must be positive, got {spec}; e.g. --gin.{what}=64, "
              f"or None for fixed shapes.")
      return cls(*(_lengths_from_step(int(spec), feature_lengths[f])
                   for f in FEATURES))
    unknown = sorted(set(map(str, spec)) - set(FEATURES))
    if unknown:
      _fail(f"{what} has unknown features {unknown}; its keys are "
            f"{list(FEATURES)} (a missing one keeps its fixed length).")
    return cls(*(
        _check_lengths(f"{what}[{f!r}]", spec.get(f, ()), feature_lengths[f])
        for f in FEATURES))

  def fit(self, needed: int, feature: str) -> int:
    """The smallest bucket of `feature` ('inputs'/'targets') >= `needed`."""
    lengths = self.inputs if feature == "inputs" else self.targets
    for length in lengths:
      if length >= needed:
        return length
    raise ValueError(f"A batch needs {needed} {feature} positions, more than "
                     f"the feature length {lengths[-1]}.")


def extent(tokens: np.ndarray) -> int:
  """Positions up to and including the last non-padding token of any row
  of `tokens` `[b, l]` (0 for an all-padding batch)."""
  nonzero = np.asarray(tokens) != 0
  if not nonzero.any():
    return 0
  return int(nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=1).min())


def needed_lengths(batch: Batch) -> tuple[int, int]:
  """(encoder, decoder) positions a batch's real tokens occupy."""
  decoder = 0
  for name in ("decoder_target_tokens", "decoder_loss_weights"):
    if name in batch:
      decoder = max(decoder, extent(batch[name]))
  return extent(batch["encoder_input_tokens"]), decoder


def cut(batch: Batch, encoder_length: int,
        decoder_length: Optional[int]) -> dict[str, np.ndarray]:
  """`batch` with its encoder (and, unless `decoder_length` is None, decoder)
  features cut to those lengths; other features are kept as they are."""
  out = dict(batch)
  for name in ENCODER_FEATURES:
    if name in out:
      out[name] = out[name][:, :encoder_length]
  if decoder_length is not None:
    for name in DECODER_FEATURES:
      if name in out:
        out[name] = out[name][:, :decoder_length]
  return out


class BucketLog:
  """Counts the shapes batches were cut to and the padding they kept.

  `padding_share` is the share of encoder + decoder positions (rows x
  length, as fed) that hold padding; `fixed_padding_share` what it would
  have been at the full feature lengths.
  """

  def __init__(self):
    self.batches = collections.Counter()  # (enc, dec) -> batches.
    self.real_tokens = 0
    self.fed_tokens = 0
    self.fixed_tokens = 0

  def add(self, full: Batch, fed: Batch) -> None:
    enc, dec = "encoder_input_tokens", "decoder_target_tokens"
    shape = (fed[enc].shape[1], fed[dec].shape[1] if dec in fed else 0)
    self.batches[shape] += 1
    for name in (enc, dec):
      if name in full:
        self.real_tokens += int(np.count_nonzero(full[name]))
        self.fixed_tokens += full[name].size
        self.fed_tokens += fed[name].size

  @property
  def padding_share(self) -> float:
    return 1.0 - self.real_tokens / max(self.fed_tokens, 1)

  @property
  def fixed_padding_share(self) -> float:
    return 1.0 - self.real_tokens / max(self.fixed_tokens, 1)

  def summary(self, what: str) -> str:
    """One line: batches per (inputs, targets) shape and the padding."""
    shapes = ", ".join(f"{e}x{d}: {n}" for (e, d), n in
                       sorted(self.batches.items()))
    return (f"{what}: batches per inputs x targets length {{{shapes}}}; "
            f"padding {100 * self.padding_share:.1f}% of the positions fed "
            f"(at the full feature lengths: "
            f"{100 * self.fixed_padding_share:.1f}%).")


def check_spec(spec: Spec, feature_lengths: Mapping[str, int],
               what: str = "LENGTH_BUCKETS") -> Spec:
  """Raises `errors.ConfigError` unless `spec` is a valid bucket spec for
  `feature_lengths`; returns it (checked before a run loads anything)."""
  LengthBuckets.from_spec(spec, feature_lengths, what)
  return spec


class Bucketer:
  """Cuts batches to bucket lengths and logs them; only logs when off.

  The buckets are resolved against each batch's own widths (the lengths
  SeqIO padded it to), so one `Bucketer` serves datasets of any lengths;
  bucket lengths beyond a batch's width are ignored.

  Attributes:
    spec: the bucket spec (module doc); None: fixed shapes.
    cut_targets: also cut the decoder features (training, scoring); False
      for decoding, whose length is the targets feature length.
    log: what was fed.
  """

  def __init__(self, spec: Spec, *, cut_targets: bool,
               agree: Optional[Callable[[tuple[int, int]],
                                        tuple[int, int]]] = None):
    """`agree` maps this process's needed `(encoder, decoder)` lengths to
    the ones every process uses (`distributed.max_over_processes`), so that
    all feed one global shape; default: as they are (one process, or every
    process holding the whole batch)."""
    self.spec = spec
    self.cut_targets = cut_targets
    self.log = BucketLog()
    self._agree = agree or (lambda needed: needed)
    self._buckets: dict[tuple[int, int], LengthBuckets] = {}

  def buckets_for(self, widths: tuple[int, int]) -> LengthBuckets:
    """The buckets for batches `widths = (inputs, targets)` wide."""
    if widths not in self._buckets:
      spec = self.spec
      lengths = dict(zip(FEATURES, widths))
      if isinstance(spec, Mapping):
        spec = {f: [v for v in spec.get(f, ()) if v <= lengths[f]]
                for f in FEATURES}
      self._buckets[widths] = LengthBuckets.from_spec(spec, lengths)
    return self._buckets[widths]

  def __call__(self, batch: Batch) -> Batch:
    fed = batch
    if self.spec is not None:
      decoder = batch.get("decoder_target_tokens",
                          batch.get("decoder_input_tokens"))
      widths = (batch["encoder_input_tokens"].shape[1],
                1 if decoder is None else decoder.shape[1])
      buckets = self.buckets_for(widths)
      encoder, needed_decoder = self._agree(needed_lengths(batch))
      fed = cut(batch, buckets.fit(max(encoder, 1), "inputs"),
                buckets.fit(max(needed_decoder, 1), "targets")
                if self.cut_targets and decoder is not None else None)
    self.log.add(batch, fed)
    return fed
