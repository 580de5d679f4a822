r"""Nearest vocabulary tokens of each prompt position (paper Section 7).

  python scripts/nearest_neighbors.py \
    --prompt=../shared/fixtures/prompts/t5_1_1_lm100k_base/rte.npy \
    --checkpoint=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
    --vocab=../shared/models/t5_vocab/spiece.model \
    --task=taskless_super_glue_rte_v102 --k=5 \
    --markdown=/tmp/rte_neighbors.md --json=/tmp/rte_neighbors.json

`--prompt` is a `.npy` file or a training run's MODEL_DIR (`--step`); for a
bank pick one prompt with `--prompt_index`. The embedding table comes from a
pretrained checkpoint (`--checkpoint`, T5X or Hugging Face) or a `.npy`
`[vocab, embed]` (`--embedding`). Class labels (`--task` or `--labels`) are
tokenised with the T5 vocabulary; their first pieces are counted among each
position's top-5 neighbours. Prints the markdown table and summary.
"""

import argparse
import sys
from typing import Sequence

import numpy as np

from prompt_tuning.analysis import neighbors
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import pretrained
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.data import checks
from prompt_tuning.data import vocab as vocab_lib


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--prompt_index", type=int, default=None)
  table = parser.add_mutually_exclusive_group(required=True)
  table.add_argument("--checkpoint")
  table.add_argument("--embedding")
  parser.add_argument("--vocab", default=None,
                      help="spiece.model; default $PROMPT_TUNING_VOCAB.")
  labels = parser.add_mutually_exclusive_group()
  labels.add_argument("--task")
  labels.add_argument("--labels", help="comma-separated label strings")
  parser.add_argument("--k", type=int, default=5)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)

  prompt = prompt_io.resolve_prompt(args.prompt, args.step)
  if prompt.ndim == 3:
    if args.prompt_index is None:
      raise SystemExit(f"{args.prompt} is a bank of {prompt.shape[0]} "
                       "prompts; pick one with --prompt_index.")
    prompt = prompt[args.prompt_index]
  if args.checkpoint:
    embedding = pretrained.load_pretrained_params(
        args.checkpoint)["token_embedder"]["embedding"]
  else:
    embedding = np.load(args.embedding)
  prompt_io.check_portable(prompt, np.shape(embedding)[-1],
                           source=args.prompt)
  vocabulary = vocab_lib.get_vocabulary(args.vocab)
  task_labels = checks.label_strings(args.task) if args.task else None
  if args.task and not task_labels:
    raise SystemExit(f"--task {args.task} has no fixed label strings; give "
                     "--labels=a,b instead.")
  label_strings = (task_labels[args.task] if args.task else
                   tuple(args.labels.split(",")) if args.labels else ())
  report = neighbors.neighbor_report(
      prompt, np.asarray(embedding), args.k,
      namer=neighbors.piece_namer(vocabulary), labels=label_strings,
      label_ids=neighbors.label_token_ids(label_strings, vocabulary))
  text = neighbors.to_markdown(report)
  print(text)
  for path, content in ((args.markdown, text),
                        (args.json, neighbors.to_json(report))):
    if path:
      with open(path, "w") as f:
        f.write(content)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
