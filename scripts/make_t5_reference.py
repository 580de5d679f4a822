r"""Writes goldens for our SuperGLUE / GLUE tasks made by Google's `t5` 0.9.4.

Real rows from the shared data files are converted to the TFDS features
(`super_glue/<config>:1.0.2`, `glue/<config>:1.0.0`) by TFDS's own builders'
example generators, then run through the registered `t5` tasks' own text
preprocessors (everything before `seqio.preprocessors.tokenize`), tokenized
with `seqio.preprocessors.tokenize` + `append_eos_after_trim` and the real T5
vocabulary, and scored with each task's own postprocessor and metrics on fixed
predictions. One file per t5 task, `tests/testdata/t5_reference/<task>.json`:

  {"task": "super_glue_rte_v102", "source": ["data/super_glue/RTE/val.jsonl"],
   "split": "validation",
   "examples": [{"inputs": str, "targets": str, "idx": ...,
                 "label": ... (where the task keeps one)}, ...],
   "input_ids": [[int, ..., 1], ...],   # first examples, EOS-terminated
   "target_ids": [[int, ..., 1], ...],
   "metric_cases": [{"name": str, "targets": [str], "predictions": [str],
                     "metrics": {name: float}}, ...],
   "metric_fns": [str]}

`examples` are in the t5 task's output order; `targets`/`predictions` of a
metric case are texts, one per example, fed to the task's postprocessor with
that example (`examples[i]`). Notes per task:

* `super_glue_record_v102`: t5's rows, one per gold answer (its train form);
  an evaluation sees the first row of each (passage, query) (t5's metric
  deduplicates by that key), so metric cases have one text per query.
  `all_rows`: [passage idx, query idx, target] of every row of the file, in
  t5's order (TFDS makes each query's answers distinct and sorted; the file
  has queries whose answers are neither, e.g. 8657/13387's).
* `super_glue_multirc_v102`: also `markup_rows`, a real row (its first
  question) with `<b>`, `</b>`, `<br>` (and `<br/>`, `<B>`) written into
  paragraph, question and answers, as `_with_markup` does, and
  `markup_examples`, t5's examples of it (the shared files have no markup).
* `super_glue_axb_v102`, `super_glue_axg_v102`: t5 registers no metrics; the
  cases are scored with t5's CoLA Matthews correlation (AX-b) and t5's
  accuracy (AX-g) over its RTE-style class ids.
* `glue_*`: the first rows of the shared GLUE files (SST-2 train and dev,
  MRPC GLUE dev pairs with `<QUOTE>` written back as `"`, STS-B dev), with
  t5's GLUE metrics. `glue_cola_v002` has no data here: its file holds
  metric cases only (Matthews correlation of class texts).

Environment (kept apart from the project's venv; t5 0.9.4 pins packages that
do not resolve on Python 3.11, so t5 itself goes in without dependencies and
then only what its imported modules need, at the project venv's versions):

  python3 -m venv .venv-t5
  .venv/bin/pip freeze | grep -v '^-e' > /tmp/t5_constraints.txt
  .venv-t5/bin/pip install --no-deps t5==0.9.4
  .venv-t5/bin/pip install -c /tmp/t5_constraints.txt seqio==0.0.20 \
      tensorflow tensorflow-text tensorflow-datasets babel gin-config \
      editdistance sacrebleu rouge-score scikit-learn scipy pandas \
      immutabledict nltk six sentencepiece absl-py

(versions generated with: t5 0.9.4, seqio 0.0.20, tensorflow 2.21.0,
tensorflow-datasets 4.9.10, scikit-learn 1.9.1, scipy 1.17.1.) Then, from
the repository root, with the shared folder beside it (or
PROMPT_TUNING_SHARED pointing at it):

  .venv-t5/bin/python scripts/make_t5_reference.py

Reruns produce identical files. Nothing is downloaded: TFDS builders are
only asked to turn local rows into examples.
"""

import csv
import io
import json
import os
import pathlib
import sys
from typing import Any, Callable, Iterable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import seqio  # pylint: disable=g-import-not-at-top,wrong-import-position
import t5.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
# pylint: disable-next=g-import-not-at-top
from t5.evaluation import metrics as t5_metrics
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "tests" / "testdata" / "t5_reference"
SHARED = pathlib.Path(
    os.environ.get("PROMPT_TUNING_SHARED", REPO_ROOT.parent / "shared"))
NUM_IDS = 20  # Examples per task whose token ids are stored.
MAX_FILE_BYTES = 28_000  # Long-passage tasks keep fewer examples.
MIN_EXAMPLES = 24
UNPARSEABLE = ("maybe", "")


def _shared(*parts: str) -> pathlib.Path:
  path = SHARED.joinpath(*parts)
  if not path.exists():
    sys.exit(f"error: shared file {path} is missing; put shared/ beside the "
             "repository root or set PROMPT_TUNING_SHARED.")
  return path


def _relative(path: pathlib.Path) -> str:
  return str(path.relative_to(SHARED))


# ----------------------------------------------------------- TFDS examples --


def _builder(name: str, config: str):
  return tfds.builder_cls(name)(config=config, data_dir="/nonexistent-tfds")


def _encoded(builder, examples: Iterable[dict]) -> tf.data.Dataset:
  """Examples (TFDS generator output) as the dataset TFDS would yield."""
  features = builder.info.features
  encoded = [features.encode_example(e) for e in examples]
  spec = features.get_tensor_spec()

  def as_tensors(value, value_spec):
    if isinstance(value, dict):
      return {k: as_tensors(v, value_spec[k]) for k, v in value.items()}
    return tf.constant(value if not isinstance(value, np.ndarray)
                       or value.dtype != object else value.tolist(),
                       dtype=value_spec.dtype, shape=None)

  def generate():
    for e in encoded:
      yield as_tensors(e, spec)

  return tf.data.Dataset.from_generator(
      generate, output_signature=features.get_tensor_spec())


def _jsonl_head(path: pathlib.Path, limit: Optional[int]) -> pathlib.Path:
  """A temporary copy of the first `limit` rows (TFDS reads whole files)."""
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  if limit is not None:
    lines = lines[:limit]
  out = pathlib.Path("/tmp") / f"t5_reference_{path.parent.name}_{path.name}"
  out.write_text("".join(line if line.endswith("\n") else line + "\n"
                         for line in lines), encoding="utf-8")
  return out


def super_glue_dataset(config: str, path: pathlib.Path, split: str,
                       limit: Optional[int]) -> tf.data.Dataset:
  builder = _builder("super_glue", config)
  rows = _jsonl_head(path, limit)
  # TFDS's own row -> example conversion (wsc.fixed's span fixes included;
  # ReCoRD's answers and entities made distinct and sorted).
  generated = builder._generate_examples(str(rows), split)  # pylint: disable=protected-access
  examples = (e for _, e in generated)
  return _encoded(builder, examples)


def _tsv_rows(path: pathlib.Path, limit: int) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    return [row for _, row in zip(range(limit), reader)]


def glue_dataset(config: str, limit: int, split: str) -> tuple[
    tf.data.Dataset, list[str]]:
  """GLUE rows from the shared files, in TFDS glue/<config> features."""
  builder = _builder("glue", config)
  if config == "sst2":
    path = _shared("data", "glue", "SST-2", f"{split}.tsv")
    examples = [{"sentence": r["sentence"], "label": int(r["label"]),
                 "idx": n} for n, r in enumerate(_tsv_rows(path, limit))]
    sources = [_relative(path)]
  elif config == "stsb":
    path = _shared("data", "glue", "STS-B", "dev.tsv")
    examples = [{"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                 "label": np.float32(r["score"]), "idx": n}
                for n, r in enumerate(_tsv_rows(path, limit))]
    sources = [_relative(path)]
  elif config == "mrpc":
    ids_path = _shared("data", "glue", "MRPC", "dev_ids.tsv")
    train_path = _shared("data", "glue", "MRPC", "msr_paraphrase_train.txt")
    with open(ids_path, encoding="utf-8") as f:
      dev_ids = {tuple(r[:2]) for r in csv.reader(f, delimiter="\t",
                                                  quoting=csv.QUOTE_NONE)}
    text = train_path.read_text(encoding="utf-8")
    # This copy's byte-order mark is encoded twice (PROVENANCE.md).
    text = text.lstrip("\ufeff\u00ef\u00bb\u00bf")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t",
                            quoting=csv.QUOTE_NONE)
    examples = []
    for n, row in enumerate(reader):  # TFDS: idx is the file row number.
      if (row["#1 ID"], row["#2 ID"]) in dev_ids and len(examples) < limit:
        examples.append({
            "sentence1": row["#1 String"].replace("<QUOTE>", '"'),
            "sentence2": row["#2 String"].replace("<QUOTE>", '"'),
            "label": int(row["Quality"]), "idx": n})
    sources = [_relative(train_path), _relative(ids_path)]
  else:
    raise ValueError(config)
  return _encoded(builder, examples), sources


# ----------------------------------------------------------- t5 pipeline --


def text_preprocessors(task: seqio.Task) -> list[Callable]:
  fns = []
  for fn in task.preprocessors:
    if fn is seqio.preprocessors.tokenize:
      return fns
    fns.append(fn)
  raise ValueError(f"{task.name} has no tokenize step.")


def _flat(example: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in example.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_task(task: seqio.Task, dataset: tf.data.Dataset) -> list[dict]:
  """t5's preprocessed examples (numpy), with `*_pretokenized` copies."""
  for fn in text_preprocessors(task):
    dataset = fn(dataset)
  examples = [_flat(e) for e in dataset.as_numpy_iterator()]
  for e in examples:  # As seqio.preprocessors.tokenize keeps them.
    e["inputs_pretokenized"] = e["inputs"]
    e["targets_pretokenized"] = e["targets"]
  return examples


def token_ids(examples: list[dict], vocab_path: pathlib.Path
              ) -> tuple[list, list]:
  vocabulary = seqio.SentencePieceVocabulary(str(vocab_path))
  features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True)
              for k in ("inputs", "targets")}
  texts = tf.data.Dataset.from_tensor_slices({
      "inputs": [e["inputs"] for e in examples[:NUM_IDS]],
      "targets": [e["targets"] for e in examples[:NUM_IDS]],
  })
  tokenized = seqio.preprocessors.tokenize(texts, features)
  tokenized = seqio.preprocessors.append_eos_after_trim(
      tokenized, features, sequence_length=None)
  rows = list(tokenized.as_numpy_iterator())
  return ([r["inputs"].tolist() for r in rows],
          [r["targets"].tolist() for r in rows])


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _jsonable(value: Any) -> Any:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [_jsonable(v) for v in value.tolist()]
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def score(task: seqio.Task, examples: list[dict], targets: list[str],
          predictions: list[str], metric_fns: Optional[list] = None) -> dict:
  """t5's postprocessing of both sides with each example, then its metrics."""
  post = task.postprocess_fn
  scored_targets = [post(t, example=e, is_target=True)
                    for t, e in zip(targets, examples)]
  scored_predictions = [post(p, example=e, is_target=False)
                        for p, e in zip(predictions, examples)]
  result = {}
  for fn in (task.metric_fns if metric_fns is None else metric_fns):
    for name, value in fn(scored_targets, scored_predictions).items():
      result[name] = float(getattr(value, "value", value))
  return result


def example_record(example: dict) -> dict:
  keep = {"inputs": _text(example["inputs"]),
          "targets": _text(example["targets"])}
  for key in ("idx", "idx/paragraph", "idx/question", "idx/answer",
              "idx/passage", "idx/query", "label", "answers"):
    if key in example:
      keep[key] = _jsonable(example[key])
  return keep


def _fit(examples: list[dict]) -> list[dict]:
  """The first examples whose texts fit the file budget."""
  size, kept = 0, []
  for e in examples:
    size += len(e["inputs"]) + len(e["targets"]) + 40
    if size > MAX_FILE_BYTES and len(kept) >= MIN_EXAMPLES:
      break
    kept.append(e)
  return kept


def write(name: str, sources: list[str], split: str, examples: list[dict],
          cases: list[dict], metric_fns: list[str],
          extra: Optional[dict] = None) -> None:
  input_ids, target_ids = token_ids(examples, VOCAB)
  payload = {
      "task": name, "source": sources, "split": split,
      "generated_with": "t5==0.9.4 (scripts/make_t5_reference.py)",
      "metric_fns": metric_fns,
      "examples": [example_record(e) for e in examples],
      "input_ids": input_ids, "target_ids": target_ids,
      "metric_cases": cases,
  }
  payload.update(extra or {})
  OUT_DIR.mkdir(parents=True, exist_ok=True)
  path = OUT_DIR / f"{name}.json"
  path.write_text(json.dumps(payload, ensure_ascii=False, sort_keys=True,
                             separators=(",", ":")) + "\n", encoding="utf-8")
  print(f"{path.relative_to(REPO_ROOT)}: {len(examples)} examples, "
        f"{path.stat().st_size} bytes; " + "; ".join(
            f"{c['name']}: {c['metrics']}" for c in cases))


def _fn_names(fns) -> list[str]:
  return [getattr(f, "__name__", type(f).__name__) for f in fns]


# ----------------------------------------------------------- predictions --


def class_cases(targets: list[str], labels: list[str]) -> list[tuple]:
  """Perfect; a deterministic mix of right, wrong and unparseable answers."""
  n = len(labels)
  mixed, unparseable = [], []
  for i, t in enumerate(targets):
    if i % 7 == 3:
      mixed.append(UNPARSEABLE[i % 2])
    elif i % 3 == 1:
      mixed.append(labels[(labels.index(t) + 1) % n] if t in labels else t)
    else:
      mixed.append(t)
    unparseable.append("maybe" if i % 4 == 0 else t)
  constant = [labels[0]] * len(targets)
  return [("perfect", list(targets)), ("mixed", mixed),
          ("unparseable_every_4th", unparseable),
          (f"always_{labels[0]}", constant)]


def wsc_cases(targets: list[str]) -> list[tuple]:
  def possessive(t):
    return t.split(" ")[-1] + "'s friend"
  return [
      ("candidate", list(targets)),
      ("candidate_period", [t + "." for t in targets]),
      ("possessive_noun", [possessive(t) for t in targets]),
      ("possessor_candidate", ["John's " + t for t in targets]),
      ("its_candidate", ["its " + t for t in targets]),
      ("capitalised_the", ["The " + t for t in targets]),
      ("superset", ["fuzzy " + t for t in targets]),
      ("last_word", [t.split(" ")[-1] for t in targets]),
      ("determiner_only", ["the" for _ in targets]),
      ("other", ["somebody else" for _ in targets]),
  ]


# ----------------------------------------------------------------- tasks --


def classification(name: str, config: str, folder: str, file: str,
                   split: str, limit: int, metric_fns=None,
                   metric_names=None) -> None:
  task = seqio.get_mixture_or_task(name)
  path = _shared("data", "super_glue", folder, file)
  examples = _fit(run_task(task, super_glue_dataset(config, path, split,
                                                    limit)))
  targets = [_text(e["targets"]) for e in examples]
  labels = list(_builder("super_glue", config).info.features[
      "label"].names)
  cases = [{"name": n, "targets": targets, "predictions": p,
            "metrics": score(task, examples, targets, p, metric_fns)}
           for n, p in class_cases(targets, labels)]
  write(name, [_relative(path)], split, examples, cases,
        metric_names or _fn_names(task.metric_fns))


def _with_markup(row: dict) -> dict:
  """A MultiRC release row's first question, with HTML put into its text.

  The shared files carry no markup at all, so this case is made: a real row
  with `<b>`/`</b>`/`<br>` added to the paragraph, the question and the
  answers (plus `<br/>` and `<B>`, which t5's patterns leave alone).
  """
  passage = dict(row["passage"])
  first, rest = passage["text"].split(". ", 1)
  passage["text"] = f"<b>Sent 1: </b>{first}.<br><b>Sent 2: </b>{rest}"
  question = dict(passage["questions"][0])
  words = question["question"].split(" ", 1)
  question["question"] = f"<b>{words[0]}</b> {words[1]}<br>"
  answers = [dict(a) for a in question["answers"]]
  marks = ("<b>{}</b>", "{}<br>more", "{}<br/>", "<B>{}</B>")
  for n, answer in enumerate(answers):
    answer["text"] = marks[n % len(marks)].format(answer["text"])
  question["answers"] = answers
  passage["questions"] = [question]
  return {**row, "passage": passage}


def multirc() -> None:
  name = "super_glue_multirc_v102"
  task = seqio.get_mixture_or_task(name)
  path = _shared("data", "super_glue", "MultiRC", "val.jsonl")
  examples = _fit(run_task(task, super_glue_dataset(
      "multirc", path, "validation", 6)))
  targets = [_text(e["targets"]) for e in examples]
  cases = [{"name": n, "targets": targets, "predictions": p,
            "metrics": score(task, examples, targets, p)}
           for n, p in class_cases(targets, ["False", "True"])]
  with open(path, encoding="utf-8") as f:
    marked = _with_markup(json.loads(f.readline()))
  marked_path = pathlib.Path("/tmp") / "t5_reference_multirc_markup.jsonl"
  marked_path.write_text(json.dumps(marked) + "\n", encoding="utf-8")
  marked_examples = run_task(task, super_glue_dataset(
      "multirc", marked_path, "validation", None))
  write(name, [_relative(path)], "validation", examples, cases,
        _fn_names(task.metric_fns),
        {"markup_rows": [marked],
         "markup_examples": [example_record(e) for e in marked_examples]})


def record() -> None:
  name = "super_glue_record_v102"
  task = seqio.get_mixture_or_task(name)
  path = _shared("data", "fewglue", "ReCoRD", "train.jsonl")
  rows = run_task(task, super_glue_dataset("record", path, "train", None))
  examples = _fit(rows)
  # What an evaluation scores: the first row of each query (t5 deduplicates).
  firsts, seen = [], set()
  for e in examples:
    key = (int(e["idx/passage"]), int(e["idx/query"]))
    if key not in seen:
      seen.add(key)
      firsts.append(e)
  entities = [[_text(a) for a in e["answers"]] for e in firsts]
  first = [a[0] for a in entities]
  wrong = [_text(e["inputs"]).split(" entities: ", 1)[1].split(", ")[0]
           for e in firsts]
  predictions = {
      "first_answer": first,
      "last_answer": [a[-1] for a in entities],
      "mixed": [w if i % 3 == 0 else ("the " + f + "." if i % 3 == 1 else f)
                for i, (f, w) in enumerate(zip(first, wrong))],
      "first_entity": wrong,
  }
  cases = []
  for n, p in predictions.items():
    # Fed to t5 as it evaluates: every row, predictions repeated per query.
    by_key = {(int(e["idx/passage"]), int(e["idx/query"])): q
              for e, q in zip(firsts, p)}
    all_predictions = [by_key[(int(e["idx/passage"]), int(e["idx/query"]))]
                       for e in examples]
    all_targets = [_text(e["targets"]) for e in examples]
    cases.append({"name": n, "targets": first, "predictions": p,
                  "metrics": score(task, examples, all_targets,
                                   all_predictions)})
  write(name, [_relative(path)], "train", examples, cases,
        _fn_names(task.metric_fns),
        {"evaluation_rows": [examples.index(e) for e in firsts],
         # Every row of the file, in t5's order: [passage, query, target].
         "all_rows": [[int(e["idx/passage"]), int(e["idx/query"]),
                       _text(e["targets"])] for e in rows]})


def wsc(name: str, file: str, split: str, limit: Optional[int]) -> None:
  task = seqio.get_mixture_or_task(name)
  path = _shared("data", "super_glue", "WSC", file)
  examples = run_task(task, super_glue_dataset("wsc.fixed", path, split,
                                               limit))
  cases = []
  if task.metric_fns:
    targets = [_text(e["targets"]) for e in examples]
    cases = [{"name": n, "targets": targets, "predictions": p,
              "metrics": score(task, examples, targets, p)}
             for n, p in wsc_cases(targets)]
  write(name, [_relative(path)], split, examples, cases,
        _fn_names(task.metric_fns))


def glue(name: str, config: str, split: str, limit: int) -> None:
  task = seqio.get_mixture_or_task(name)
  dataset, sources = glue_dataset(config, limit, split)
  examples = run_task(task, dataset)
  targets = [_text(e["targets"]) for e in examples]
  if config == "stsb":
    # Predictions as a model would write them: t5's targets are rounded to
    # 0.2 and printed with one decimal; some shifted, some unparseable.
    shifted = [f"{min(5.0, float(t) + 0.4 * (i % 3)):.1f}"
               for i, t in enumerate(targets)]
    mixed = [("maybe" if i % 9 == 4 else s) for i, s in enumerate(shifted)]
    reversed_scores = [f"{5.0 - float(t):.1f}" for t in targets]
    predicted = [("perfect", targets), ("shifted", shifted),
                 ("shifted_some_unparseable", mixed),
                 ("reversed", reversed_scores)]
  else:
    labels = list(_builder("glue", config).info.features["label"].names)
    predicted = class_cases(targets, labels)
  cases = [{"name": n, "targets": targets, "predictions": p,
            "metrics": score(task, examples, targets, p)}
           for n, p in predicted]
  write(name if split != "train" else f"{name}_train", sources, split,
        examples, cases, _fn_names(task.metric_fns))


def cola_metric_cases() -> None:
  """CoLA: no shared data; t5's MCC on fixed class texts."""
  name = "glue_cola_v002"
  task = seqio.get_mixture_or_task(name)
  labels = ["unacceptable", "acceptable"]
  rng = np.random.default_rng(0)
  targets = [labels[i] for i in rng.integers(0, 2, 60)]
  cases = []
  for n, p in class_cases(targets, labels):
    post = task.postprocess_fn
    scored_t = [post(t, example=None, is_target=True) for t in targets]
    scored_p = [post(x, example=None, is_target=False) for x in p]
    result = {}
    for fn in task.metric_fns:
      result.update({k: float(v) for k, v in fn(scored_t, scored_p).items()})
    cases.append({"name": n, "targets": targets, "predictions": p,
                  "metrics": result})
  OUT_DIR.mkdir(parents=True, exist_ok=True)
  payload = {"task": name, "source": [], "split": None,
             "generated_with": "t5==0.9.4 (scripts/make_t5_reference.py)",
             "metric_fns": _fn_names(task.metric_fns), "examples": [],
             "input_ids": [], "target_ids": [], "metric_cases": cases}
  (OUT_DIR / f"{name}.json").write_text(
      json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n",
      encoding="utf-8")
  print(f"{name}: " + "; ".join(f"{c['name']}: {c['metrics']}"
                                for c in cases))


VOCAB = _shared("models", "t5_vocab", "spiece.model")


def main() -> None:
  mcc = t5.data.glue_utils.get_glue_metric("cola")
  classification("super_glue_boolq_v102", "boolq", "BoolQ", "val.jsonl",
                 "validation", 300)
  classification("super_glue_cb_v102", "cb", "CB", "val.jsonl", "validation",
                 None)
  classification("super_glue_copa_v102", "copa", "COPA", "val.jsonl",
                 "validation", None)
  classification("super_glue_rte_v102", "rte", "RTE", "val.jsonl",
                 "validation", 300)
  classification("super_glue_wic_v102", "wic", "WiC", "val.jsonl",
                 "validation", 300)
  classification("super_glue_axb_v102", "axb", "AX-b", "AX-b.jsonl", "test",
                 300, metric_fns=mcc, metric_names=["matthews_corrcoef"])
  classification("super_glue_axg_v102", "axg", "AX-g", "AX-g.jsonl", "test",
                 300, metric_fns=[t5_metrics.accuracy],
                 metric_names=["accuracy"])
  multirc()
  record()
  wsc("super_glue_wsc_v102_simple_train", "train.jsonl", "train", None)
  wsc("super_glue_wsc_v102_simple_eval", "val.jsonl", "validation", None)
  glue("glue_sst2_v002", "sst2", "dev", 300)
  glue("glue_sst2_v002", "sst2", "train", 300)
  glue("glue_mrpc_v002", "mrpc", "dev", 200)
  glue("glue_stsb_v002", "stsb", "dev", 300)
  cola_metric_cases()


if __name__ == "__main__":
  main()
