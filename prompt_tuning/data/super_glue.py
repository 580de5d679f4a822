"""SuperGLUE as text-to-text, with or without T5's leading task name.

The formats are T5's: the example's text fields as `key: value` pairs in T5's
key order, and the class name as the target. The paper's "taskless" variant
drops the task name T5 puts first (`rte hypothesis: ... premise: ...` becomes
`hypothesis: ... premise: ...`), so only a learned prompt can tell the frozen
model which task it is facing.

Formats (taskless; the prefixed variant starts with the name in brackets):

* BoolQ [boolq]: `passage: P question: Q` -> `False` / `True`
* CB [cb]: `hypothesis: H premise: P` -> `entailment` / `contradiction` /
  `neutral`
* COPA [copa]: `choice1: A choice2: B premise: P question: cause|effect` ->
  `choice1` / `choice2`
* MultiRC [multirc]: one example per (question, answer):
  `question: Q answer: A paragraph: P` -> `False` / `True`
* ReCoRD [record]: one example per query:
  `query: Q entities: E1, E2, ... passage: P` -> the first gold answer; all
  gold answers travel along in `answers` for the metric.
* RTE [rte], AX-b [rte], AX-g [rte]: `hypothesis: H premise: P` ->
  `entailment` / `not_entailment` (AX-b's sentence1/sentence2 are read as
  premise/hypothesis, so the diagnostics look exactly like RTE).
* WiC [wic]: `sentence1: S1 sentence2: S2 word: W` -> `False` / `True`
* WSC [wsc:], T5's "simple" form: the sentence with the pronoun marked
  `* it *` -> the candidate referent `span1_text`. Training keeps only the
  examples whose candidate is correct; evaluation keeps all of them and asks
  whether the model's answer names the candidate.

Unlabelled (test) examples get the target `<unk>`.
"""

from typing import Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from prompt_tuning.data import super_glue_schema as schema

UNLABELLED_TARGET = "<unk>"

# Benchmarks with a regular train/validation/test task.
STANDARD_BENCHMARKS = ("boolq", "cb", "copa", "multirc", "record", "rte",
                       "wic")
DIAGNOSTIC_BENCHMARKS = ("axb", "axg")
# Standard benchmarks with a closed label set and an int `label` (a
# classification head can be trained on them; ReCoRD answers free text).
CLASSIFICATION_BENCHMARKS = ("boolq", "cb", "copa", "multirc", "rte", "wic")
WSC_VARIANTS = ("wsc_simple_train", "wsc_simple_eval")

# The leading task name T5 uses for each benchmark.
T5_PREFIXES: Mapping[str, str] = {
    "boolq": "boolq",
    "cb": "cb",
    "copa": "copa",
    "multirc": "multirc",
    "record": "record",
    "rte": "rte",
    "wic": "wic",
    "wsc": "wsc:",
    "axb": "rte",
    "axg": "rte",
}

# Text fields in input order, and how the fields are named in the input.
_INPUT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "boolq": ("passage", "question"),
    "cb": ("hypothesis", "premise"),
    "copa": ("choice1", "choice2", "premise", "question"),
    "multirc": ("question", "answer", "paragraph"),
    "rte": ("hypothesis", "premise"),
    "wic": ("sentence1", "sentence2", "word"),
    "axb": ("hypothesis", "premise"),
    "axg": ("hypothesis", "premise"),
}
_RENAMED_FIELDS: Mapping[str, Mapping[str, str]] = {
    "axb": {"premise": "sentence1", "hypothesis": "sentence2"},
}


def task_name(benchmark: str, taskless: bool = True) -> str:
  """The registered SeqIO name of a SuperGLUE task.

  Args:
    benchmark: `boolq`, ..., `wic`, `axb`, `axg`, `wsc_simple_train` or
      `wsc_simple_eval`.
    taskless: the paper's variant without the task-name prefix.

  Returns:
    e.g. `taskless_super_glue_rte_v102` or `super_glue_wsc_v102_simple_eval`.
  """
  if benchmark in WSC_VARIANTS:
    name = f"super_glue_wsc_v102_{benchmark[len('wsc_'):]}"
  elif benchmark in STANDARD_BENCHMARKS + DIAGNOSTIC_BENCHMARKS:
    name = f"super_glue_{benchmark}_v102"
  else:
    raise ValueError(f"Unknown SuperGLUE benchmark {benchmark!r}.")
  return f"taskless_{name}" if taskless else name


def mixture_name(taskless: bool = True) -> str:
  return "taskless_super_glue_v102" if taskless else "super_glue_v102"


def classification_mixture_name(taskless: bool = True) -> str:
  """The mixture of `CLASSIFICATION_BENCHMARKS` (P-Tuning v2 multi-task)."""
  return f"{'taskless_' if taskless else ''}super_glue_classification_v102"


def benchmark_of(name: str) -> str:
  """`wsc` for WSC variants, else the benchmark (`rte`, ...) of a task name."""
  for benchmark in (STANDARD_BENCHMARKS + DIAGNOSTIC_BENCHMARKS
                    + WSC_VARIANTS):
    for taskless in (True, False):
      if name == task_name(benchmark, taskless):
        return "wsc" if benchmark in WSC_VARIANTS else benchmark
  raise KeyError(f"{name!r} is not a SuperGLUE task name.")


def tfds_config(benchmark: str) -> str:
  """TFDS super_glue config of a benchmark (WSC variants read `wsc.fixed`)."""
  return schema.TFDS_CONFIGS["wsc" if benchmark in WSC_VARIANTS
                             else benchmark]


def _class_names(benchmark: str) -> tuple[str, ...]:
  if benchmark in ("record",) + WSC_VARIANTS:
    return ()
  return schema.CLASS_NAMES[tfds_config(benchmark)]


def _build_labels() -> dict[str, tuple[str, ...]]:
  labels = {}
  for benchmark in STANDARD_BENCHMARKS + DIAGNOSTIC_BENCHMARKS + WSC_VARIANTS:
    for taskless in (True, False):
      labels[task_name(benchmark, taskless)] = _class_names(benchmark)
  return labels


# Target strings of each classification task, in class-id order, for the
# class-label prompt initialiser. ReCoRD and WSC answer with free text
# (entity names, noun phrases), so their tuples are empty.
LABELS: Mapping[str, tuple[str, ...]] = _build_labels()


def label_strings(name: str) -> tuple[str, ...]:
  """The label strings of a registered SuperGLUE task (empty if free text)."""
  try:
    return LABELS[name]
  except KeyError:
    raise KeyError(f"{name!r} is not a SuperGLUE task; known: "
                   f"{sorted(LABELS)}.") from None


def _key_value_text(prefix: Optional[str], pairs: Sequence[tuple[str,
                                                                 tf.Tensor]]):
  parts = [prefix] if prefix else []
  for key, value in pairs:
    parts.extend([f"{key}:", value])
  return tf.strings.join(parts, separator=" ")


def _label_text(label: tf.Tensor, class_names: Sequence[str]) -> tf.Tensor:
  names = tf.constant(list(class_names))
  known = tf.gather(names, tf.maximum(label, 0))
  return tf.where(label < 0, tf.constant(UNLABELLED_TARGET), known)


def _remove_multirc_markup(text: tf.Tensor) -> tf.Tensor:
  """Drops the `<b>`/`<br>` HTML some MultiRC releases carry."""
  text = tf.strings.regex_replace(text, "<br>", " ")
  return tf.strings.regex_replace(text, "</?b>", "")


def _classification(benchmark: str, prefix: Optional[str]) -> Callable:
  """Preprocessor for the `key: value ... -> class name` benchmarks."""
  class_names = _class_names(benchmark)
  renamed = _RENAMED_FIELDS.get(benchmark, {})

  @seqio.map_over_dataset
  def fn(x):
    fields = {name: x[renamed.get(name, name)]
              for name in _INPUT_FIELDS[benchmark]}
    if benchmark == "multirc":
      fields["paragraph"] = _remove_multirc_markup(fields["paragraph"])
    return {
        "inputs": _key_value_text(prefix, list(fields.items())),
        "targets": _label_text(x["label"], class_names),
        "label": x["label"],
        "idx": x["idx"],
    }

  return fn


def _record_passage(passage: tf.Tensor) -> tf.Tensor:
  """Turns ReCoRD's `@highlight` bullet markers into sentence breaks."""
  after_punct = tf.strings.regex_replace(
      passage, r"([.?!\"'])\n@highlight\n", r"\1 ")
  return tf.strings.regex_replace(after_punct, r"\n@highlight\n", ". ")


def _record(prefix: Optional[str]) -> Callable:
  """ReCoRD: one example per query, all gold answers kept."""

  @seqio.map_over_dataset
  def fn(x):
    answers = x["answers"]
    target = tf.cond(
        tf.size(answers) > 0, lambda: answers[0],
        lambda: tf.constant(UNLABELLED_TARGET))
    pairs = [
        ("query", x["query"]),
        ("entities", tf.strings.reduce_join(x["entities"], separator=", ")),
        ("passage", _record_passage(x["passage"])),
    ]
    return {
        "inputs": _key_value_text(prefix, pairs),
        "targets": target,
        "answers": answers,
        "idx": x["idx"],
    }

  return fn


_PUNCT = "[[:punct:]]"


def mark_pronoun(text: tf.Tensor, pronoun: tf.Tensor,
                 index: tf.Tensor) -> tf.Tensor:
  """Surrounds the pronoun at word `index` with asterisks: `... * it * ...`.

  Words are split on single spaces. Punctuation glued to the word stays
  outside the marks (`him,"` becomes `* him *,"`). When the word at `index`
  is not the pronoun (a few release examples are off), the nearest word that
  is, ignoring case and edge punctuation, is marked instead.

  Args:
    text: scalar string, the sentence.
    pronoun: scalar string, WSC's `span2_text`.
    index: scalar int, WSC's `span2_index`.

  Returns:
    Scalar string with the pronoun marked.
  """
  words = tf.strings.split(text, sep=" ")
  num_words = tf.size(words)
  index = tf.clip_by_value(tf.cast(index, tf.int32), 0, num_words - 1)
  cores = tf.strings.regex_replace(words, f"^{_PUNCT}+|{_PUNCT}+$", "")
  matches = tf.equal(tf.strings.lower(cores), tf.strings.lower(pronoun))
  positions = tf.range(num_words)
  distance = tf.where(matches, tf.abs(positions - index), num_words + 1)
  nearest = tf.cast(tf.argmin(distance), tf.int32)
  found = tf.reduce_any(matches)
  chosen = tf.where(found, nearest, index)
  word = words[chosen]
  lead = tf.strings.regex_replace(word, f"^({_PUNCT}*).*$", r"\1")
  trail = tf.strings.regex_replace(word, f"^.*?({_PUNCT}*)$", r"\1")
  core = tf.strings.regex_replace(word, f"^{_PUNCT}*(.*?){_PUNCT}*$", r"\1")
  marked = tf.strings.join([lead, "* ", core, " *", trail])
  new_words = tf.concat([words[:chosen], [marked], words[chosen + 1:]], 0)
  return tf.strings.reduce_join(new_words, separator=" ")


def _wsc_simple(prefix: Optional[str], positives_only: bool) -> Callable:
  """WSC in T5's simple form; training keeps only correct referents."""

  def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    if positives_only:
      dataset = dataset.filter(lambda x: tf.equal(x["label"], 1))

    def convert(x):
      text = mark_pronoun(x["text"], x["span2_text"], x["span2_index"])
      if prefix:
        text = tf.strings.join([prefix, text], separator=" ")
      return {
          "inputs": text,
          "targets": x["span1_text"],
          "label": x["label"],
          "idx": x["idx"],
      }

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  return fn


def text_preprocessor(benchmark: str, taskless: bool = True) -> Callable:
  """Returns the raw-features -> {inputs, targets, ...} preprocessor.

  Args:
    benchmark: as for `task_name`.
    taskless: drop T5's leading task name (the paper's setting).

  Returns:
    A function from a `tf.data.Dataset` of TFDS super_glue features to one of
    string `inputs`/`targets` (plus `idx`, and `label` or `answers` for the
    metrics).
  """
  prefix = None
  if not taskless:
    prefix = T5_PREFIXES["wsc" if benchmark in WSC_VARIANTS else benchmark]
  if benchmark == "record":
    return _record(prefix)
  if benchmark in WSC_VARIANTS:
    return _wsc_simple(prefix, positives_only=benchmark == "wsc_simple_train")
  if benchmark in _INPUT_FIELDS:
    return _classification(benchmark, prefix)
  raise ValueError(f"Unknown SuperGLUE benchmark {benchmark!r}.")
