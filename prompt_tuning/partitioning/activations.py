"""Activation memory and recompute FLOPs of a T5 training step, from sizes.

An ESTIMATE, per device, of what one step's backward pass keeps from its
forward pass, under every memory lever the trainer has: REMAT_POLICY (what
each rematerialised layer keeps, `models.t5`), NUM_MICROBATCHES (one
microbatch's activations live at a time, `training.steps`), the activation
dtype (ACTIVATION_DTYPE) and the mesh (heads, MLP and vocabulary split over
`model`, the batch over `data`). Calibrated against XLA's own
`memory_analysis()` of the compiled step (benchmarks/plan_calibration.py).

  dims = ActivationDims.from_config(config)
  shape = StepShape(batch_size=32, inputs_length=512, targets_length=8,
                    prompt_length=100)
  per_device, whole = activation_bytes(dims, shape, {"data": 4, "model": 8},
                                       "bfloat16", "full", 2)
"""

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from prompt_tuning.models import config as config_lib
from prompt_tuning.partitioning.rules import DATA_AXIS, MODEL_AXIS

DTypeLike = Any

# REMAT_POLICIES of `models.config`, in the order of the memory they keep
# (most first), each with what a layer keeps for the backward pass.
POLICY_KEEPS = {
    "none": "everything the layer's backward reads",
    "dots_all": "its input, every matrix-product output (attention logits "
                "and mixes included)",
    "dots": "its input and the matrix-product outputs without batch "
            "dimensions (q, k, v, attention out, MLP projections)",
    "full": "its input only",
}
assert set(POLICY_KEEPS) == set(config_lib.REMAT_POLICIES)

# XLA's CPU compiler drops the optimisation barriers that keep a
# rematerialised layer's recomputation in the backward pass before it
# schedules (`cse_barrier_expander`), and then schedules for parallelism:
# it hoists recomputations into the forward pass and keeps almost what
# 'none' keeps. GPU and TPU compilers keep the barriers and schedule for
# memory. The estimate is calibrated against CPU compilations with these
# options (`compiled = lowered.compile(compiler_options=...)`), which do
# the same.
XLA_CPU_MEMORY_SCHEDULING = {
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "xla_disable_hlo_passes": "cse_barrier_expander"}



def train_compiler_options(remat_policy: str, platform: str
                           ) -> Optional[dict[str, str]]:
  """XLA options for compiling a train step: on CPU with a REMAT_POLICY,
  XLA_CPU_MEMORY_SCHEDULING (without them the policy saves almost nothing
  there: T5 1.1-small, batch 8, inputs 256 + prompt 100, 'full': 1.14 GiB
  of temporaries against 0.18 GiB, the same step time); else None."""
  if platform == "cpu" and remat_policy != "none":
    return dict(XLA_CPU_MEMORY_SCHEDULING)
  return None


# The estimate's error against XLA's compiled step: every calibrated cell
# (benchmarks/README.md, "Memory plan") is within this fraction. `plan
# --suggest` keeps it as headroom.
CALIBRATION_ERROR = 0.15

# Score-sized [b, h, q, k] buffers in one layer's backward at work
# (probabilities and their gradient: XLA's compiled step, calibrated).
SCORE_COPIES = 2


@dataclasses.dataclass(frozen=True)
class ActivationDims:
  """The model sizes the estimate needs (T5Config's names)."""
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_encoder_layers: int
  num_decoder_layers: int
  vocab_size: int
  num_mlp_inputs: int = 2  # len(mlp_activations): 2 for gated GELU.
  float32_attention_logits: bool = True

  @classmethod
  def from_config(cls, config: Any) -> "ActivationDims":
    """From a `models.config.T5Config` (or anything with its fields)."""
    return cls(config.emb_dim, config.num_heads, config.head_dim,
               config.mlp_dim, config.num_encoder_layers,
               config.num_decoder_layers, config.vocab_size,
               len(config.mlp_activations), config.float32_attention_logits)


@dataclasses.dataclass(frozen=True)
class StepShape:
  """One training step's token shape: global batch, lengths without the
  prompt, the soft prompt's length and deep-prompt prefix lengths."""
  batch_size: int
  inputs_length: int
  targets_length: int
  prompt_length: int = 0
  prefix_length: int = 0
  decoder_prefix_length: int = 0


def _split(size: int, ways: int) -> int:
  """Per-device size of a dimension split `ways` ways, whole if uneven."""
  return size // ways if size % ways == 0 else size


@dataclasses.dataclass(frozen=True)
class _Sizes:
  """Per-device sizes: b batch rows, E encoder length, T targets, K encoder
  keys, S decoder self-attention keys, d model width, J = H·head_dim,
  H heads, F mlp, V vocabulary, n MLP inputs."""
  b: int
  e: int
  t: int
  k: int
  s: int
  d: int
  j: int
  h: int
  f: int
  v: int
  n: int


def _sizes(dims: ActivationDims, shape: StepShape, b: int, model: int
           ) -> _Sizes:
  h = _split(dims.num_heads, model)
  e = shape.inputs_length + shape.prompt_length
  return _Sizes(b=b, e=e, t=shape.targets_length, k=e + shape.prefix_length,
                s=shape.targets_length + shape.decoder_prefix_length,
                d=dims.emb_dim, j=h * dims.head_dim, h=h,
                f=_split(dims.mlp_dim, model),
                v=_split(dims.vocab_size, model), n=dims.num_mlp_inputs)


def _layer_bytes(z: _Sizes, s: int, a: int) -> dict[str, tuple[int, int]]:
  """Bytes one encoder / decoder layer keeps, `(encoder, decoder)`, under
  each policy, and the working set of one layer's backward ('transient');
  s activation itemsize, a attention-logit itemsize."""
  b, e, t, k, sd = z.b, z.e, z.t, z.k, z.s
  d, j, h, f, n = z.d, z.j, z.h, z.f, z.n
  # No remat: what the backward of a frozen layer reads (the frozen weights
  # get no gradient, so no projection's input): the norms' inputs, q, k, v
  # and the attention output, logits and probabilities, the MLP's input
  # projections.
  enc_none = (s * (2 * b * e * d + 2 * b * e * j + 2 * b * k * j +
                   n * b * e * f) + 2 * a * b * h * e * k)
  dec_none = (s * (3 * b * t * d + 4 * b * t * j + 2 * b * sd * j +
                   2 * b * e * j + n * b * t * f) +
              2 * a * b * h * (t * sd + t * e))
  # The input ('full'); the decoder's encoder output is kept once.
  enc_in, dec_in = s * b * e * d, s * b * t * d
  enc_scores, dec_scores = a * b * h * e * k, a * b * h * (t * sd + t * e)
  # Unbatched matrix products ('dots', as `jax.ad_checkpoint.
  # print_saved_residuals` lists them): q, k, v and the attention's output
  # projection, the MLP's input projections; the decoder's cross-attention
  # q and its k, v of the encoder output.
  enc_dots = enc_in + s * (b * e * d + 3 * b * e * j + n * b * e * f)
  dec_dots = dec_in + s * (2 * b * t * d + 4 * b * t * j + 2 * b * e * j +
                           n * b * t * f)
  # 'dots_all': batched ones too, the attention logits (below).
  # One layer's backward at work: norms, q, k, v, c score-sized buffers,
  # the whole MLP.
  c = SCORE_COPIES
  enc_work = (s * (4 * b * e * d + 2 * b * e * j + 2 * b * k * j +
                   (n + 2) * b * e * f) + c * a * b * h * e * k)
  dec_work = (s * (6 * b * t * d + 4 * b * t * j + 2 * b * sd * j +
                   2 * b * e * j + (n + 2) * b * t * f) +
              c * a * b * h * (t * sd + t * e))
  return {"none": (enc_none, dec_none),
          "full": (enc_in, dec_in),
          "dots": (enc_dots, dec_dots),
          "dots_all": (enc_dots + enc_scores, dec_dots + dec_scores),
          "transient": (enc_work, dec_work)}


def _count(dims: ActivationDims, z: _Sizes, dtype: DTypeLike,
           remat_policy: str) -> int:
  s = np.dtype(dtype).itemsize
  a = 4 if dims.float32_attention_logits else s
  layers = _layer_bytes(z, s, a)
  enc, dec = layers[remat_policy]
  enc_work, dec_work = layers["transient"]
  # The backward runs through the decoder first, while every encoder
  # layer's kept bytes wait; the decoder's are freed before the encoder's
  # backward starts. One layer's backward at work (with remat, the layer
  # being recomputed) on top; once: the embeddings, the final norms and
  # encoder output, the logits and their float32 softmax.
  return (dims.num_encoder_layers * enc +
          max(dims.num_decoder_layers * dec + dec_work, enc_work) +
          s * (2 * z.b * z.e * z.d + 2 * z.b * z.t * z.d) +
          z.b * z.t * z.v * (s + 4))


def check_levers(remat_policy: str, num_microbatches: int) -> None:
  """Raises ValueError naming the setting when a lever is out of range."""
  if remat_policy not in POLICY_KEEPS:
    raise ValueError(f"Unknown REMAT_POLICY {remat_policy!r}; use one of "
                     f"{tuple(POLICY_KEEPS)}.")
  if not isinstance(num_microbatches, int) or num_microbatches < 1:
    raise ValueError(f"NUM_MICROBATCHES must be an integer >= 1, got "
                     f"{num_microbatches!r}.")


def activation_bytes(dims: ActivationDims, shape: StepShape,
                     mesh_shape: Mapping[str, int],
                     activation_dtype: DTypeLike, remat_policy: str,
                     num_microbatches: int) -> tuple[int, int]:
  """An ESTIMATE of the activations one training step keeps for backward.

  Per device, b = batch / data / microbatches rows (whole when uneven),
  E = inputs + prompt, T = targets, K = E + prefix, S = T + decoder prefix,
  d = emb_dim, J = heads·head_dim / model, H = heads / model, F = mlp /
  model, V = vocab / model, n = MLP inputs, s = activation itemsize,
  a = 4 with float32_attention_logits else s, c = SCORE_COPIES. Bytes one
  encoder / decoder layer keeps:

    'none':  s·(2bEd + 2bEJ + 2bKJ + n·bEF) + 2a·bHEK
             / s·(3bTd + 4bTJ + 2bSJ + 2bEJ + n·bTF) + 2a·bH(TS + TE)
    'full':  s·bEd / s·bTd (the layer's input)
    'dots':  the input + s·(bEd + 3bEJ + n·bEF)
             / + s·(2bTd + 4bTJ + 2bEJ + n·bTF)
             (q, k, v, attention output and MLP input projections)
    'dots_all': 'dots' + a·bHEK / + a·bH(TS + TE) (the logits)

  Peak: the encoder layers' kept bytes, plus the larger of (the decoder
  layers' kept bytes and one decoder layer's backward at work) and one
  encoder layer's backward at work (the recomputed layer's activations,
  with remat): s·(4bEd + 2bEJ + 2bKJ + (n+2)·bEF) + c·a·bHEK (decoder
  alike); plus once: s·(2bEd + 2bTd) + bTV·(s + 4) (embeddings, final
  norms, logits and their float32 softmax). Microbatches divide b (one
  microbatch lives at a time); the gradient accumulator (the prompt's) is
  negligible. Not counted: the input batch, allocator padding.

  Calibrated within CALIBRATION_ERROR (benchmarks/README.md, "Memory
  plan") against XLA's CPU compiler keeping remat in the backward and
  scheduling for memory (XLA_CPU_MEMORY_SCHEDULING), as GPU and TPU
  compilers do.

  Returns:
    (bytes per device, bytes of the unsharded step).
  """
  check_levers(remat_policy, num_microbatches)
  data = int(mesh_shape.get(DATA_AXIS, 1))
  model = int(mesh_shape.get(MODEL_AXIS, 1))
  rows = -(-shape.batch_size // data)
  rows = _split(rows, num_microbatches)
  per_device = _count(dims, _sizes(dims, shape, rows, model),
                      activation_dtype, remat_policy)
  whole = _count(dims, _sizes(dims, shape,
                              _split(shape.batch_size, num_microbatches), 1),
                 activation_dtype, remat_policy)
  return per_device, whole


def step_flops(dims: ActivationDims, shape: StepShape,
               mesh_shape: Mapping[str, int], remat_policy: str
               ) -> tuple[int, int]:
  """(FLOPs of one prompt-tuning step, FLOPs the remat policy recomputes),
  per device, counting matrix products only.

  The step is the forward pass and a backward pass of about the same cost
  (input gradients only: the frozen weights get none). 'full' recomputes
  every layer's forward; 'dots' the batched products (attention logits and
  mixes: 4·bEKJ per encoder layer); 'dots_all' and 'none' nothing.
  """
  check_levers(remat_policy, 1)
  data = int(mesh_shape.get(DATA_AXIS, 1))
  z = _sizes(dims, shape, -(-shape.batch_size // data),
             int(mesh_shape.get(MODEL_AXIS, 1)))
  b, e, t, d, j, f, n = z.b, z.e, z.t, z.d, z.j, z.f, z.n
  enc_dots = 2 * b * e * (4 * d * j + (n + 1) * d * f)
  enc_scores = 4 * b * e * z.k * j
  dec_dots = (2 * b * t * (6 * d * j + (n + 1) * d * f) +
              2 * b * e * 2 * d * j)
  dec_scores = 4 * b * t * (z.s + e) * j
  layers = (dims.num_encoder_layers * (enc_dots + enc_scores) +
            dims.num_decoder_layers * (dec_dots + dec_scores))
  forward = layers + 2 * b * t * d * z.v
  recompute = {"none": 0, "dots_all": 0, "full": layers,
               "dots": (dims.num_encoder_layers * enc_scores +
                        dims.num_decoder_layers * dec_scores)}[remat_policy]
  return 2 * forward + recompute, recompute
