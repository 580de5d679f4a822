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
* ReCoRD [record]: `query: Q entities: E1, E2, ... passage: P` -> a gold
  answer. As in T5, training has one example per gold answer
  (`record_rows_per_answer`), in the order of `answers` (TFDS's: distinct
  and sorted, as the local reader makes them too); evaluation one per query,
  targeting the first answer. Every row keeps all gold answers in `answers`
  for the metric.
* RTE [rte], AX-b [rte], AX-g [rte]: `hypothesis: H premise: P` ->
  `entailment` / `not_entailment` (AX-b's sentence1/sentence2 are read as
  premise/hypothesis, so the diagnostics look exactly like RTE).
* WiC [wic]: `sentence1: S1 sentence2: S2 word: W` -> `False` / `True`
* WSC [wsc:], T5's "simple" form: the sentence with the pronoun marked
  `*it*` (see `mark_pronoun`) -> the candidate referent `span1_text`.
  Training keeps only the examples whose candidate is correct; evaluation
  keeps all of them and asks whether the model's answer names the candidate.

Every task's texts, token ids and metrics match Google's `t5` 0.9.4 on the
real data: `tests/test_t5_reference.py` checks them against goldens that
`scripts/make_t5_reference.py` makes with t5 itself.

Unlabelled (test) examples get the target `<unk>`.
"""

from typing import Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from prompt_tuning.data import super_glue_schema as schema

UNLABELLED_TARGET = "<unk>"
# The feature `record_rows_per_answer` gives each ReCoRD training row: the
# gold answer that row targets.
RECORD_ROW_TARGET = "row_answer"

# WSC is registered in T5's simple form, as a training and an evaluation
# task; the other benchmarks (`schema.BENCHMARKS`) as themselves.
WSC_VARIANTS = ("wsc_simple_train", "wsc_simple_eval")
# Benchmarks with a regular train/validation/test task.
STANDARD_BENCHMARKS: tuple[str, ...] = tuple(
    b for b in schema.SCORED if b != "wsc")
DIAGNOSTIC_BENCHMARKS: tuple[str, ...] = schema.DIAGNOSTICS
# Standard benchmarks with a closed label set and an int `label` (a
# classification head can be trained on them; ReCoRD answers free text).
CLASSIFICATION_BENCHMARKS: tuple[str, ...] = tuple(
    b for b in STANDARD_BENCHMARKS if schema.TFDS_CONFIGS[b]
    in schema.CLASS_NAMES)

# The leading task name T5 uses for each benchmark: its own name, except
# these.
_T5_PREFIX_EXCEPTIONS = {"wsc": "wsc:", "axb": "rte", "axg": "rte"}
T5_PREFIXES: Mapping[str, str] = {
    b: _T5_PREFIX_EXCEPTIONS.get(b, b) for b in schema.BENCHMARKS}

# How the inputs name a benchmark's fields where they differ from TFDS's
# (AX-b's sentence1/sentence2 are read as premise/hypothesis, like RTE's).
_RENAMED_FIELDS: Mapping[str, Mapping[str, str]] = {
    "axb": {"premise": "sentence1", "hypothesis": "sentence2"},
}
# T5 writes the fields in alphabetical order (its preprocessor sorts the
# feature keys), except MultiRC's.
_FIELD_ORDER_EXCEPTIONS: Mapping[str, tuple[str, ...]] = {
    "multirc": ("question", "answer", "paragraph"),
}


def _input_fields(benchmark: str) -> tuple[str, ...]:
  """A classification benchmark's text fields as the inputs name and order
  them."""
  if benchmark in _FIELD_ORDER_EXCEPTIONS:
    return _FIELD_ORDER_EXCEPTIONS[benchmark]
  named = {tfds: name for name, tfds in _RENAMED_FIELDS.get(benchmark,
                                                            {}).items()}
  return tuple(sorted(named.get(f, f)
                      for f in schema.TEXT_FIELDS[tfds_config(benchmark)]))


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
  """Drops the `<b>`/`<br>` HTML some MultiRC releases carry.

  As T5, from the whole joined input (question and answer too, not only the
  paragraph): every `<br>` becomes a space, then every `<b>`/`</b>` goes.
  """
  text = tf.strings.regex_replace(text, "<br>", " ")
  return tf.strings.regex_replace(text, "</?b>", "")


def _classification(benchmark: str, prefix: Optional[str]) -> Callable:
  """Preprocessor for the `key: value ... -> class name` benchmarks."""
  class_names = _class_names(benchmark)
  renamed = _RENAMED_FIELDS.get(benchmark, {})

  @seqio.map_over_dataset
  def fn(x):
    fields = [(name, x[renamed.get(name, name)])
              for name in _input_fields(benchmark)]
    inputs = _key_value_text(prefix, fields)
    if benchmark == "multirc":
      inputs = _remove_multirc_markup(inputs)
    return {
        "inputs": inputs,
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


def record_rows_per_answer(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD training rows as T5 makes them: one per gold answer.

  A query with answers `[a, b, c]` becomes three examples targeting `a`, `b`
  and `c` in turn (the row's answer is put in `RECORD_ROW_TARGET`, which
  `text_preprocessor` makes the target); every row keeps `answers` as it
  was, `[a, b, c]`. TFDS's answers, and the local reader's, are distinct and
  sorted, so the rows come in sorted answer order, as T5's. A query without
  answers stays one row, targeting `UNLABELLED_TARGET`. Applied to the train
  split only (`tasks/super_glue.py`); evaluation keeps one row per query,
  scored against all answers.

  Args:
    dataset: TFDS `super_glue/record` examples (`answers`: [num_answers]).

  Returns:
    The expanded dataset: the same features plus `RECORD_ROW_TARGET`.
  """

  def expand(x):
    answers = x["answers"]
    rows = tf.maximum(tf.size(answers), 1)
    expanded = {k: _repeat(v, rows) for k, v in x.items()}
    expanded[RECORD_ROW_TARGET] = tf.cond(
        tf.size(answers) > 0, lambda: answers,
        lambda: tf.constant([UNLABELLED_TARGET]))
    return tf.data.Dataset.from_tensor_slices(expanded)

  return dataset.flat_map(expand)


def _repeat(value, rows: tf.Tensor):
  """`value` (a tensor or a dict of them) stacked `rows` times."""
  if isinstance(value, Mapping):
    return {k: _repeat(v, rows) for k, v in value.items()}
  return tf.repeat(value[None], rows, axis=0)


def _record(prefix: Optional[str]) -> Callable:
  """ReCoRD: the row's answer (training) or the first gold answer is the
  target; all of them are kept."""

  @seqio.map_over_dataset
  def fn(x):
    answers = x["answers"]
    if RECORD_ROW_TARGET in x:
      target = x[RECORD_ROW_TARGET]
    else:
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


# Two release sentences whose pronoun T5 cannot find by `span2_index`: the
# first has the pronoun glued to punctuation (`him,"`), the second's index
# points at the word before the pronoun. T5 hard-codes the blanked-out form of
# each (pronoun replaced by `X`, `him,"` split into `X ,"`, trailing space
# dropped); the marking step then treats them like any other sentence.
_WSC_BLANKED_SPECIAL_CASES: Mapping[str, str] = {
    ('The boy continued to whip the pony , and eventually the pony threw him '
     'over. John laughed out quite loud. "Good for him," he said. '):
        ('The boy continued to whip the pony , and eventually the pony threw '
         'him over. John laughed out quite loud. "Good for X ," he said.'),
    ('When they had eventually calmed down a bit , and had gotten home, Mr. '
     'Farley put the magic pebble in an iron safe . Some day they might want '
     'to use it , but really for now, what more could they wish for?'):
        ('When they had eventually calmed down a bit , and had gotten home, '
         'Mr. Farley put the magic pebble in an iron safe . Some day they '
         'might want to use X , but really for now, what more could they '
         'wish for?'),
}


def _blank_pronoun(text: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """The sentence with word `index` (split on single spaces) replaced by X."""
  words = tf.strings.split(text, sep=" ")
  index = tf.clip_by_value(tf.cast(index, tf.int32), 0, tf.size(words) - 1)
  blanked = tf.concat([words[:index], ["X"], words[index + 1:]], 0)
  result = tf.strings.reduce_join(blanked, separator=" ")
  for original, special in _WSC_BLANKED_SPECIAL_CASES.items():
    result = tf.where(tf.equal(text, original), tf.constant(special), result)
  return result


def mark_pronoun(text: tf.Tensor, pronoun: tf.Tensor,
                 index: tf.Tensor) -> tf.Tensor:
  """Marks the pronoun at word `index` T5's way: `... if *he* could ...`.

  As T5's `wsc_simple`: the word at `index` (words split on single spaces) is
  blanked out as `X`, and then every ` X ` (with its spaces) becomes
  ` *<pronoun>* `, so punctuation glued to the word is replaced along with
  it. Two release sentences get T5's hand-made blanking (see
  `_WSC_BLANKED_SPECIAL_CASES`).

  Args:
    text: scalar string, the sentence (WSC's `text`).
    pronoun: scalar string, WSC's `span2_text`.
    index: scalar int, WSC's `span2_index`.

  Returns:
    Scalar string with the pronoun marked.
  """
  blanked = _blank_pronoun(text, index)
  # The rewrite of `regex_replace` gives backslashes a meaning; escape them.
  pronoun = tf.strings.regex_replace(pronoun, r"\\", r"\\\\")
  rewrite = tf.strings.join([" *", pronoun, "* "])
  return tf.strings.regex_replace(blanked, " X ", rewrite)


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
  if benchmark in CLASSIFICATION_BENCHMARKS + DIAGNOSTIC_BENCHMARKS:
    return _classification(benchmark, prefix)
  raise ValueError(f"Unknown SuperGLUE benchmark {benchmark!r}.")
