"""Whether a task or mixture can serve a split: local files, TFDS (prepared,
or a download host that answers), text files, file patterns."""

import time

import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from helpers import RTE, shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import availability
from prompt_tuning.data import glue
from prompt_tuning.data import locations
from prompt_tuning.data import network
from prompt_tuning.data import super_glue
from prompt_tuning.data import testing
from prompt_tuning.data import vocab
from test_data_network import FAST_S, closed_port, listening_socket

MIXTURE = super_glue.mixture_name()


@pytest.fixture(autouse=True)
def _no_offline(monkeypatch):
  monkeypatch.delenv(network.OFFLINE_ENV, raising=False)


@pytest.fixture
def empty_tfds(monkeypatch, tmp_path):
  """No local directories; an empty TFDS data directory."""
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  monkeypatch.delenv(locations.SUPER_GLUE_DIR_ENV, raising=False)
  monkeypatch.delenv(locations.GLUE_DIR_ENV, raising=False)
  monkeypatch.setenv(locations.TFDS_DATA_DIR_ENV, str(data_dir))
  return data_dir


def test_local_splits_are_available(local_super_glue):
  del local_super_glue
  availability.check_split_available(RTE, "train")
  availability.check_split_available(RTE, "test")
  availability.check_split_available(super_glue.task_name("axb"), "test")
  availability.check_split_available(super_glue.task_name("axg", False), "test")


def test_missing_local_split_names_the_file(local_super_glue, monkeypatch):
  del local_super_glue
  boolq = super_glue.task_name("boolq")
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl") as e:
    availability.check_split_available(boolq, "train")
  assert "official release layout" in str(e.value)
  assert f"unsetting {locations.SUPER_GLUE_DIR_ENV}" in str(e.value)
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    availability.check_split_available(MIXTURE, "train")
  monkeypatch.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "fewglue")))
  availability.check_split_available(MIXTURE, "train")
  with pytest.raises(FileNotFoundError, match=r"ReCoRD[/\\]val\.jsonl"):
    availability.check_split_available(MIXTURE, "validation")


def test_unknown_split_lists_the_splits(local_super_glue):
  del local_super_glue
  with pytest.raises(ValueError, match=r"\['test'\]"):
    availability.check_split_available(super_glue.task_name("axb"), "train")
  with pytest.raises(ValueError, match="dev32") as error:
    availability.check_split_available(MIXTURE, "dev32")
  assert "'train', 'validation'" in str(error.value)


def test_local_mrpc_files(monkeypatch, tmp_path):
  mrpc = glue.task_name("mrpc")
  monkeypatch.setenv(locations.GLUE_DIR_ENV, str(shared_path("data", "glue")))
  for split in ("train", "validation", "test"):
    availability.check_split_available(mrpc, split)
  (tmp_path / "MRPC").mkdir()
  monkeypatch.setenv(locations.GLUE_DIR_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="msr_paraphrase_train.txt"):
    availability.check_split_available(mrpc, "train")


def test_offline_without_data_fails_at_once_and_writes_nothing(
    empty_tfds, monkeypatch):
  monkeypatch.setenv(network.OFFLINE_ENV, "1")
  start = time.monotonic()
  with pytest.raises(network.DataUnavailableError) as error:
    availability.check_split_available(RTE, "train")
  assert time.monotonic() - start < FAST_S
  message = str(error.value)
  for part in (locations.SUPER_GLUE_DIR_ENV,
               "prompt_tuning.data.locations.super_glue_dir.path",
               locations.TFDS_DATA_DIR_ENV,
               "prompt_tuning.data.locations.tfds_data_dir.path",
               network.OFFLINE_ENV, "super_glue/rte:1.0.2", str(empty_tfds)):
    assert part in message, (part, message)
  with pytest.raises(network.DataUnavailableError,
                     match=locations.GLUE_DIR_ENV):
    availability.check_split_available(glue.task_name("mrpc"), "validation")
  with pytest.raises(network.DataUnavailableError) as error:
    availability.check_split_available("mrqa_squad_v100", "train")
  assert locations.TFDS_DATA_DIR_ENV in str(error.value)
  assert "SUPER_GLUE" not in str(error.value)
  assert not list(empty_tfds.rglob("*"))


def test_network_probe_gives_up_within_seconds(empty_tfds):
  # Without PROMPT_TUNING_OFFLINE the download host is probed for real: here
  # (no internet) that fails, elsewhere it may pass; it never hangs.
  start = time.monotonic()
  try:
    availability.check_split_available(RTE, "train")
  except network.DataUnavailableError as e:
    assert locations.SUPER_GLUE_DIR_ENV in str(e)
    assert "dl.fbaipublicfiles.com" in str(e)
  assert time.monotonic() - start < network.PROBE_TIMEOUT_S + FAST_S
  assert not list(empty_tfds.rglob("*"))


def test_reachable_download_host_passes(empty_tfds, monkeypatch):
  server = listening_socket()
  try:
    address = "127.0.0.1:%d" % server.getsockname()[1]
    monkeypatch.setattr(availability, "_download_hosts",
                        lambda builder: [address])
    availability.check_split_available(RTE, "train")
    # A mixture probes each host once, not once per task.
    probes = []
    probe = network.unreachable_hosts
    monkeypatch.setattr(network, "unreachable_hosts",
                        lambda hosts: probes.append(hosts) or probe(hosts))
    availability.check_split_available(MIXTURE, "train")
    assert probes == [[address]]
    monkeypatch.setattr(availability, "_download_hosts",
                        lambda builder: [f"127.0.0.1:{closed_port()}"])
    with pytest.raises(network.DataUnavailableError, match="Connection"):
      availability.check_split_available(RTE, "train")
  finally:
    server.close()
  assert not list(empty_tfds.rglob("*"))


def test_download_hosts_come_from_the_tfds_builders(empty_tfds):
  # pylint: disable-next=protected-access
  hosts = {name: availability._download_hosts(
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
  monkeypatch.setenv(network.OFFLINE_ENV, "1")
  cb = super_glue.task_name("cb")
  for split in ("train", "validation", "test"):
    availability.check_split_available(cb, split)
  with pytest.raises(network.DataUnavailableError):
    availability.check_split_available(RTE, "train")


def test_unprobed_sources_and_file_patterns(tmp_path):
  function_task = "availability_test_function_task"
  lines_task = "availability_test_text_line_task"
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
    availability.check_split_available(function_task, "train")
    with pytest.raises(ValueError, match=r"\['train'\]"):
      availability.check_split_available(function_task, "validation")
    availability.check_split_available(lines_task, "train")
    with pytest.raises(FileNotFoundError, match="missing"):
      availability.check_split_available(lines_task, "test")
  finally:
    seqio.TaskRegistry.remove(function_task)
    seqio.TaskRegistry.remove(lines_task)
