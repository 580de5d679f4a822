r"""Decode or rank-classify text with a T5 loaded from a checkpoint.

  python -m prompt_tuning.predict \
    --gin_file=models/t5_1_1_base.gin \
    --gin.INITIAL_CHECKPOINT_PATH="'/path/to/t5_1_1_lm100k_base/checkpoint_1100000'" \
    --vocab=/path/to/spiece.model \
    --input="hypothesis: The cat sat. premise: A cat sat on the mat." \
    --choices=entailment,not_entailment

For every `--input` it prints the greedy (or `--num_decodes` beam) decode
and, with `--choices`, each choice's log-likelihood as a target and the
highest-scoring one (rank classification, as the evaluator scores).
`INITIAL_CHECKPOINT_PATH` may be a T5X checkpoint directory (or a model
directory holding `checkpoint_N` folders) or a Hugging Face T5 directory.
"""

import os
from typing import Any, Optional, Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import errors

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import gin_utils
from prompt_tuning.checkpoints import pretrained
from prompt_tuning.checkpoints import sharded
from prompt_tuning.data import rank_classification
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.models.model import EncoderDecoderModel


def _encode(vocab: Any, texts: Sequence[str], length: Optional[int],
            what: str) -> np.ndarray:
  """Tokenises with EOS appended, right-padded with 0 to `[n, length]`."""
  ids = [list(vocab.encode(t)) + [vocab.eos_id] for t in texts]
  longest = max(len(x) for x in ids)
  length = longest if length is None else length
  for text, x in zip(texts, ids):
    if len(x) > length:
      raise errors.ConfigError(
          f"{what} {text[:60]!r}... is {len(x)} tokens (with EOS), longer "
          f"than the feature length {length}; raise --{what}_length or "
          "shorten the text.")
  out = np.zeros((len(ids), length), np.int32)
  for i, x in enumerate(ids):
    out[i, :len(x)] = x
  return out


def predict(model: EncoderDecoderModel, params: Any, vocab: Any,
            inputs: Sequence[str], choices: Sequence[str] = (),
            max_decode_length: int = 32, num_decodes: int = 1,
            input_length: Optional[int] = None) -> list[dict[str, Any]]:
  """Decodes `inputs` and scores `choices` as targets for each of them.

  Returns:
    one dict per input: `input`, `prediction`, and with choices `scores`
    (choice -> log-likelihood) and `choice` (the best).
  """
  encoder_tokens = _encode(vocab, inputs, input_length, "input")
  decode = jax.jit(model.predict_batch,
                   static_argnames=("max_decode_length", "num_decodes"))
  tokens, _ = decode(params, {"encoder_input_tokens": encoder_tokens},
                     max_decode_length=max_decode_length,
                     num_decodes=num_decodes)
  results = []
  for text, row in zip(inputs, np.asarray(tokens)):
    row = row.tolist()
    row = row[:row.index(vocab.eos_id)] if vocab.eos_id in row else row
    results.append({"input": text, "prediction": vocab.decode(row)})
  if choices:
    targets = _encode(vocab, choices, None, "target")  # [c, t]
    n, c = len(inputs), len(choices)
    # Each input is encoded once and every choice scored against it.
    decoder_targets = np.broadcast_to(targets, (n,) + targets.shape)
    batch = {
        "encoder_input_tokens": encoder_tokens,
        "decoder_input_tokens": np.concatenate(
            [np.zeros((n, c, 1), np.int32), decoder_targets[..., :-1]],
            axis=-1),
        "decoder_target_tokens": decoder_targets,
    }
    scores = np.asarray(jax.jit(model.score_choices)(params, batch))  # [n, c]
    for result, row in zip(results, scores):
      result["scores"] = {ch: float(s) for ch, s in zip(choices, row)}
      result["choice"] = choices[int(rank_classification.choose(row))]
  return results


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  flags.DEFINE_string("vocab", None, "SentencePiece model (spiece.model) or a "
                      "directory holding one; default PROMPT_TUNING_VOCAB, "
                      "then the public T5 vocabulary.", flag_values=flag_values)
  flags.DEFINE_multi_string("input", [], "Input text; repeat for a batch.",
                            flag_values=flag_values)
  flags.DEFINE_list("choices", [], "Comma-separated targets to rank for each "
                    "input.", flag_values=flag_values)
  flags.DEFINE_integer("max_decode_length", 32, "Tokens to decode.",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("num_decodes", 1, "1: greedy; more: beam search with "
                       "that many beams.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("input_length", None, "Pad inputs to this length "
                       "(default: longest).", lower_bound=1,
                       flag_values=flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = gin_utils.parse_gin_command(
      argv, __doc__, _flags(),
      read_directly=("MODEL", "INITIAL_CHECKPOINT_PATH"))
  if not args.input:
    raise cli.UsageError("Give at least one --input=TEXT.")
  checkpoint_path = gin_utils.query_macro("INITIAL_CHECKPOINT_PATH")
  if not checkpoint_path:
    raise cli.UsageError("Set --gin.INITIAL_CHECKPOINT_PATH=\"'DIR'\" to a "
                         "T5X or Hugging Face checkpoint directory.")
  if args.vocab is not None and not os.path.exists(args.vocab):
    raise cli.UsageError(f"--vocab {args.vocab} does not exist; pass the T5 "
                         "spiece.model (or a model directory holding one).")
  model = gin_utils.configured_model()
  pretrained.detect_checkpoint_format(checkpoint_path)  # Fails fast.
  vocab = vocab_lib.get_vocabulary(args.vocab)
  if args.validate_only:
    print("Configuration valid; nothing loaded.")
    return 0
  params = sharded.read_params(checkpoint_path, model.param_shapes())
  params = jax.tree_util.tree_map(jnp.asarray, params)
  choices = list(args.choices)
  for result in predict(model, params, vocab, args.input, choices,
                        args.max_decode_length, args.num_decodes,
                        args.input_length):
    print(f"input:      {result['input']}")
    print(f"prediction: {result['prediction']!r}")
    if choices:
      ranked = sorted(result["scores"].items(), key=lambda kv: -kv[1])
      print("scores:     " + ", ".join(f"{c}={s:.3f}" for c, s in ranked))
      print(f"choice:     {result['choice']}")
  return 0


if __name__ == "__main__":
  cli.run(main)
