"""Prompt length × initialiser sweeps and their plot (paper Figure 3).

`run_ablation` trains one prompt per (initialiser, length) pair with
`trainer.train`, each in its own `out_dir/<initialiser>_len<length>/`
(re-running resumes or skips finished runs), evaluates it at the end and
appends a row to `out_dir/results.csv`:

  initializer, prompt_length, metric, score, step, note

`plot_ablation` draws score against prompt length on a log x axis, one line
per initialiser, as Figure 3(a) does for lengths.

A class-label prompt needs at least one position per label; shorter lengths
are recorded with an empty score and a note, and left out of the plot.
"""

import csv
import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import initializers
from prompt_tuning.training import data
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings
from prompt_tuning.training import trainer

PAPER_LENGTHS = (1, 5, 20, 100, 150)
RANDOM_UNIFORM = "random_uniform"
SAMPLED_VOCAB = "sampled_vocab"
CLASS_LABELS = "class_labels"
INITIALIZERS = (RANDOM_UNIFORM, SAMPLED_VOCAB, CLASS_LABELS)
CSV_FIELDS = ("initializer", "prompt_length", "metric", "score", "step",
              "note")
# Figure 3's legend names.
DISPLAY_NAMES = {RANDOM_UNIFORM: "Random Uniform",
                 SAMPLED_VOCAB: "Sampled Vocab", CLASS_LABELS: "Class Label"}


@dataclasses.dataclass
class AblationRow:
  initializer: str
  prompt_length: int
  metric: str
  score: Optional[float]
  step: Optional[int]
  note: str = ""


def class_label_strings(task_name: str) -> tuple[str, ...]:
  """Label strings of a closed label-set task (SuperGLUE, GLUE, the
  sentence tasks: `data.labels.label_strings`), empty for free-text tasks."""
  data.get_task(task_name)  # Registers the tasks; a clear error if unknown.
  labels = data_labels.label_strings(task_name) or {}
  return tuple(labels.get(task_name, ()))


def make_initializer(name: str, labels: Sequence[str] = (),
                     encode: Any = None) -> initializers.PromptInitializer:
  """The named initialiser with the paper's settings.

  Args:
    name: one of `INITIALIZERS`.
    labels: class label strings (for `class_labels`).
    encode: tokeniser for the labels; default the configured T5 vocabulary.
  """
  if name == RANDOM_UNIFORM:
    return initializers.random_uniform()
  if name == SAMPLED_VOCAB:
    return initializers.sampled_vocab()
  if name == CLASS_LABELS:
    if not labels:
      raise ValueError("The class-label initialiser needs label strings; "
                       "this task has none.")
    return initializers.class_labels(labels, encode or
                                     vocab_lib.get_vocabulary())
  raise ValueError(f"Unknown initialiser {name!r}; choose from "
                   f"{INITIALIZERS}.")


def final_score(model_dir: str, key: Optional[str]) -> tuple[str, float, int]:
  """(metric key, value, step) of the last evaluation a run logged."""
  path = os.path.join(model_dir, run_dir.EVAL_RECORD_FILE)
  lines = run_dir.eval_records(model_dir)
  if not lines:
    raise ValueError(f"{path} holds no evaluation.")
  last = max(lines, key=lambda r: r["step"])
  metrics = {k: v for k, v in last.items() if k != "step"}
  key = key or sorted(metrics)[0]
  if key not in metrics:
    raise KeyError(f"Metric {key!r} not among {sorted(metrics)} in {path}.")
  return key, float(metrics[key]), int(last["step"])


def write_csv(rows: Sequence[AblationRow], path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      record = dataclasses.asdict(row)
      record["score"] = "" if row.score is None else f"{row.score:.4f}"
      record["step"] = "" if row.step is None else row.step
      writer.writerow(record)


def read_csv(path: str) -> list[AblationRow]:
  with open(path, newline="") as f:
    return [AblationRow(
        initializer=r["initializer"], prompt_length=int(r["prompt_length"]),
        metric=r["metric"],
        score=float(r["score"]) if r["score"] else None,
        step=int(r["step"]) if r["step"] else None, note=r["note"])
            for r in csv.DictReader(f)]


def run_ablation(*, model: EncoderDecoderModel, task_name: str,
                 out_dir: str, task_feature_lengths: Mapping[str, int],
                 train_steps: int, batch_size: int,
                 lengths: Sequence[int] = PAPER_LENGTHS,
                 initializer_names: Sequence[str] = INITIALIZERS,
                 initial_checkpoint_path: Optional[str] = None,
                 metric: Optional[str] = None,
                 label_encoder: Any = None,
                 eval_num_examples: Optional[int] = None,
                 train: Callable[..., Any] = trainer.train,
                 **train_kwargs) -> list[AblationRow]:
  """Trains and evaluates every (initialiser, length); writes the CSV.

  Args:
    model: a prompt model; its prompt length and initialiser are replaced.
    task_name: task to train and evaluate on.
    out_dir: runs go to `out_dir/<init>_len<length>`, the table to
      `out_dir/results.csv` (rewritten after every run).
    task_feature_lengths: `{'inputs': ..., 'targets': ...}`.
    train_steps: steps per run.
    batch_size: training batch size.
    lengths: prompt lengths.
    initializer_names: from `INITIALIZERS`.
    initial_checkpoint_path: the frozen pretrained model.
    metric: `task/metric` to report; default the task's first metric.
    label_encoder: tokeniser for class labels (default the T5 vocabulary).
    eval_num_examples: evaluate on the first N validation examples; None:
      all.
    train: the training function (`trainer.train`'s signature).
    **train_kwargs: more `trainer.train` arguments (optimizer, seed,
      checkpoint_cfg, progress, ...).
  """
  train_dataset_cfg = run_settings.DatasetConfig(
      task_name, task_feature_lengths, "train", batch_size)
  eval_cfg = run_settings.EvalConfig(
      dataclasses.replace(train_dataset_cfg, split="validation"),
      num_examples=eval_num_examples)
  labels = class_label_strings(task_name)
  rows: list[AblationRow] = []
  csv_path = os.path.join(out_dir, "results.csv")
  for name in initializer_names:
    for length in lengths:
      if name == CLASS_LABELS and len(labels) > length:
        rows.append(AblationRow(
            name, length, metric or "", None, None,
            f"skipped: {len(labels)} class labels need >= {len(labels)} "
            "positions" if labels else "skipped: task has no class labels"))
        write_csv(rows, csv_path)
        continue
      init = make_initializer(name, labels, label_encoder)
      run_model = dataclasses.replace(model, module=model.module.clone(
          prompt_length=length, prompt_init=init))
      model_dir = os.path.join(out_dir, f"{name}_len{length}")
      train(model=run_model, train_dataset_cfg=train_dataset_cfg,
            train_steps=train_steps, model_dir=model_dir,
            initial_checkpoint_path=initial_checkpoint_path,
            eval_cfg=eval_cfg, **train_kwargs)
      key, score, step = final_score(model_dir, metric)
      rows.append(AblationRow(name, length, key, score, step))
      write_csv(rows, csv_path)
  return rows


def plot_ablation(rows: Sequence[AblationRow], path: str,
                  title: Optional[str] = None) -> str:
  """Score vs. prompt length (log x), one line per initialiser; a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  scored = [r for r in rows if r.score is not None and math.isfinite(r.score)]
  if not scored:
    raise ValueError("No scored rows to plot.")
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  names = list(dict.fromkeys(r.initializer for r in scored))
  for name in names:
    points = sorted((r.prompt_length, r.score) for r in scored
                    if r.initializer == name)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
            label=DISPLAY_NAMES.get(name, name))
  lengths = sorted({r.prompt_length for r in scored})
  ax.set_xscale("log")
  ax.set_xticks(lengths)
  ax.set_xticklabels([str(n) for n in lengths])
  ax.minorticks_off()
  ax.set_xlabel("Number of Prompt Tokens")
  metric = scored[0].metric.split("/")[-1] or "score"
  ax.set_ylabel(metric.replace("_", " ").title())
  ax.grid(True, alpha=0.3)
  ax.legend(title="Prompt Initialization")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
