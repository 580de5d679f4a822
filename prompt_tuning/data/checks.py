"""Fast pre-flight checks of the data a run needs, before any model loads.

A training or evaluation run should learn in seconds, not after loading a
model and compiling a step, that its data cannot be read. Every check here
reads at most a few small things (file existence, TFDS metadata, the
vocabulary file) and never downloads anything:

* `check_split_available`: each task of a task/mixture can serve a split, from
  its local files (they exist) or from TFDS (the dataset is already prepared,
  or its download host answers a short connect probe).
* `check_vocabulary`: the configured SentencePiece model exists and loads, or
  its remote host answers.
* `label_strings` / `longest_target`: the fixed label strings of the closed
  label-set tasks and the longest of them in tokens, e.g. to size
  `TASK_FEATURE_LENGTHS['targets']` or a class-label prompt initialiser.
* `truncation_report`: how many examples of a split are longer than the
  feature lengths (and hence truncated), counted exactly as `get_dataset`
  tokenises them.

Failures that a user fixes by pointing a setting elsewhere raise
`DataUnavailableError`, whose message names the problem and the setting (the
environment variable and the gin binding). With `PROMPT_TUNING_OFFLINE=1` no
network probe is made: whatever would need a download fails at once.
"""

import collections
import dataclasses
import functools
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning import errors
from prompt_tuning.data import glue
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import locations
from prompt_tuning.data import postprocessors
from prompt_tuning.data import rank_classification
from prompt_tuning.data import sources
from prompt_tuning.data import super_glue
from prompt_tuning.data import text_files
from prompt_tuning.data import vocab

OFFLINE_ENV = "PROMPT_TUNING_OFFLINE"
PROBE_TIMEOUT_S = 3.0
VOCAB_GIN_BINDING = "prompt_tuning.data.vocab.vocabulary_path.path"

# Where remote file systems live, for the connect probe.
_REMOTE_HOSTS = {
    "gs": "storage.googleapis.com",
    "s3": "s3.amazonaws.com",
}
# Probed when a TFDS builder names no download URL we can find.
_FALLBACK_DOWNLOAD_HOST = "storage.googleapis.com"
_TRUE_STRINGS = ("1", "true", "yes", "on")


class DataUnavailableError(errors.ConfigError, RuntimeError):
  """Data or vocabulary cannot be read here; the message says how to fix it."""


def offline() -> bool:
  """Whether `PROMPT_TUNING_OFFLINE` forbids network probes (and downloads)."""
  return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE_STRINGS


# ------------------------------------------------------------------ network.


def _split_host(address: str) -> tuple[str, int]:
  """`host` or `host:port` (default 443) -> (host, port)."""
  host, sep, port = address.rpartition(":")
  if sep and port.isdigit() and "]" not in port:
    return host.strip("[]"), int(port)
  return address.strip("[]"), 443


def _proxy_for(host: str) -> Optional[tuple[str, int]]:
  """The HTTPS proxy a download to `host` would go through, if any."""
  proxy = urllib.request.getproxies().get("https")
  if not proxy or urllib.request.proxy_bypass(host):
    return None
  parsed = urllib.parse.urlparse(proxy if "://" in proxy else
                                 f"http://{proxy}")
  if not parsed.hostname:
    return None
  return parsed.hostname, parsed.port or 80


def _connect(host: str, port: int, timeout_s: float) -> None:
  """Opens (and closes) a TCP connection to host:port, maybe via a proxy.

  Raises:
    OSError: the host (or the proxy's tunnel to it) cannot be reached.
  """
  proxy = _proxy_for(host)
  if proxy is None:
    socket.create_connection((host, port), timeout=timeout_s).close()
    return
  with socket.create_connection(proxy, timeout=timeout_s) as sock:
    sock.settimeout(timeout_s)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}"
                 "\r\n\r\n".encode("ascii"))
    status = sock.recv(1024).split(b"\r\n", 1)[0].decode("latin-1")
  parts = status.split()
  code = parts[1] if len(parts) > 1 else ""
  # 407: the proxy wants credentials, which the download client may have.
  if not (code.startswith("2") or code == "407"):
    raise OSError(f"proxy {proxy[0]}:{proxy[1]} answered {status!r} to "
                  f"CONNECT {host}:{port}")


def unreachable_hosts(hosts: Iterable[str],
                      timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str]:
  """Probes hosts in parallel with a TCP connect; returns the failures.

  The whole probe takes at most about `timeout_s`, also when name resolution
  hangs (each connect runs in a daemon thread that is abandoned at the
  deadline). An HTTPS proxy from the environment is used as downloads would.

  Args:
    hosts: `host` or `host:port` (port 443 by default).
    timeout_s: the deadline for all probes together.

  Returns:
    `{host: reason}` for each host that did not answer; empty if all did.
  """
  hosts = list(dict.fromkeys(hosts))
  results: dict[str, Optional[str]] = {}

  def probe(address: str) -> None:
    try:
      _connect(*_split_host(address), timeout_s)
      results[address] = None
    except Exception as e:  # pylint: disable=broad-except
      # Any failure means "not reachable"; a probe thread never raises.
      results[address] = f"{type(e).__name__}: {e}"

  threads = []
  for address in hosts:
    thread = threading.Thread(target=probe, args=(address,), daemon=True,
                              name=f"probe-{address}")
    thread.start()
    threads.append(thread)
  deadline = time.monotonic() + timeout_s
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  answered = dict(results)  # Late answers are ignored.
  failures = {}
  for address in hosts:
    if address not in answered:
      failures[address] = f"no answer within {timeout_s:g} s"
    elif answered[address] is not None:
      failures[address] = answered[address]
  return failures


def _remote_host(path: str) -> Optional[str]:
  """The host behind a remote path (`gs://b/x` -> GCS), None if local."""
  if "://" not in path:
    return None
  parsed = urllib.parse.urlparse(path)
  scheme = parsed.scheme.lower()
  if scheme in ("", "file"):
    return None
  if scheme in _REMOTE_HOSTS:
    return _REMOTE_HOSTS[scheme]
  if parsed.hostname:
    port = parsed.port or (80 if scheme == "http" else 443)
    return parsed.hostname if port == 443 else f"{parsed.hostname}:{port}"
  return None


def _require_network(hosts: Sequence[str], what: str, fix: str,
                     probed: Optional[dict[str, Optional[str]]] = None
                     ) -> None:
  """Raises DataUnavailableError unless offline is off and all hosts answer.

  Args:
    hosts: to probe.
    what: the first part of the error message.
    fix: the last part, what to set instead.
    probed: earlier results (`{host: reason or None}`) to reuse and extend,
      so that a mixture probes each host once.
  """
  if offline():
    raise DataUnavailableError(
        f"{what}, and {OFFLINE_ENV}=1 forbids the network ({', '.join(hosts)} "
        f"not probed). {fix}")
  probed = {} if probed is None else probed
  new = [h for h in hosts if h not in probed]
  if new:
    found = unreachable_hosts(new)
    probed.update({h: found.get(h) for h in new})
  failures = {h: probed[h] for h in hosts if probed[h] is not None}
  if failures:
    reasons = "; ".join(f"{h}: {r}" for h, r in failures.items())
    raise DataUnavailableError(
        f"{what}, and the network cannot reach it ({reasons}). {fix}")


# ------------------------------------------------------------ split checks.


def _tasks(mixture_or_task_name: str) -> list[seqio.Task]:
  """The leaf tasks of a registered task or mixture."""
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  if isinstance(provider, seqio.Mixture):
    return list(provider.tasks)
  return [provider]


def _tasks_with_split(mixture_or_task_name: str,
                      split: str) -> list[seqio.Task]:
  """The tasks that have `split` (as a mixture reads them: others skipped).

  Raises:
    ValueError: no task has the split; lists each task's splits.
  """
  tasks = _tasks(mixture_or_task_name)
  having = [t for t in tasks if split in t.splits]
  if not having:
    listed = "; ".join(f"{t.name}: {sorted(t.splits)}" for t in tasks)
    raise ValueError(f"{mixture_or_task_name} has no split {split!r}. "
                     f"Splits: {listed}.")
  return having


def _download_urls(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Download URLs a TFDS builder names (its config's, else its module's)."""
  config = builder.builder_config
  url = getattr(config, "data_url", "") if config is not None else ""
  if isinstance(url, str) and url.startswith(("http://", "https://")):
    return [url]
  urls = []
  module = sys.modules.get(type(builder).__module__)
  for name, value in (vars(module).items() if module else ()):
    upper = name.upper()
    if "HOMEPAGE" in upper or "CITATION" in upper:
      continue
    if isinstance(value, Mapping):
      if "URL" not in upper:  # e.g. builder kwargs, with homepage URLs.
        continue
      values = value.values()
    else:
      values = [value]
    urls.extend(v for v in values
                if isinstance(v, str) and v.startswith(("http://",
                                                        "https://")))
  return urls


def _download_hosts(builder: tfds.core.DatasetBuilder) -> list[str]:
  hosts = {_remote_host(url) for url in _download_urls(builder)}
  hosts.discard(None)
  return sorted(hosts) or [_FALLBACK_DOWNLOAD_HOST]


def _tfds_fix(task: seqio.Task, source: sources.TfdsOrLocalSource) -> str:
  """What a user can set to get this task's data without a download."""
  data_dir = locations.setting_of(locations.tfds_data_dir)
  options = []
  if source.local is not None:
    local = locations.setting_of(source.local.directory)
    if local is not None:
      options.append(f"point {local.hint()} at a local copy of the files")
  options.append(f"point {data_dir.hint()} at a TFDS data directory where "
                 f"{source.tfds_name} is prepared")
  if offline():
    options.append(f"or unset {OFFLINE_ENV} where the network is reachable "
                   "so that TFDS can download it")
  else:
    options.append("or run where the network is reachable so that TFDS can "
                   "download it")
  return f"To run {task.name}: " + "; ".join(options) + "."


def _check_tfds(task: seqio.Task, source: sources.TfdsOrLocalSource,
                split: str, probed: dict[str, Optional[str]]) -> None:
  """The TFDS dataset is prepared, or could be downloaded (probe)."""
  data_dir = source.tfds_data_dir()
  shown_dir = data_dir or f"TFDS's default ({tfds.core.constants.DATA_DIR})"
  fix = _tfds_fix(task, source)
  remote = _remote_host(data_dir) if data_dir else None
  if remote:
    _require_network([remote],
                     f"The TFDS data directory {data_dir} is remote", fix,
                     probed)
  builder = tfds.builder(source.tfds_name, data_dir=data_dir)
  tfds_split = source.tfds_split(split)
  if builder.is_prepared():
    available = builder.info.splits
    if tfds_split not in available:
      raise DataUnavailableError(
          f"TFDS {source.tfds_name} in {shown_dir} has no split "
          f"{tfds_split!r} (it has {sorted(available)}), needed by "
          f"{task.name}/{split}. {fix}")
    return
  if isinstance(builder, tfds.core.BeamBasedBuilder):
    # No download can help: TFDS builds it with an Apache Beam pipeline
    # (c4: from Common Crawl, hundreds of GB), never on first use.
    raise DataUnavailableError(
        f"{task.name}/{split} reads TFDS {source.tfds_name}, which is not "
        f"prepared in {shown_dir}; TFDS cannot prepare it on first use (it "
        "is built by an Apache Beam pipeline, see the TFDS catalog). Build "
        f"it with `tfds build {source.tfds_name.split(':')[0]}` and Beam, "
        f"then point {locations.setting_of(locations.tfds_data_dir).hint()} "
        "at that data directory; or pretrain on local text files instead "
        "(PROMPT_TUNING_TEXT_FILES and the text_* tasks, see "
        "prompt_tuning.tasks.pretraining).")
  hosts = _download_hosts(builder)
  _require_network(
      hosts,
      f"{task.name}/{split} reads TFDS {source.tfds_name}, which is not "
      f"prepared in {shown_dir} and would have to be downloaded from "
      f"{', '.join(hosts)}", fix, probed)


def _check_file_source(task: seqio.Task, source: seqio.FileDataSource,
                       split: str) -> None:
  """Local file patterns match at least one file (remote ones: unchecked)."""
  patterns = getattr(source, "_split_to_filepattern", {}).get(split)
  if patterns is None:
    return
  if isinstance(patterns, str):
    patterns = [patterns]
  for pattern in patterns:
    if _remote_host(pattern):
      continue
    if not tf.io.gfile.glob(pattern):
      raise FileNotFoundError(f"No file matches {pattern}, the {split!r} "
                              f"split of {task.name}.")


def check_split_available(mixture_or_task_name: str, split: str) -> None:
  """Checks, within seconds, that every task can serve `split`.

  Tasks of a mixture that lack the split are skipped, as the mixture's
  `get_dataset` skips them. For each remaining task:

  * a local directory configured (`PROMPT_TUNING_SUPER_GLUE_DIR`,
    `PROMPT_TUNING_GLUE_DIR` or their gin bindings in
    `prompt_tuning.data.locations`): the split's files exist;
  * TFDS: the dataset is prepared in the TFDS data directory, or else a short
    connect probe (`PROBE_TIMEOUT_S`) reaches its download host(s), so that a
    download could work. `PROMPT_TUNING_OFFLINE=1` skips the probe and fails
    at once; a dataset TFDS builds with Apache Beam (c4) fails at once
    unless prepared;
  * local text files (`text_files.TextFilesSource`): every file is read once
    and must parse (a bad JSON line is named with its line number);
  * other sources: local file patterns must match; anything else is
    accepted as it is.

  Nothing is downloaded or written.

  Args:
    mixture_or_task_name: a registered task or mixture.
    split: e.g. `train`.

  Raises:
    ValueError: no task has `split` (the message lists their splits).
    FileNotFoundError: a local file is missing (named, with the layout).
    DataUnavailableError: a TFDS dataset is not prepared and cannot be
      downloaded; names the environment variable and gin binding to set.
  """
  probed: dict[str, Optional[str]] = {}
  for task in _tasks_with_split(mixture_or_task_name, split):
    source = task.source
    if isinstance(source, sources.TfdsOrLocalSource):
      root = source.local_dir()
      if root:
        files = getattr(source.local.reader, "files", None)
        if files is not None:
          files(root, split)
      else:
        _check_tfds(task, source, split, probed)
    elif isinstance(source, text_files.TextFilesSource):
      source.check(split)
    elif isinstance(source, seqio.FileDataSource):
      _check_file_source(task, source, split)


# -------------------------------------------------------------- vocabulary.


def _vocabulary_fix() -> str:
  return (f"Set {vocab.VOCAB_ENV} (or the gin binding {VOCAB_GIN_BINDING}) "
          "to a local SentencePiece model file, or to a model directory "
          "holding spiece.model.")


def check_vocabulary(path: Optional[str] = None) -> str:
  """Checks, within seconds, that the SentencePiece vocabulary is reachable.

  Args:
    path: the vocabulary to check; None checks the configured one
      (`prompt_tuning.data.vocab.vocabulary_path()`: the gin binding, else
      `PROMPT_TUNING_VOCAB`, else T5's public model on GCS).

  Returns:
    The resolved model file (a directory is mapped to its `spiece.model`).

  Raises:
    DataUnavailableError: a local file is missing or is not a SentencePiece
      model, or a remote one's host does not answer a short probe (or
      `PROMPT_TUNING_OFFLINE=1`); names `PROMPT_TUNING_VOCAB` and the gin
      binding.
  """
  setting = os.fspath(path) if path else vocab.vocabulary_path()
  host = _remote_host(setting)
  if host:
    _require_network([host], f"The vocabulary {setting} is remote",
                     _vocabulary_fix())
    if setting.endswith(".model"):
      return setting
    return vocab.resolve_model_file(setting)
  model_file = vocab.resolve_model_file(setting)
  if not tf.io.gfile.exists(model_file):
    raise DataUnavailableError(
        f"The vocabulary file {model_file} does not exist. "
        f"{_vocabulary_fix()}")
  try:
    with tf.io.gfile.GFile(model_file, "rb") as f:
      spm.SentencePieceProcessor(model_proto=f.read())
  except Exception as e:  # pylint: disable=broad-except
    raise DataUnavailableError(
        f"The vocabulary file {model_file} is not a SentencePiece model "
        f"({type(e).__name__}: {e}). {_vocabulary_fix()}") from e
  return model_file


# ------------------------------------------------------------------ labels.

# Owners of each task family's label strings, consulted in order.
_LABEL_TABLES: tuple[Mapping[str, tuple[str, ...]], ...] = (
    super_glue.LABELS, glue.LABELS, glue_tasks.LABELS,
    rank_classification.LABELS)


def _task_labels(task: seqio.Task) -> tuple[str, ...]:
  """A task's fixed target strings; empty when its targets are free text."""
  for table in _LABEL_TABLES:
    if task.name in table:
      return tuple(table[task.name])
  postprocess_fn = getattr(task, "postprocessor", None)
  if (isinstance(postprocess_fn, functools.partial)
      and postprocess_fn.func is postprocessors.class_id):
    return tuple(postprocess_fn.keywords.get("class_names", ()))
  return ()


def label_strings(
    mixture_or_task_name: str) -> Optional[dict[str, tuple[str, ...]]]:
  """The fixed target strings of each closed label-set task.

  Labels come from their owners (`super_glue.LABELS`, `glue.LABELS`,
  `glue_tasks.LABELS`), else
  from a task's `postprocessors.class_id` class names. Open-ended tasks
  (ReCoRD, WSC's simple form, MRQA) are left out.

  Args:
    mixture_or_task_name: a registered task or mixture.

  Returns:
    `{task name: labels}` in class-id order, or None if no task of it has a
    closed label set.
  """
  labels = {}
  for task in _tasks(mixture_or_task_name):
    task_labels = _task_labels(task)
    if task_labels:
      labels[task.name] = task_labels
  return labels or None


def _targets_feature(task: seqio.Task) -> seqio.Feature:
  return task.output_features["targets"]


def longest_target(mixture_or_task_name: str) -> Optional[tuple[str, str,
                                                                 int]]:
  """The longest label string of the closed label-set tasks, in tokens.

  Each label is tokenised with its task's own `targets` vocabulary; the count
  includes EOS when the feature appends it. Loads the vocabulary (see
  `check_vocabulary`).

  Args:
    mixture_or_task_name: a registered task or mixture.

  Returns:
    `(task name, label, token count)` of the longest label (the first one
    found on ties), or None if no task has a closed label set.
  """
  labels = label_strings(mixture_or_task_name)
  if not labels:
    return None
  best = None
  tasks = {t.name: t for t in _tasks(mixture_or_task_name)}
  for name, task_labels in labels.items():
    feature = _targets_feature(tasks[name])
    for label in task_labels:
      count = len(feature.vocabulary.encode(label)) + int(feature.add_eos)
      if best is None or count > best[2]:
        best = (name, label, count)
  return best


# -------------------------------------------------------------- truncation.


@dataclasses.dataclass
class LengthReport:
  """How many examples of a split exceed one feature's length.

  Attributes:
    feature: e.g. `inputs`.
    length: the feature length checked against.
    num_examples: examples counted.
    num_truncated: examples longer than `length` (with EOS), which training
      and evaluation truncate.
    longest: the longest example, in tokens with EOS (0 if none).
    name: the task or mixture counted.
    split: the split counted.
  """
  feature: str
  length: int
  num_examples: int
  num_truncated: int
  longest: int
  name: str = ""
  split: str = ""

  @property
  def fraction_truncated(self) -> float:
    return self.num_truncated / self.num_examples if self.num_examples else 0.

  def message(self) -> str:
    """A one-line summary, with the fix when examples are truncated."""
    where = f"{self.name}/{self.split}" if self.name else "the data"
    if not self.num_truncated:
      return (f"{self.feature}: all {self.num_examples} examples of {where} "
              f"fit in {self.length} tokens (longest {self.longest}).")
    return (f"{self.feature}: {self.num_truncated} of {self.num_examples} "
            f"examples ({100 * self.fraction_truncated:.2f}%) of {where} are "
            f"longer than {self.length} tokens (longest {self.longest}) and "
            f"are truncated; raise TASK_FEATURE_LENGTHS['{self.feature}'] to "
            "keep them.")


_LENGTH_BATCH = 1024
# Steps that may follow tokenisation without changing untrimmed lengths
# (besides the EOS the feature's `add_eos` asks for).
_EOS_STEPS = (seqio.preprocessors.append_eos_after_trim,
              seqio.preprocessors.append_eos)


def _text_steps(task: seqio.Task) -> Optional[list]:
  """The preprocessors before tokenisation, if the tail is T5's standard one.

  Returns None unless the pipeline is `text steps..., tokenize, [cache
  placeholder], append EOS` with scalar string features to tokenise; only
  then can the lengths be counted from the text in batches.
  """
  steps = list(task.preprocessors)
  positions = [i for i, p in enumerate(steps)
               if p is seqio.preprocessors.tokenize]
  if len(positions) != 1:
    return None
  tail = steps[positions[0] + 1:]
  if not all(isinstance(p, seqio.CacheDatasetPlaceholder) or p in _EOS_STEPS
             for p in tail):
    return None
  if sum(p in _EOS_STEPS for p in tail) > 1:
    return None
  return steps[:positions[0]]


def _preprocessed_text(task: seqio.Task, split: str,
                       steps: Sequence) -> tf.data.Dataset:
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for step in steps:
    dataset = seqio.utils.add_kwargs_to_transform(
        step, sequence_length=None,
        output_features=task.output_features)(dataset)
  return dataset


def _batched_lengths(task: seqio.Task, dataset: tf.data.Dataset,
                     features: Sequence[str]) -> tf.data.Dataset:
  """Batches of token counts (with EOS) of string features, tokenised here."""

  def lengths(batch):
    counts = {}
    for feature in features:
      spec = task.output_features[feature]
      tokens = spec.vocabulary.encode_tf(batch[feature])
      if isinstance(tokens, tf.RaggedTensor):
        count = tokens.row_lengths()
      else:
        count = tf.fill(tf.shape(tokens)[:1], tf.shape(tokens, tf.int64)[1])
      counts[feature] = count + int(spec.add_eos)
    return counts

  only_features = dataset.map(lambda x: {f: x[f] for f in features})
  return only_features.batch(_LENGTH_BATCH).map(lengths)


def _untrimmed_dataset(task: seqio.Task, split: str,
                       sequence_length: Optional[Mapping[str, int]]
                       ) -> tf.data.Dataset:
  """`split` through all of the task's steps, in file order, untrimmed.

  Steps that size their output by the feature lengths (span corruption,
  prefix LM) get `sequence_length`; the EOS steps get None, so they append
  EOS without trimming anything.
  """
  dataset = task.source.get_dataset(split=split, shuffle=False)
  with seqio.utils.map_seed_manager(0):
    for step in task.preprocessors:
      if isinstance(step, seqio.CacheDatasetPlaceholder):
        continue
      dataset = seqio.utils.add_kwargs_to_transform(
          step, sequence_length=None if step in _EOS_STEPS else
          sequence_length, output_features=task.output_features)(dataset)
  return dataset


def _token_lengths(task: seqio.Task, split: str, features: Sequence[str],
                   max_examples: Optional[int],
                   fast: bool = True,
                   sequence_length: Optional[Mapping[str, int]] = None
                   ) -> dict[str, np.ndarray]:
  """Token counts (with EOS) of each feature of the first examples.

  The standard T5 pipeline is counted fast: its text steps run as usual and
  the text is tokenised in batches by the same vocabulary (giving the ids
  `get_dataset` gives). Any other pipeline, or `fast=False`, runs all of the
  task's steps (`_untrimmed_dataset`, with `sequence_length` for the steps
  that need it, e.g. pretraining objectives).
  """
  steps = _text_steps(task) if fast else None
  dataset = None
  if steps is not None:
    dataset = _preprocessed_text(task, split, steps)
    if not all(f in dataset.element_spec
               and dataset.element_spec[f].dtype == tf.string
               and dataset.element_spec[f].shape.rank == 0
               for f in features):
      dataset = None
  if dataset is not None:
    if max_examples is not None:
      dataset = dataset.take(max_examples)
    dataset = _batched_lengths(task, dataset, features)
  else:
    dataset = _untrimmed_dataset(task, split, sequence_length)
    if max_examples is not None:
      dataset = dataset.take(max_examples)
    dataset = dataset.map(
        lambda x: {f: tf.size(x[f], out_type=tf.int64) for f in features},
        num_parallel_calls=tf.data.AUTOTUNE).batch(_LENGTH_BATCH)
  lengths = collections.defaultdict(list)
  for batch in dataset.as_numpy_iterator():
    for feature in features:
      lengths[feature].append(batch[feature])
  return {f: (np.concatenate(lengths[f]) if lengths[f]
              else np.zeros([0], np.int64)) for f in features}


def truncation_report(mixture_or_task_name: str, split: str,
                      feature_lengths: Mapping[str, int],
                      max_examples: int = 5000) -> list[LengthReport]:
  """Counts the examples that `feature_lengths` would truncate.

  Lengths are those `get_dataset` produces before trimming: tokenised by the
  task's vocabulary, with EOS (a step that sizes its output by the lengths,
  like span corruption, runs with `feature_lengths`, so it needs those it
  reads). The first `max_examples` examples (file order)
  of every task of the task/mixture that has `split` are counted together.
  Runs `check_split_available` first, so it never triggers a download.

  Args:
    mixture_or_task_name: a registered task or mixture.
    split: e.g. `train`.
    feature_lengths: e.g. `{"inputs": 512, "targets": 8}`.
    max_examples: per task; None counts all.

  Returns:
    One report per feature of `feature_lengths`, in its order.

  Raises:
    ValueError: a feature is not one of a task's output features, or no
      task has `split`.
  """
  check_split_available(mixture_or_task_name, split)
  features = list(feature_lengths)
  all_lengths: dict[str, list[np.ndarray]] = {f: [] for f in features}
  for task in _tasks_with_split(mixture_or_task_name, split):
    unknown = [f for f in features if f not in task.output_features]
    if unknown:
      raise ValueError(f"{task.name} has no feature(s) {unknown}; it has "
                       f"{sorted(task.output_features)}.")
    for feature, lengths in _token_lengths(
        task, split, features, max_examples,
        sequence_length=dict(feature_lengths)).items():
      all_lengths[feature].append(lengths)
  reports = []
  for feature in features:
    lengths = np.concatenate(all_lengths[feature])
    length = int(feature_lengths[feature])
    reports.append(LengthReport(
        feature=feature,
        length=length,
        num_examples=int(lengths.size),
        num_truncated=int(np.sum(lengths > length)),
        longest=int(lengths.max()) if lengths.size else 0,
        name=mixture_or_task_name,
        split=split,
    ))
  return reports
