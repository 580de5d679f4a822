r"""Our side of `benchmarks/interop_check.py`, run in the project venv.

  .venv/bin/python benchmarks/interop_ours.py sst2 --frozen=CKPT \
      --prompt_run=RUN_DIR --num_examples=N --out=DIR
  .venv/bin/python benchmarks/interop_ours.py logits --checkpoint=HF_DIR \
      --peft_adapter=ADAPTER_DIR --ids=IDS.npz --out=OUT.npz

`sst2`: SST-2 dev as the main job reads it (the taskless `sentence: S` and
the task-name `sst2 sentence: S` inputs, label strings), our token ids, and
for each variant (no prompt, task name, learned prompt) the teacher-forced
logits of the gold label `[n, target, vocab]` and the greedy decode (4
tokens, as the main job's evaluation). Writes `texts.json` and
`<variant>.npz` under --out.

`logits`: a Hugging Face T5 directory plus a PEFT prompt-tuning adapter read
by our readers (`sharded.read_params`, `peft_prompt.read_peft_prompt`), and
our teacher-forced logits for the token ids in --ids (`inputs`, `mask`,
`decoder_inputs`).
"""

import argparse
import json
import os
import pathlib
from typing import Any, Optional

import numpy as np

import jax
import jax.numpy as jnp

from prompt_tuning.analysis import peft_prompt
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import hf_export
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.data import locations
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.models import t5
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import models as prompt_models
from prompt_tuning.recipes import steering
from prompt_tuning.training import data

SHARED = locations.shared_dir()
os.environ.setdefault(locations.GLUE_DIR_ENV, str(SHARED / "data" / "glue"))
os.environ.setdefault(vocab_lib.VOCAB_ENV,
                      str(locations.shared_path(*locations.VOCAB_IN_SHARED)))
INPUT_LENGTH = steering.EVAL_LENGTHS["inputs"]
DECODE_LENGTH = steering.EVAL_LENGTHS["targets"]
BATCH = 128


def _pad(rows: list[list[int]], length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row[:length]
  return out


def _model(config: Any, prompt: Optional[np.ndarray]) -> EncoderDecoderModel:
  if prompt is None:
    return EncoderDecoderModel(t5.Transformer(config))
  return EncoderDecoderModel(prompt_models.PromptTransformer(
      config, prompt_length=prompt.shape[0]))


def _params(base: dict[str, Any], prompt: Optional[np.ndarray]) -> Any:
  params = param_tree.unflatten_params(
      {n: jnp.asarray(v) for n, v in base.items()})
  if prompt is not None:
    params["prompt"] = {"prompt": jnp.asarray(prompt)}
  return params


def _run(model: EncoderDecoderModel, params: Any, inputs: np.ndarray,
         targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(teacher-forced logits [n, t, v], greedy tokens [n, DECODE_LENGTH])."""
  logits_fn = jax.jit(model.logits)
  decode_fn = jax.jit(model.predict_batch,
                      static_argnames=("max_decode_length", "num_decodes"))
  n = inputs.shape[0]
  logits, decoded = [], []
  for start in range(0, n, BATCH):
    enc = inputs[start:start + BATCH]
    tgt = targets[start:start + BATCH]
    rows = enc.shape[0]
    if rows < BATCH:  # One compiled shape.
      enc = np.concatenate([enc, np.zeros((BATCH - rows, enc.shape[1]),
                                          enc.dtype)])
      tgt = np.concatenate([tgt, np.zeros((BATCH - rows, tgt.shape[1]),
                                          tgt.dtype)])
    dec_in = np.concatenate([np.zeros((BATCH, 1), np.int32), tgt[:, :-1]], 1)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
             "decoder_target_tokens": tgt}
    logits.append(np.asarray(logits_fn(params, batch))[:rows])
    tokens, _ = decode_fn(params, {"encoder_input_tokens": enc},
                          max_decode_length=DECODE_LENGTH, num_decodes=1)
    decoded.append(np.asarray(tokens)[:rows])
  return np.concatenate(logits), np.concatenate(decoded)


def sst2(args: argparse.Namespace) -> None:
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  vocab = vocab_lib.get_vocabulary()
  examples = {}
  for key, task in (("taskless", steering.TASKLESS),
                    ("task_name", steering.PREFIXED)):
    dataset = data.get_task(task).get_dataset(
        sequence_length=None, split="validation", shuffle=False)
    if args.num_examples:
      dataset = dataset.take(args.num_examples)
    examples[key] = list(dataset.as_numpy_iterator())
  texts = {key: [x["inputs_pretokenized"].decode() for x in rows]
           for key, rows in examples.items()}
  texts["targets"] = [x["targets_pretokenized"].decode()
                      for x in examples["taskless"]]
  # The task's token ids end with EOS already.
  texts["ids"] = {key: [[int(t) for t in x["inputs"]] for x in rows]
                  for key, rows in examples.items()}
  texts["target_ids"] = [[int(t) for t in x["targets"]]
                         for x in examples["taskless"]]
  (out / "texts.json").write_text(json.dumps(texts))
  base = param_tree.flatten_params(sharded.read_params(args.frozen))
  config = hf_export.infer_t5_config(base)
  prompt = prompt_io.export_prompt(args.prompt_run, None,
                                   prompt_io.SOFT_PROMPT)[0]
  target_len = max(len(t) for t in texts["target_ids"])
  targets = _pad(texts["target_ids"], target_len)
  for variant, key, variant_prompt in (("no_prompt", "taskless", None),
                                       ("task_name", "task_name", None),
                                       ("prompt", "taskless", prompt)):
    inputs = _pad(texts["ids"][key], INPUT_LENGTH)
    logits, tokens = _run(_model(config, variant_prompt),
                          _params(base, variant_prompt), inputs, targets)
    predictions = []
    for row in tokens.tolist():
      row = row[:row.index(vocab.eos_id)] if vocab.eos_id in row else row
      predictions.append(vocab.decode(row))
    np.savez(out / f"{variant}.npz", logits=logits, tokens=tokens,
             predictions=np.array(predictions))
    print(f"{variant}: {len(predictions)} examples", flush=True)


def logits(args: argparse.Namespace) -> None:
  base = param_tree.flatten_params(sharded.read_params(args.checkpoint))
  with sharded.open_checkpoint(args.checkpoint) as record:
    config = record.config
  prompt = peft_prompt.read_peft_prompt(args.peft_adapter, config.emb_dim)
  ids = np.load(args.ids)
  batch = {"encoder_input_tokens": ids["inputs"].astype(np.int32),
           "decoder_input_tokens": ids["decoder_inputs"].astype(np.int32),
           "decoder_target_tokens": ids["targets"].astype(np.int32)}
  model = _model(config, prompt)
  result = np.asarray(jax.jit(model.logits)(_params(base, prompt), batch))
  np.savez(args.out, logits=result, prompt=prompt)
  print(f"logits {list(result.shape)} with a {list(prompt.shape)} prompt")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  one = sub.add_parser("sst2")
  one.add_argument("--frozen", required=True)
  one.add_argument("--prompt_run", required=True)
  one.add_argument("--num_examples", type=int, default=0)
  one.add_argument("--out", required=True)
  two = sub.add_parser("logits")
  two.add_argument("--checkpoint", required=True)
  two.add_argument("--peft_adapter", required=True)
  two.add_argument("--ids", required=True)
  two.add_argument("--out", required=True)
  args = parser.parse_args()
  (sst2 if args.command == "sst2" else logits)(args)


if __name__ == "__main__":
  main()
