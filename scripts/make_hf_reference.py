r"""Writes tiny random Hugging Face T5 checkpoints and their reference outputs.

For each of a T5 1.0 (ReLU MLP, tied and scaled logits) and a T5 1.1 (gated
GELU MLP, separate lm_head) configuration this builds a random
`T5ForConditionalGeneration` with PyTorch `transformers`, saves it with
`save_pretrained(..., safe_serialization=True)` to

  tests/testdata/hf_t5_1_0_tiny/   tests/testdata/hf_t5_1_1_tiny/

(config.json, generation_config.json, model.safetensors) and, after
reloading it from that directory, writes `reference.npz` there:

  encoder_input_tokens   [4, 24] int32: ids >= 2, EOS=1 after the last real
                         token, then padding 0 (rows have 24, 17, 9, 20 real
                         tokens).
  encoder_outputs        [4, 24, d_model] float32: final (normed) encoder
                         output, attention_mask = ids > 0. Padded positions
                         differ between implementations (T5X also masks
                         padded queries); compare where tokens > 0.
  decoder_target_tokens  [4, 8] int32: targets with EOS, padded with 0 (rows
                         have 8, 5, 3, 6 real tokens).
  decoder_input_tokens   [4, 8] int32: targets shifted right, start id 0.
  logits                 [4, 8, vocab] float32: teacher-forced logits for
                         decoder_input_tokens (no decoder padding mask;
                         compare where decoder_target_tokens > 0).
  greedy_tokens          [4, 10] int32: `generate(num_beams=1,
                         do_sample=False, max_new_tokens=10)` without the
                         leading decoder start token, padded with 0 (HF also
                         writes 0 after a row's EOS).
  greedy_min_margin      [] float32: smallest gap between the best and the
                         second-best logit over the greedy steps.
  float32_max_error      [] float32: largest difference between the float32
                         PyTorch model and these values (see below).
  seed                   [] int32: torch / numpy seed used.

The outputs are computed with the model in float64 (then stored as float32),
so they are exact up to the final rounding; the float32 PyTorch model must
agree with them within 1e-5 and produce the same greedy tokens, which bounds
how far a correct float32 implementation can be off. The seed is the first
from 0 for which that holds, the greedy margin is >= 1e-3 (rounding cannot
flip a token), and every greedy row has >= 3 distinct ids and no padding id
before EOS.

Sizes are tiny: vocab 128, d_model 32, 4 heads of 4 (so heads*d_kv differs
from d_model and a transposed kernel fails the shape check), d_ff 48, 2
encoder and 3 decoder layers, 8 relative buckets with max distance 16 (inputs
of length 24 reach the log-spaced and the saturated buckets).

Random T5 models tend to greedily repeat one token: the decoder output is
dominated by what cross-attention copies from the encoder. The decoder's
cross-attention output projection is therefore scaled by 0.3 and its MLP
output projection by 6 after the random init, so each step depends on the
previous tokens.

Environment (kept apart from the project's JAX venv, which must not get
torch). Versions this was generated with: torch 2.13.0+cpu,
transformers 5.23.0, safetensors 0.8.0, numpy 2.4.6:

  python3 -m venv .venv-ref
  . .venv-ref/bin/activate
  pip install torch==2.13.0 transformers==5.23.0 safetensors numpy

(pip picks the local CPU wheel torch-2.13.0+cpu.) Then, from the repository
root:

  .venv-ref/bin/python scripts/make_hf_reference.py

Reruns overwrite the two directories and produce identical files.

Note on transformers 5: its T5Config always records tie_word_embeddings=true
and keeps the old meaning (scale the decoder output by d_model**-0.5) in
`scale_decoder_outputs`; a freshly built model then shares lm_head with the
embedding. For T5 1.1 we give lm_head its own random weights and record
tie_word_embeddings=false, so both the 4.x and the 5.x readings of the
config.json say "separate, unscaled lm_head".
"""

import copy
import os
import pathlib
import shutil

import numpy as np
import torch
import transformers

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = REPO_ROOT / "tests" / "testdata"

COMMON = dict(
    vocab_size=128,
    d_model=32,
    d_kv=4,
    num_heads=4,
    d_ff=48,
    num_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.1,  # Off in eval mode; checks that the value maps.
    layer_norm_epsilon=1e-6,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
MODELS = {
    "hf_t5_1_0_tiny": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "hf_t5_1_1_tiny": dict(feed_forward_proj="gated-gelu",
                           tie_word_embeddings=False),
}
CROSS_ATTENTION_OUT_SCALE = 0.3
DECODER_MLP_OUT_SCALE = 6.0
ENCODER_LENGTHS = (24, 17, 9, 20)
TARGET_LENGTHS = (8, 5, 3, 6)
ENCODER_LEN, TARGET_LEN, GREEDY_LEN = 24, 8, 10
MIN_MARGIN = 1e-3
MAX_FLOAT32_ERROR = 1e-5
MIN_DISTINCT = 3
EOS, PAD = 1, 0


def make_tokens(rng: np.random.RandomState, lengths: tuple[int, ...],
                width: int, vocab: int) -> np.ndarray:
  """Returns [len(lengths), width] int32 rows of random ids, EOS, padding."""
  tokens = np.zeros((len(lengths), width), np.int32)
  for row, length in enumerate(lengths):
    tokens[row, :length - 1] = rng.randint(2, vocab, size=length - 1)
    tokens[row, length - 1] = EOS
  return tokens


def shift_right(targets: np.ndarray) -> np.ndarray:
  """[batch, len] targets -> decoder inputs starting with id 0."""
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  return inputs


def build_model(name: str, seed: int
                ) -> transformers.T5ForConditionalGeneration:
  """Returns a random model of configuration `name`."""
  config = transformers.T5Config(**COMMON, **MODELS[name])
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(config)
  with torch.no_grad():
    for block in model.decoder.block:
      block.layer[1].EncDecAttention.o.weight.mul_(CROSS_ATTENTION_OUT_SCALE)
      block.layer[2].DenseReluDense.wo.weight.mul_(DECODER_MLP_OUT_SCALE)
  if not MODELS[name]["tie_word_embeddings"]:
    # transformers 5 ties lm_head to the embedding in a new model; untie.
    head = torch.randn(config.vocab_size, config.d_model) * config.d_model**-0.5
    model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
  return model.eval()


def greedy(model: transformers.T5ForConditionalGeneration,
           input_ids: torch.Tensor, mask: torch.Tensor
           ) -> tuple[np.ndarray, float]:
  """Greedy decoding; returns ([batch, GREEDY_LEN] tokens, min top-2 gap)."""
  out = model.generate(
      input_ids=input_ids, attention_mask=mask, num_beams=1, do_sample=False,
      max_new_tokens=GREEDY_LEN, output_scores=True,
      return_dict_in_generate=True,
      # transformers 5.23 sizes the KV cache by the encoder's layer count, so
      # with more decoder than encoder layers cached decoding fails.
      use_cache=False)
  sequences = out.sequences[:, 1:].numpy().astype(np.int32)
  tokens = np.zeros((input_ids.shape[0], GREEDY_LEN), np.int32)
  tokens[:, :sequences.shape[1]] = sequences
  margin = np.inf
  done = np.zeros(input_ids.shape[0], bool)
  for step, scores in enumerate(out.scores):
    top2 = torch.topk(scores, 2, dim=-1).values.double().numpy()
    gaps = top2[:, 0] - top2[:, 1]
    if (~done).any():
      margin = min(margin, float(gaps[~done].min()))
    done |= tokens[:, step] == EOS
  return tokens, margin


def run(model: transformers.T5ForConditionalGeneration,
        enc_tokens: np.ndarray, dec_inputs: np.ndarray
        ) -> dict[str, np.ndarray | float]:
  """Encoder outputs, teacher-forced logits and greedy tokens of `model`."""
  input_ids = torch.from_numpy(enc_tokens).long()
  mask = (input_ids > 0).long()
  with torch.no_grad():
    encoded = model.get_encoder()(
        input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = model(input_ids=input_ids, attention_mask=mask,
                   decoder_input_ids=torch.from_numpy(dec_inputs).long()
                   ).logits
    tokens, margin = greedy(model, input_ids, mask)
  return dict(encoder_outputs=encoded.double().numpy(),
              logits=logits.double().numpy(), greedy_tokens=tokens,
              margin=margin)


def is_varied(tokens: np.ndarray) -> bool:
  """Whether every greedy row has >= MIN_DISTINCT ids and no PAD before EOS."""
  for row in tokens.tolist():
    real = row[:row.index(EOS) + 1] if EOS in row else row
    if PAD in real or len(set(real)) < MIN_DISTINCT:
      return False
  return True


def write_reference(name: str) -> None:
  """Builds, saves, reloads and runs one model; writes its directory."""
  out_dir = TESTDATA / name
  vocab = COMMON["vocab_size"]
  for seed in range(100):
    model = build_model(name, seed)
    if out_dir.exists():
      shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    model = transformers.T5ForConditionalGeneration.from_pretrained(
        out_dir).eval()
    tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    assert tied == MODELS[name]["tie_word_embeddings"], (name, tied)

    rng = np.random.RandomState(seed)
    enc_tokens = make_tokens(rng, ENCODER_LENGTHS, ENCODER_LEN, vocab)
    targets = make_tokens(rng, TARGET_LENGTHS, TARGET_LEN, vocab)
    dec_inputs = shift_right(targets)
    out32 = run(model, enc_tokens, dec_inputs)
    out64 = run(copy.deepcopy(model).double(), enc_tokens, dec_inputs)
    error = max(
        np.abs(out32["encoder_outputs"] - out64["encoder_outputs"])[
            enc_tokens > 0].max(),
        np.abs(out32["logits"] - out64["logits"])[targets > 0].max())
    tokens, margin = out64["greedy_tokens"], out64["margin"]
    if (error > MAX_FLOAT32_ERROR or margin < MIN_MARGIN or
        not np.array_equal(tokens, out32["greedy_tokens"]) or
        not is_varied(tokens)):
      print(f"{name}: seed {seed}: float32 error {error:.1e}, greedy margin "
            f"{margin:.1e}, tokens {tokens.tolist()}; trying the next seed.")
      continue
    np.savez_compressed(
        out_dir / "reference.npz",
        encoder_input_tokens=enc_tokens,
        encoder_outputs=out64["encoder_outputs"].astype(np.float32),
        decoder_input_tokens=dec_inputs,
        decoder_target_tokens=targets,
        logits=out64["logits"].astype(np.float32),
        greedy_tokens=tokens,
        greedy_min_margin=np.float32(margin),
        float32_max_error=np.float32(error),
        seed=np.int32(seed),
    )
    for path in out_dir.iterdir():
      path.chmod(0o644)  # safetensors writes 0600.
    sizes = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    print(f"{name}: seed {seed}, float32 error {error:.1e}, greedy margin "
          f"{margin:.3g}, files {sizes}\n  greedy tokens: {tokens.tolist()}")
    return
  raise RuntimeError(f"{name}: no seed gave a usable reference.")


def main() -> None:
  torch.use_deterministic_algorithms(True)
  torch.set_num_threads(1)
  transformers.logging.set_verbosity_error()
  print(f"torch {torch.__version__}, transformers {transformers.__version__}")
  for name in MODELS:
    write_reference(name)


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  main()
