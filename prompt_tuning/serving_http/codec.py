"""A served task's requests in and answers out, through its own SeqIO pipeline.

A request names a task and gives either its raw fields (what the task's data
source yields, e.g. RTE's `premise` and `hypothesis`) or ready `inputs` text:

  fields  -> the task's preprocessors (text formatting, tokenisation, EOS)
             -> encoder tokens `[n]` and the preprocessed example;
  inputs  -> the task's `inputs` vocabulary (+ EOS) -> encoder tokens `[n]`.

Decoded tokens go back through the task's postprocessor (with the example,
as SeqIO's evaluator calls it), so a fields request is answered with the
task's label. Rank classification scores the task's label strings
(`data.labels.task_labels`) as candidate targets `[c, t]`.

Errors are `ApiError`s carrying the HTTP status and a message naming the
problem and the fix.
"""

import dataclasses
import threading
from typing import Any, Callable, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.analysis import task_examples as task_lib
from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import super_glue_schema
from prompt_tuning.training import data
from prompt_tuning.training import inference

# Raw fields a request may leave out, with the value an unlabelled (test)
# example has; every other field of the task's source is required.
DEFAULTED_FIELDS = ("idx", "label")


class ApiError(Exception):
  """A request the server refuses: an HTTP status and what to fix."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


@dataclasses.dataclass
class Encoded:
  """One request, ready for the model.

  Attributes:
    tokens: encoder input ids `[n]`, EOS included, no padding.
    example: the preprocessed example (`inputs_pretokenized`, ...), handed
      to the postprocessor.
  """
  tokens: np.ndarray
  example: dict[str, Any]


def source_spec(task: seqio.Task) -> Optional[Mapping[str, tf.TensorSpec]]:
  """The element spec of `task`'s raw examples
  (`TfdsOrLocalSource.raw_element_spec`), None if it is not known without
  reading data (only `inputs` requests are served then)."""
  spec = getattr(task.source, "raw_element_spec", None)
  return spec() if spec is not None else None


def _cut_inputs(max_length: int) -> dict[str, int]:
  """The pipeline's sequence lengths that cut only the inputs."""
  return {"inputs": max_length, "targets": 10 ** 6}


def _default(spec: Any, number: int) -> Any:
  """An empty value of `spec` (`number` for integer scalars)."""
  if isinstance(spec, Mapping):
    return {k: _default(v, number) for k, v in spec.items()}
  if spec.shape.rank:
    return []
  return "" if spec.dtype == tf.string else number


class TaskCodec:
  """Encodes one task's requests and decodes its answers (thread-safe).

  Attributes:
    task: the SeqIO task.
    spec: its raw examples' element spec (`source_spec`), or None.
    labels: its label strings in class-id order; empty for free text.
  """

  def __init__(self, task_name: str):
    task = data.get_task(task_name)
    if isinstance(task, seqio.Mixture):
      raise ApiError(400, f"{task_name} is a mixture; serve each of its tasks "
                     f"({[t.name for t in task.tasks]}) with its own prompt.")
    self.task = task
    self.spec = source_spec(task)
    self.labels = labels_lib.task_labels(task)
    self._lock = threading.Lock()  # Pipelines traced one at a time.
    self._pipelines = {}
    self._candidates: dict[int, np.ndarray] = {}

  @property
  def name(self) -> str:
    return self.task.name

  @property
  def fields(self) -> list[str]:
    """The raw fields a request must give (empty: `inputs` only)."""
    return sorted(k for k in self.spec or () if k not in DEFAULTED_FIELDS)

  def warm(self, max_length: int) -> None:
    """Traces the fields pipelines, untruncated and cut to `max_length`
    (a second on the first request of each else)."""
    if self.spec is None:
      return
    empty = {k: _default(v, 0) for k, v in self.spec.items()}
    for lengths in (None, _cut_inputs(max_length)):
      try:
        self._preprocess(empty, lengths)
      except ApiError:
        pass  # A filter dropped the empty example: traced all the same.

  def vocabulary(self, feature: str) -> seqio.Vocabulary:
    return self.task.output_features[feature].vocabulary

  def encode_inputs(self, text: str, max_length: int) -> Encoded:
    """`inputs` text -> tokens as the task's `inputs` feature makes them."""
    feature = self.task.output_features["inputs"]
    ids = list(feature.vocabulary.encode(text))
    if feature.add_eos:
      ids.append(feature.vocabulary.eos_id)
    self._check_length(len(ids), max_length, "the inputs text")
    return Encoded(np.asarray(ids, np.int32),
                   {"inputs_pretokenized": text.encode("utf-8")})

  def encode_fields(self, fields: Mapping[str, Any], max_length: int,
                    truncate: bool = False) -> Encoded:
    """Raw fields -> the task's preprocessors -> tokens.

    Args:
      fields: the raw example's fields (`fields`; `idx` and `label`
        optional).
      max_length: TASK_FEATURE_LENGTHS['inputs'].
      truncate: cut the inputs to `max_length` as the task's pipeline does
        offline, instead of refusing them.
    """
    example = self._raw_example(fields)
    lengths = _cut_inputs(max_length) if truncate else None
    row = self._preprocess(example, lengths)
    ids = np.asarray(row["inputs"], np.int32)
    self._check_length(len(ids), max_length, "the formatted inputs")
    return Encoded(ids, row)

  def candidates(self, length: int) -> np.ndarray:
    """Each label string as targets `[c, length]` (EOS included, zero
    padded), for rank classification."""
    if not self.labels:
      raise ApiError(400, f"{self.name} has no fixed label set, so rank "
                     "classification cannot score it; use mode 'greedy' or "
                     "'beam'.")
    if length in self._candidates:
      return self._candidates[length]
    feature = self.task.output_features["targets"]
    out = np.zeros((len(self.labels), length), np.int32)
    for i, label in enumerate(self.labels):
      ids = list(feature.vocabulary.encode(label))
      if feature.add_eos:
        ids.append(feature.vocabulary.eos_id)
      if len(ids) > length:
        raise ApiError(400, f"{self.name}'s label {label!r} is {len(ids)} "
                       f"tokens, longer than TASK_FEATURE_LENGTHS['targets'] "
                       f"= {length}; raise it to rank this task.")
      out[i, :len(ids)] = ids
    self._candidates[length] = out
    return out

  def answer(self, tokens: np.ndarray, example: Mapping[str, Any]
             ) -> dict[str, Any]:
    """Decoded tokens `[L]` -> `{prediction, postprocessed}`."""
    text = task_lib.decode_tokens(self.vocabulary("targets"), tokens)
    return {"prediction": text, "postprocessed": self._postprocess(text,
                                                                   example)}

  def ranked(self, scores: np.ndarray, example: Mapping[str, Any]
             ) -> dict[str, Any]:
    """Label scores `[c]` -> the best label, postprocessed, and the scores."""
    # pylint: disable-next=g-import-not-at-top
    from prompt_tuning.data import rank_classification
    best = int(rank_classification.choose(scores[None])[0])
    text = self.labels[best]
    return {"prediction": text,
            "postprocessed": self._postprocess(text, example),
            "scores": {label: float(s) for label, s in zip(self.labels,
                                                           scores)}}

  def _postprocess(self, text: str, example: Mapping[str, Any]) -> Any:
    try:
      return inference.to_json_value(task_lib.postprocess(self.task, text,
                                                          example))
    except Exception:  # pylint: disable=broad-except
      # An `inputs` request lacks the fields some postprocessors read.
      return None

  def _check_length(self, n: int, max_length: int, what: str) -> None:
    if n > max_length:
      raise ApiError(413, f"{what} of {self.name} are {n} tokens, longer than "
                     f"the feature length TASK_FEATURE_LENGTHS['inputs'] = "
                     f"{max_length}; shorten the text, or send \"truncate\": "
                     "true to cut it as the task's pipeline does offline.")

  def _raw_example(self, fields: Mapping[str, Any]) -> dict[str, Any]:
    if self.spec is None:
      raise ApiError(400, f"{self.name}'s raw fields are not known to the "
                     "server (neither local files nor TFDS's builder declare "
                     "them here); send "
                     "\"inputs\" text instead.")
    if not isinstance(fields, Mapping):
      raise ApiError(400, f"\"fields\" must be an object of {self.name}'s "
                     f"fields {self.fields}.")
    unknown = sorted(set(fields) - set(self.spec))
    if unknown:
      raise ApiError(400, f"unknown field(s) {unknown} for {self.name}; its "
                     f"fields are {self.fields} (optional: "
                     f"{list(DEFAULTED_FIELDS)}).")
    missing = [k for k in self.fields if k not in fields]
    if missing:
      raise ApiError(400, f"missing field(s) {missing} for {self.name}; it "
                     f"needs {self.fields}.")
    example = {}
    for key, spec in self.spec.items():
      if key not in fields:
        example[key] = _default(spec, 0 if key == "idx" else
                                super_glue_schema.NO_LABEL)
        continue
      example[key] = _checked_value(self.name, key, spec, fields[key])
    return example

  def _preprocess(self, example: Mapping[str, Any],
                  lengths: Optional[Mapping[str, int]]) -> dict[str, Any]:
    key = None if lengths is None else tuple(sorted(lengths.items()))
    with self._lock:
      if key not in self._pipelines:
        self._pipelines[key] = self._pipeline(lengths)
    try:
      row = self._pipelines[key](example)
    except tf.errors.InvalidArgumentError as e:
      raise ApiError(422, f"{self.name}'s preprocessors did not turn these "
                     "fields into one example (e.g. a training-only filter "
                     "dropped it); send \"inputs\" text instead.") from e
    return tf.nest.map_structure(lambda t: t.numpy(), row)

  def _pipeline(self, lengths: Optional[Mapping[str, int]]
                ) -> Callable[[Mapping[str, Any]], Mapping[str, tf.Tensor]]:
    """The task's preprocessors on one raw example, traced once (a fresh
    `tf.data` pipeline per request costs a quarter second)."""

    @tf.function(input_signature=[self.spec], autograph=False)
    def run(example):
      ds = tf.data.Dataset.from_tensors(example)
      ds = self.task.preprocess_precache(ds)
      ds = self.task.preprocess_postcache(ds, sequence_length=lengths)
      return ds.get_single_element()
    return run


def _checked_value(task: str, key: str, spec: Any, value: Any) -> Any:
  """`value` of field `key` checked against its spec; ApiError if not."""
  if isinstance(spec, Mapping):
    if not isinstance(value, Mapping) or set(value) != set(spec):
      raise ApiError(400, f"field {key!r} of {task} must be an object with "
                     f"keys {sorted(spec)}.")
    return {k: _checked_value(task, f"{key}.{k}", spec[k], v)
            for k, v in value.items()}
  want_str = spec.dtype == tf.string
  kind = str if want_str else int
  ok = (lambda v: isinstance(v, kind) and not isinstance(v, bool))
  if spec.shape.rank == 0:
    if not ok(value):
      raise ApiError(400, f"field {key!r} of {task} must be a "
                     f"{'string' if want_str else 'integer'}, got "
                     f"{type(value).__name__}.")
    return value
  if not isinstance(value, list) or not all(ok(v) for v in value):
    raise ApiError(400, f"field {key!r} of {task} must be a list of "
                   f"{'strings' if want_str else 'integers'}.")
  return value
