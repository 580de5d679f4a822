"""Pre-flight data checks, on the real shared files and an empty TFDS dir."""

import functools
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

from conftest import shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import checks
from prompt_tuning.data import glue
from prompt_tuning.data import locations
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue
from prompt_tuning.data import testing
from prompt_tuning.data import vocab

RTE = "taskless_super_glue_rte_v102"
MIXTURE = "taskless_super_glue_v102"
CLOSED_BENCHMARKS = ("boolq", "cb", "copa", "multirc", "rte", "wic", "axb",
                     "axg")
# A probe must give up quickly; leave room for a loaded test machine.
FAST_S = 5.0


@pytest.fixture(autouse=True)
def _no_offline(monkeypatch):
  monkeypatch.delenv(checks.OFFLINE_ENV, raising=False)


@pytest.fixture
def t5_spm(local_super_glue):
  """The real T5 SentencePiece model, loaded directly (not through seqio)."""
  return spm.SentencePieceProcessor(
      model_file=local_super_glue[vocab.VOCAB_ENV])


@pytest.fixture
def empty_tfds(monkeypatch, tmp_path):
  """No local directories; an empty TFDS data directory."""
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  monkeypatch.delenv(locations.SUPER_GLUE_DIR_ENV, raising=False)
  monkeypatch.delenv(locations.GLUE_DIR_ENV, raising=False)
  monkeypatch.setenv(locations.TFDS_DATA_DIR_ENV, str(data_dir))
  return data_dir


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _listening_socket():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  return server


def _closed_port() -> int:
  probe = socket.socket()
  probe.bind(("127.0.0.1", 0))
  port = probe.getsockname()[1]
  probe.close()
  return port


# ----------------------------------------------------------------- labels.


def test_rte_labels_and_longest_target(local_super_glue, t5_spm):
  del local_super_glue
  assert checks.label_strings(RTE) == {RTE: ("entailment", "not_entailment")}
  assert checks.longest_target(RTE) == (RTE, "not_entailment", 6)
  # Independently: SentencePiece pieces plus EOS.
  assert len(t5_spm.encode("not_entailment")) + 1 == 6
  assert len(t5_spm.encode("entailment")) + 1 == 5


def test_mixture_labels_leave_out_open_ended_tasks(local_super_glue, t5_spm):
  del local_super_glue
  labels = checks.label_strings(MIXTURE)
  assert set(labels) == {super_glue.task_name(b) for b in
                         ("boolq", "cb", "copa", "multirc", "rte", "wic")}
  for name, strings in labels.items():
    assert strings == super_glue.label_strings(name)  # One owner.
  lengths = {(name, label): len(t5_spm.encode(label)) + 1
             for name, strings in labels.items() for label in strings}
  task, label, count = checks.longest_target(MIXTURE)
  assert count == max(lengths.values()) == lengths[(task, label)]
  for name in (super_glue.task_name("record"),
               super_glue.task_name("wsc_simple_train"),
               super_glue.task_name("wsc_simple_eval"), "mrqa_squad_v100"):
    assert checks.label_strings(name) is None
    assert checks.longest_target(name) is None


def test_labels_of_every_closed_task_match_its_postprocessor():
  for benchmark in CLOSED_BENCHMARKS:
    for taskless in (True, False):
      name = super_glue.task_name(benchmark, taskless)
      assert checks.label_strings(name) == {
          name: super_glue.label_strings(name)}
  for config in ("qqp", "mrpc"):
    name = glue.task_name(config)
    assert checks.label_strings(name) == {name: glue.PARAPHRASE_LABELS}
  # Where a task's postprocessor maps class names to ids, the published
  # labels are those class names, in id order.
  with_class_ids = 0
  for name in seqio.TaskRegistry.names():
    fn = seqio.get_mixture_or_task(name).postprocessor
    if (isinstance(fn, functools.partial)
        and fn.func is postprocessors.class_id):
      assert checks.label_strings(name) == {
          name: tuple(fn.keywords["class_names"])}, name
      with_class_ids += 1
  assert with_class_ids >= 2 * 6 + 2  # SuperGLUE (both forms) and paraphrase.


def test_labels_from_a_class_id_postprocessor_of_an_unknown_task():
  name = "checks_test_class_id_task"
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                      splits=("train",)),
      preprocessors=[],
      output_features=vocab.output_features(),
      postprocess_fn=functools.partial(postprocessors.class_id,
                                       class_names=("no", "yes")))
  try:
    assert checks.label_strings(name) == {name: ("no", "yes")}
  finally:
    seqio.TaskRegistry.remove(name)


# ------------------------------------------------------------- truncation.


def _rte_train_lengths(t5_spm, limit=None):
  rows = _rows(shared_path("data", "super_glue", "RTE", "train.jsonl"))[:limit]
  texts = [f"hypothesis: {r['hypothesis']} premise: {r['premise']}"
           for r in rows]
  return np.array([len(ids) + 1 for ids in t5_spm.encode(texts)])


def test_rte_train_truncation_is_exact_and_fast(local_super_glue, t5_spm):
  del local_super_glue
  expected = _rte_train_lengths(t5_spm)
  assert expected.size == 2490
  start = time.monotonic()
  inputs, targets = checks.truncation_report(RTE, "train",
                                             {"inputs": 64, "targets": 8})
  elapsed = time.monotonic() - start
  assert (inputs.feature, inputs.length, inputs.num_examples) == (
      "inputs", 64, 2490)
  assert inputs.num_truncated == int(np.sum(expected > 64)) > 0
  assert inputs.longest == int(expected.max())
  assert (targets.num_truncated, targets.longest) == (0, 6)
  message = inputs.message()
  assert message.startswith(f"inputs: {inputs.num_truncated} of 2490 "
                            "examples (")
  assert f"{RTE}/train are longer than 64 tokens" in message
  assert "TASK_FEATURE_LENGTHS['inputs']" in message
  assert "fit in 8 tokens (longest 6)" in targets.message()
  assert elapsed < 30, elapsed  # Seconds, not minutes, on a busy machine.


def test_truncation_of_the_first_examples_only(local_super_glue, t5_spm):
  del local_super_glue
  expected = _rte_train_lengths(t5_spm, limit=100)
  (report,) = checks.truncation_report(RTE, "train", {"inputs": 96},
                                       max_examples=100)
  assert report.num_examples == 100
  assert report.num_truncated == int(np.sum(expected > 96))
  assert report.longest == int(expected.max())


def test_fast_count_equals_the_task_pipeline(local_super_glue):
  del local_super_glue
  # RTE; WSC, whose text steps filter; prefixed CB.
  for name, split in ((RTE, "validation"),
                      (super_glue.task_name("wsc_simple_train"), "train"),
                      (super_glue.task_name("cb", False), "validation")):
    task = seqio.get_mixture_or_task(name)
    assert checks._text_steps(task) is not None  # pylint: disable=protected-access
    fast = checks._token_lengths(  # pylint: disable=protected-access
        task, split, ["inputs", "targets"], 150)
    full = checks._token_lengths(  # pylint: disable=protected-access
        task, split, ["inputs", "targets"], 150, fast=False)
    for feature in ("inputs", "targets"):
      np.testing.assert_array_equal(fast[feature], full[feature])
  wsc = checks.truncation_report(super_glue.task_name("wsc_simple_train"),
                                 "train", {"inputs": 512})
  assert wsc[0].num_examples == 259  # Only the correct referents train.


def test_truncation_over_a_mixture(local_super_glue, monkeypatch):
  del local_super_glue
  # FewGLUE's 32-row train subsets: every task's rows are counted together.
  monkeypatch.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "fewglue")))
  inputs, = checks.truncation_report(MIXTURE, "train", {"inputs": 512})
  # 32 rows for each of 5 tasks, ReCoRD's 44 gold answers (one training
  # row each), MultiRC's 154 answer options, 32 WSC positives.
  assert inputs.num_examples == 5 * 32 + 44 + 154 + 32
  assert inputs.name == MIXTURE and inputs.num_truncated > 0
  with pytest.raises(ValueError, match="decoder_inputs"):
    checks.truncation_report(RTE, "train", {"decoder_inputs": 8})


def test_truncation_checks_availability_first(local_super_glue):
  del local_super_glue
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    checks.truncation_report(MIXTURE, "train", {"inputs": 64})


# ---------------------------------------------------- split availability.


def test_local_splits_are_available(local_super_glue):
  del local_super_glue
  checks.check_split_available(RTE, "train")
  checks.check_split_available(RTE, "test")
  checks.check_split_available(super_glue.task_name("axb"), "test")
  checks.check_split_available(super_glue.task_name("axg", False), "test")


def test_missing_local_split_names_the_file(local_super_glue, monkeypatch):
  del local_super_glue
  boolq = super_glue.task_name("boolq")
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl") as e:
    checks.check_split_available(boolq, "train")
  assert "official release layout" in str(e.value)
  assert f"unsetting {locations.SUPER_GLUE_DIR_ENV}" in str(e.value)
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    checks.check_split_available(MIXTURE, "train")
  monkeypatch.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "fewglue")))
  checks.check_split_available(MIXTURE, "train")
  with pytest.raises(FileNotFoundError, match=r"ReCoRD[/\\]val\.jsonl"):
    checks.check_split_available(MIXTURE, "validation")


def test_unknown_split_lists_the_splits(local_super_glue):
  del local_super_glue
  with pytest.raises(ValueError, match=r"\['test'\]"):
    checks.check_split_available(super_glue.task_name("axb"), "train")
  with pytest.raises(ValueError, match="dev32") as error:
    checks.check_split_available(MIXTURE, "dev32")
  assert "'train', 'validation'" in str(error.value)


def test_local_mrpc_files(monkeypatch, tmp_path):
  mrpc = glue.task_name("mrpc")
  monkeypatch.setenv(locations.GLUE_DIR_ENV, str(shared_path("data", "glue")))
  for split in ("train", "validation", "test"):
    checks.check_split_available(mrpc, split)
  (tmp_path / "MRPC").mkdir()
  monkeypatch.setenv(locations.GLUE_DIR_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="msr_paraphrase_train.txt"):
    checks.check_split_available(mrpc, "train")


def test_offline_without_data_fails_at_once_and_writes_nothing(
    empty_tfds, monkeypatch):
  monkeypatch.setenv(checks.OFFLINE_ENV, "1")
  start = time.monotonic()
  with pytest.raises(checks.DataUnavailableError) as error:
    checks.check_split_available(RTE, "train")
  assert time.monotonic() - start < FAST_S
  message = str(error.value)
  for part in (locations.SUPER_GLUE_DIR_ENV,
               "prompt_tuning.data.locations.super_glue_dir.path",
               locations.TFDS_DATA_DIR_ENV,
               "prompt_tuning.data.locations.tfds_data_dir.path",
               checks.OFFLINE_ENV, "super_glue/rte:1.0.2", str(empty_tfds)):
    assert part in message, (part, message)
  with pytest.raises(checks.DataUnavailableError, match=locations.GLUE_DIR_ENV):
    checks.check_split_available(glue.task_name("mrpc"), "validation")
  with pytest.raises(checks.DataUnavailableError) as error:
    checks.check_split_available("mrqa_squad_v100", "train")
  assert locations.TFDS_DATA_DIR_ENV in str(error.value)
  assert "SUPER_GLUE" not in str(error.value)
  assert not list(empty_tfds.rglob("*"))


def test_network_probe_gives_up_within_seconds(empty_tfds):
  # Without PROMPT_TUNING_OFFLINE the download host is probed for real: here
  # (no internet) that fails, elsewhere it may pass; it never hangs.
  start = time.monotonic()
  try:
    checks.check_split_available(RTE, "train")
  except checks.DataUnavailableError as e:
    assert locations.SUPER_GLUE_DIR_ENV in str(e)
    assert "dl.fbaipublicfiles.com" in str(e)
  assert time.monotonic() - start < checks.PROBE_TIMEOUT_S + FAST_S
  assert not list(empty_tfds.rglob("*"))


def test_reachable_download_host_passes(empty_tfds, monkeypatch):
  server = _listening_socket()
  try:
    address = "127.0.0.1:%d" % server.getsockname()[1]
    monkeypatch.setattr(checks, "_download_hosts", lambda builder: [address])
    checks.check_split_available(RTE, "train")
    # A mixture probes each host once, not once per task.
    probes = []
    probe = checks.unreachable_hosts
    monkeypatch.setattr(checks, "unreachable_hosts",
                        lambda hosts: probes.append(hosts) or probe(hosts))
    checks.check_split_available(MIXTURE, "train")
    assert probes == [[address]]
    monkeypatch.setattr(checks, "_download_hosts",
                        lambda builder: [f"127.0.0.1:{_closed_port()}"])
    with pytest.raises(checks.DataUnavailableError, match="Connection"):
      checks.check_split_available(RTE, "train")
  finally:
    server.close()
  assert not list(empty_tfds.rglob("*"))


def test_download_hosts_come_from_the_tfds_builders(empty_tfds):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  hosts = {name: checks._download_hosts(  # pylint: disable=protected-access
      tfds.builder(name, data_dir=str(empty_tfds)))
           for name in ("super_glue/rte:1.0.2", "glue/mrpc:2.0.0",
                        "mrqa/squad:1.0.0")}
  assert hosts["super_glue/rte:1.0.2"] == ["dl.fbaipublicfiles.com"]
  assert set(hosts["glue/mrpc:2.0.0"]) == {"dl.fbaipublicfiles.com",
                                           "firebasestorage.googleapis.com"}
  assert "s3.us-east-2.amazonaws.com" in hosts["mrqa/squad:1.0.0"]


def test_prepared_tfds_dataset_passes_offline(empty_tfds, monkeypatch,
                                              tmp_path):
  raw = testing.write_release_subset(shared_path("data", "super_glue"),
                                     tmp_path / "raw", rows_per_split=2,
                                     folders=("CB",))
  testing.prepare_tfds("super_glue/cb:1.0.2", empty_tfds, str(raw))
  monkeypatch.setenv(checks.OFFLINE_ENV, "1")
  cb = super_glue.task_name("cb")
  for split in ("train", "validation", "test"):
    checks.check_split_available(cb, split)
  with pytest.raises(checks.DataUnavailableError):
    checks.check_split_available(RTE, "train")


def test_unprobed_sources_and_file_patterns(tmp_path):
  function_task = "checks_test_function_task"
  lines_task = "checks_test_text_line_task"
  lines = tmp_path / "train.txt"
  lines.write_text("a\nb\n")
  seqio.TaskRegistry.add(
      function_task,
      source=seqio.FunctionDataSource(
          lambda split, shuffle_files: tf.data.Dataset.from_tensors("x"),
          splits=("train",)),
      preprocessors=[], output_features=vocab.output_features())
  seqio.TaskRegistry.add(
      lines_task,
      source=seqio.TextLineDataSource(
          {"train": str(lines), "test": str(tmp_path / "missing*.txt")}),
      preprocessors=[], output_features=vocab.output_features())
  try:
    checks.check_split_available(function_task, "train")
    with pytest.raises(ValueError, match=r"\['train'\]"):
      checks.check_split_available(function_task, "validation")
    checks.check_split_available(lines_task, "train")
    with pytest.raises(FileNotFoundError, match="missing"):
      checks.check_split_available(lines_task, "test")
  finally:
    seqio.TaskRegistry.remove(function_task)
    seqio.TaskRegistry.remove(lines_task)


def test_probe_deadline_holds_when_connect_hangs(monkeypatch):
  def hang(*args, **kwargs):
    del args, kwargs
    time.sleep(5)  # Like a name lookup that never answers in time.
    raise OSError("answered too late")

  monkeypatch.setattr(checks.socket, "create_connection", hang)
  start = time.monotonic()
  failures = checks.unreachable_hosts(["a.invalid", "b.invalid:80"],
                                      timeout_s=0.5)
  assert time.monotonic() - start < 2
  assert set(failures) == {"a.invalid", "b.invalid:80"}
  assert "no answer within 0.5 s" in failures["a.invalid"]


def test_probe_tells_open_from_closed_ports():
  server = _listening_socket()
  try:
    port = server.getsockname()[1]
    assert checks.unreachable_hosts([f"127.0.0.1:{port}"]) == {}
  finally:
    server.close()
  closed = f"127.0.0.1:{_closed_port()}"
  assert "ConnectionRefusedError" in checks.unreachable_hosts([closed])[closed]


def _fake_proxy(status_line: bytes):
  """A one-request HTTPS proxy that answers CONNECT with `status_line`."""
  server = _listening_socket()

  def serve():
    connection, _ = server.accept()
    with connection:
      request = connection.recv(1024)
      if request.startswith(b"CONNECT "):
        connection.sendall(status_line + b"\r\n\r\n")

  threading.Thread(target=serve, daemon=True).start()
  return server


def test_probe_goes_through_the_https_proxy(monkeypatch):
  for variable in ("no_proxy", "NO_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "all_proxy"):
    monkeypatch.delenv(variable, raising=False)
  for status, reachable in ((b"HTTP/1.1 200 Connection established", True),
                            (b"HTTP/1.1 403 Forbidden", False)):
    server = _fake_proxy(status)
    try:
      monkeypatch.setenv("https_proxy",
                         "http://127.0.0.1:%d" % server.getsockname()[1])
      failures = checks.unreachable_hosts(["dl.fbaipublicfiles.com"])
    finally:
      server.close()
    assert (failures == {}) == reachable, failures
    if not reachable:
      assert "403" in failures["dl.fbaipublicfiles.com"]


# ------------------------------------------------------------- vocabulary.


def test_local_vocabulary_resolves_and_loads(local_super_glue):
  model = local_super_glue[vocab.VOCAB_ENV]
  assert checks.check_vocabulary() == model
  model_dir = os.path.dirname(model)
  assert checks.check_vocabulary(model_dir) == os.path.join(model_dir,
                                                            "spiece.model")


def test_missing_or_broken_vocabulary_names_the_path(monkeypatch, tmp_path):
  missing = tmp_path / "nowhere" / "spiece.model"
  monkeypatch.setenv(vocab.VOCAB_ENV, str(missing))
  with pytest.raises(checks.DataUnavailableError) as error:
    checks.check_vocabulary()
  assert str(missing) in str(error.value)
  assert vocab.VOCAB_ENV in str(error.value)
  broken = tmp_path / "broken.model"
  broken.write_bytes(b"not a model")
  with pytest.raises(checks.DataUnavailableError,
                     match="not a SentencePiece model"):
    checks.check_vocabulary(str(broken))


def test_remote_vocabulary_offline_fails_at_once(monkeypatch):
  monkeypatch.setenv(checks.OFFLINE_ENV, "1")
  monkeypatch.delenv(vocab.VOCAB_ENV, raising=False)
  start = time.monotonic()
  with pytest.raises(checks.DataUnavailableError) as error:
    checks.check_vocabulary()  # The default: T5's public model on GCS.
  assert time.monotonic() - start < FAST_S
  message = str(error.value)
  assert vocab.DEFAULT_VOCAB_PATH in message
  assert vocab.VOCAB_ENV in message
  assert "prompt_tuning.data.vocab.vocabulary_path.path" in message
  monkeypatch.setenv(vocab.VOCAB_ENV, "gs://bucket/t5/spiece.model")
  with pytest.raises(checks.DataUnavailableError, match=vocab.VOCAB_ENV):
    checks.check_vocabulary()


def test_remote_vocabulary_probe_gives_up_within_seconds(monkeypatch):
  monkeypatch.setenv(vocab.VOCAB_ENV, vocab.DEFAULT_VOCAB_PATH)
  start = time.monotonic()
  try:
    assert checks.check_vocabulary() == vocab.DEFAULT_VOCAB_PATH
  except checks.DataUnavailableError as e:
    assert "storage.googleapis.com" in str(e)
    assert vocab.VOCAB_ENV in str(e)
  assert time.monotonic() - start < checks.PROBE_TIMEOUT_S + FAST_S
