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

from typing import Sequence

from absl import flags
import numpy as np

from prompt_tuning import cli

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
from prompt_tuning.analysis import neighbors
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import sharded
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import vocab as vocab_lib


def _flags() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("prompt", None, "A .npy prompt or a run's MODEL_DIR.",
                      **define)
  flags.mark_flag_as_required("prompt", **define)
  flags.DEFINE_integer("step", None, "The run's checkpoint step (default the "
                       "latest).", lower_bound=0, **define)
  flags.DEFINE_integer("prompt_index", None, "Which prompt of a bank.",
                       lower_bound=0, **define)
  flags.DEFINE_string("checkpoint", None, "Pretrained model whose embedding "
                      "table to search (T5X or Hugging Face).", **define)
  flags.DEFINE_string("embedding", None, "A .npy [vocab, embed] table "
                      "instead of --checkpoint.", **define)
  flags.mark_flags_as_mutual_exclusive(["checkpoint", "embedding"],
                                       required=True, **define)
  flags.DEFINE_string("vocab", None, "spiece.model; default "
                      "$PROMPT_TUNING_VOCAB.", **define)
  flags.DEFINE_string("task", None, "Task whose class labels to mark.",
                      **define)
  flags.DEFINE_list("labels", None, "Label strings to mark, instead of "
                    "--task.", **define)
  flags.mark_flags_as_mutual_exclusive(["task", "labels"], **define)
  flags.DEFINE_integer("k", 5, "Neighbours per position.", lower_bound=1,
                       **define)
  flags.DEFINE_string("markdown", None, "Write the table here too.", **define)
  flags.DEFINE_string("json", None, "Write the report as JSON here.",
                      **define)
  cli.define_verbose_flag(flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = cli.parse_flags(argv, _flags(), __doc__)

  prompt = prompt_io.resolve_prompt(args.prompt, args.step)
  if prompt.ndim == 3:
    if args.prompt_index is None:
      raise cli.UsageError(f"{args.prompt} is a bank of {prompt.shape[0]} "
                       "prompts; pick one with --prompt_index.")
    prompt = prompt[args.prompt_index]
  if args.checkpoint:
    with sharded.open_checkpoint(args.checkpoint) as record:
      embedding = record.read("token_embedder/embedding")  # To the host.
  else:
    embedding = np.load(args.embedding)
  prompt_io.check_portable(prompt, np.shape(embedding)[-1],
                           source=args.prompt)
  vocabulary = vocab_lib.get_vocabulary(args.vocab)
  task_labels = data_labels.label_strings(args.task) if args.task else None
  if args.task and not task_labels:
    raise cli.UsageError(f"--task {args.task} has no fixed label strings; give "
                     "--labels=a,b instead.")
  label_strings = (task_labels[args.task] if args.task else
                   tuple(args.labels) if args.labels else ())
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
  cli.run(main)
