"""GLUE tasks on the real files in ../shared/data/glue: sizes, the MRPC split
of GLUE's `dev_ids.tsv`, T5's text formats, missing-file messages, and T5's
GLUE metrics on cases small enough to check by hand."""

import csv
import time

import numpy as np
import pytest
import scipy.stats
import seqio
import tensorflow as tf

from helpers import shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.data import availability
from prompt_tuning.data import glue_files
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import network
from prompt_tuning.data import postprocessors


@pytest.fixture
def local_glue(monkeypatch):
  monkeypatch.setenv("PROMPT_TUNING_GLUE_DIR",
                     str(shared_path("data", "glue")))
  monkeypatch.setenv("PROMPT_TUNING_VOCAB",
                     str(shared_path(*locations.VOCAB_IN_SHARED)))


def texts(name: str, split: str, n: int) -> list[tuple[int, str, str]]:
  """(idx, inputs, targets) of the first n examples, file order."""
  task = seqio.get_mixture_or_task(name)
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for step in task.preprocessors[:1]:
    dataset = step(dataset)
  return [(int(x["idx"]), x["inputs"].decode(), x["targets"].decode())
          for x in dataset.take(n).as_numpy_iterator()]


def test_every_config_is_registered_both_ways():
  for benchmark in glue_tasks.BENCHMARKS:
    for taskless, name in ((True, f"taskless_glue_{benchmark}_v200"),
                           (False, f"glue_{benchmark}_v002")):
      assert glue_tasks.task_name(benchmark, taskless) == name
      task = seqio.get_mixture_or_task(name)
      assert task.source.tfds_name == f"glue/{benchmark}:2.0.0"
  assert seqio.get_mixture_or_task("glue_mnli_v002").splits == (
      "train", "validation_matched", "validation_mismatched", "test_matched",
      "test_mismatched")
  assert data_labels.label_strings("taskless_glue_cola_v200") == {
      "taskless_glue_cola_v200": ("unacceptable", "acceptable")}
  assert data_labels.label_strings("glue_wnli_v002")["glue_wnli_v002"] == (
      "not_entailment", "entailment")


def test_sst2_sizes_and_text(local_glue):
  task = seqio.get_mixture_or_task("taskless_glue_sst2_v200")
  start = time.time()
  assert task.num_input_examples("train") == 67349
  assert time.time() - start < 10
  assert task.num_input_examples("validation") == 872
  assert texts("taskless_glue_sst2_v200", "validation", 2) == [
      (0, "sentence: it 's a charming and often affecting journey . ",
       "positive"),
      (1, "sentence: unflinchingly bleak and desperate ", "negative")]
  assert texts("glue_sst2_v002", "validation", 1) == [
      (0, "sst2 sentence: it 's a charming and often affecting journey . ",
       "positive")]
  test = texts("glue_sst2_v002", "test", 1)
  assert test == [(0, "sst2 sentence: uneasy mishmash of styles and genres .",
                   "<unk>")]


def _msr_rows(name):
  with open(shared_path("data", "glue", "MRPC", name), encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f][1:]


def test_mrpc_split_is_glues(local_glue):
  reader = glue_files.reader("mrpc")
  root = str(shared_path("data", "glue"))
  train, dev = reader.read(root, "train"), reader.read(root, "validation")
  assert (len(train), len(dev)) == (3668, 408)
  with open(shared_path("data", "glue", "MRPC", "dev_ids.tsv")) as f:
    dev_pairs = {tuple(row[:2]) for row in csv.reader(f, delimiter="\t")}
  rows = _msr_rows("msr_paraphrase_train.txt")
  want_dev = {i for i, r in enumerate(rows) if (r[1], r[2]) in dev_pairs}
  assert {x["idx"] for x in dev} == want_dev
  assert {x["idx"] for x in train} == set(range(len(rows))) - want_dev
  assert sum(x["label"] for x in dev) == 279
  assert len(reader.read(root, "test")) == 1725
  first = texts("glue_mrpc_v002", "train", 1)[0]
  assert first == (
      0, 'mrpc sentence1: Amrozi accused his brother , whom he called " the '
      'witness " , of deliberately distorting his evidence . sentence2: '
      'Referring to him as only " the witness " , Amrozi accused his brother '
      'of deliberately distorting his evidence .', "equivalent")
  idx, inputs, target = texts("taskless_glue_mrpc_v200", "validation", 1)[0]
  assert idx == 9 and target == "equivalent"
  assert inputs == (
      "sentence1: He said the foodservice pie business doesn 't fit the "
      "company 's long-term growth strategy . sentence2: \" The foodservice "
      "pie business does not fit our long-term growth strategy .")
  # The domain-shift task reads the same files in its own format.
  shifted = texts("domain_shift_mrpc_v200", "validation", 1)[0]
  assert shifted[1] == inputs and shifted[0] == 9


def test_stsb_dev_and_rounding(local_glue):
  task = seqio.get_mixture_or_task("glue_stsb_v002")
  assert task.num_input_examples("validation") == 1500
  assert texts("glue_stsb_v002", "validation", 2) == [
      (0, "stsb sentence1: A man with a hard hat is dancing. sentence2: A "
       "man wearing a hard hat is dancing.", "5.0"),
      (1, "stsb sentence1: A young child is riding a horse. sentence2: A "
       "child is riding a horse.", "4.8")]
  everything = texts("taskless_glue_stsb_v200", "validation", 1500)
  assert everything[0][1].startswith("sentence1: A man with a hard hat")
  assert {t for _, _, t in everything} <= set(glue_tasks.STSB_TARGETS)
  # Rows 49 and 50 score 4.500 and 0.500: T5 rounds the halves to even.
  assert [everything[i][2] for i in (49, 50)] == ["4.4", "0.4"]
  # T5 rounds score * 5 half to even in float32: 0.5 -> 0.4, 1.5 -> 1.6.
  scores = tf.constant([0.5, 1.5, 4.5, 3.8, 4.75, 0.0, -1.0])
  assert [s.decode() for s in glue_tasks.stsb_target(scores).numpy()] == [
      "0.4", "1.6", "4.4", "3.8", "4.8", "0.0", "-1.0"]


@pytest.mark.parametrize("benchmark, taskless, split, missing", [
    ("cola", False, "validation", "CoLA/dev.tsv"),
    ("mnli", True, "validation_mismatched", "MNLI/dev_mismatched.tsv"),
    ("stsb", True, "train", "STS-B/train.tsv"),
    ("qqp", True, "test", "QQP/test.tsv"),
])
def test_missing_local_files_name_the_file_and_tfds(local_glue, benchmark,
                                                    taskless, split, missing):
  name = glue_tasks.task_name(benchmark, taskless)
  with pytest.raises(glue_files.GlueFileMissingError) as info:
    availability.check_split_available(name, split)
  message = str(info.value)
  assert str(shared_path("data", "glue")) + "/" + missing in message
  assert "PROMPT_TUNING_GLUE_DIR" in message
  assert f"TFDS glue/{benchmark}:2.0.0" in message


def test_without_local_files_offline_tfds_names_the_settings(monkeypatch):
  monkeypatch.delenv("PROMPT_TUNING_GLUE_DIR", raising=False)
  monkeypatch.setenv("PROMPT_TUNING_OFFLINE", "1")
  monkeypatch.setenv("PROMPT_TUNING_TFDS_DATA_DIR", "/nonexistent/tfds")
  with pytest.raises(network.DataUnavailableError,
                     match=r"glue/sst2:2.0.0.*PROMPT_TUNING_GLUE_DIR"):
    availability.check_split_available("taskless_glue_sst2_v200", "validation")


def _metric_fns(name):
  return seqio.get_mixture_or_task(name).metric_fns


def test_metrics_are_t5s_per_task():
  names = {b: [f.__name__ for f in _metric_fns(glue_tasks.task_name(b))]
           for b in glue_tasks.BENCHMARKS}
  assert names == {
      "cola": ["matthews_corrcoef"], "sst2": ["accuracy"],
      "mrpc": ["binary_f1", "accuracy"], "qqp": ["binary_f1", "accuracy"],
      "stsb": ["pearson_corrcoef", "spearman_corrcoef"],
      "mnli": ["accuracy"], "qnli": ["accuracy"], "rte": ["accuracy"],
      "wnli": ["accuracy"]}
  stsb = seqio.get_mixture_or_task("glue_stsb_v002")
  assert stsb.postprocess_fn("3.8") == 3.8
  assert stsb.postprocess_fn("three") == -1.0
  cola = seqio.get_mixture_or_task("taskless_glue_cola_v200")
  assert [cola.postprocess_fn(t) for t in
          ("acceptable", "unacceptable", "fine")] == [1, 0, -1]


def test_hand_checked_metric_values():
  # MRPC: 2 true positives, 1 false positive, 1 false negative (the invalid
  # -1 on a positive counts as a miss): F1 = 4 / 6, accuracy 3 / 5.
  targets, predictions = [1, 1, 1, 0, 0], [1, 1, -1, 1, 0]
  assert metrics.binary_f1(targets, predictions)["f1"] == pytest.approx(
      100 * 4 / 6)
  assert metrics.accuracy(targets, predictions)["accuracy"] == 60.0
  # CoLA: binary case, (tp tn - fp fn) / sqrt(...) = 2 / sqrt(12).
  mcc = metrics.matthews_corrcoef
  assert mcc([1, 1, 0, 0], [1, 0, 0, 0])["matthews_corrcoef"] == (
      pytest.approx(100 * 2 / np.sqrt(12)))
  # An invalid answer is a third class, as T5 scores CoLA:
  # (3 * 4 - 6) / sqrt((16 - 6) * (16 - 8)) = 6 / sqrt(80).
  assert mcc([1, 1, 0, 0], [1, -1, 0, 0])["matthews_corrcoef"] == (
      pytest.approx(100 * 6 / np.sqrt(80)))
  assert mcc([1, 1], [1, 1])["matthews_corrcoef"] == 0.0
  # STS-B: r of [1, 2, 3] and [1, 2, 4] is 3 / sqrt(2 * 42 / 9); ranks equal.
  assert metrics.pearson_corrcoef([1, 2, 3], [1, 2, 4])[
      "pearson_corrcoef"] == pytest.approx(100 * 3 / np.sqrt(2 * 42 / 9))
  assert metrics.spearman_corrcoef([1, 2, 3], [1, 2, 4])[
      "spearman_corrcoef"] == pytest.approx(100.0)
  # Tied targets get their mean rank: r of [1, 2.5, 2.5, 4] and [1, 2, 3, 4].
  assert metrics.spearman_corrcoef([1, 2, 2, 3], [1, 2, 3, 4])[
      "spearman_corrcoef"] == pytest.approx(100 * 4.5 / np.sqrt(22.5))
  rng = np.random.default_rng(0)
  gold = np.round(rng.uniform(0, 5, 200) * 5) / 5
  guess = np.where(rng.uniform(size=200) < 0.1, -1.0,
                   np.round(np.clip(gold + rng.normal(0, 1, 200), 0, 5), 1))
  assert metrics.pearson_corrcoef(gold, guess)["pearson_corrcoef"] == (
      pytest.approx(100 * scipy.stats.pearsonr(gold, guess)[0]))
  assert metrics.spearman_corrcoef(gold, guess)["spearman_corrcoef"] == (
      pytest.approx(100 * scipy.stats.spearmanr(gold, guess)[0]))
  assert np.isnan(metrics.pearson_corrcoef([1, 2], [3, 3])[
      "pearson_corrcoef"])
  assert postprocessors.as_float(b" 2.4") == 2.4


def test_glue_classification_tasks_have_rank_variants(local_glue):
  # Each SST-2 dev sentence becomes one scored row per label, in label
  # order; STS-B (a number, not a label set) has no variant.
  from prompt_tuning.data import rank_classification  # pylint: disable=g-import-not-at-top
  assert "taskless_glue_stsb_v200_rank" not in seqio.TaskRegistry.names()
  task = seqio.get_mixture_or_task("taskless_glue_sst2_v200_rank")
  rows = list(task.get_dataset(split="validation", shuffle=False,
                               sequence_length=None).take(4)
              .as_numpy_iterator())
  assert [r["targets_pretokenized"].decode() for r in rows] == [
      "negative", "positive"] * 2
  assert [int(r[rank_classification.CHOICE_FEATURE]) for r in rows] == [
      0, 1, 0, 1]
  assert rows[0]["inputs_pretokenized"] == rows[1]["inputs_pretokenized"]
  assert rows[0]["inputs_pretokenized"] != rows[2]["inputs_pretokenized"]
