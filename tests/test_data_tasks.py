"""Task and mixture registration, mixing rates, MRPC from the MSR files."""

import collections
import importlib
import os
import pathlib
import subprocess
import sys

import gin
import pytest
import seqio

from helpers import shared_path
import prompt_tuning.tasks
import prompt_tuning.gin_configurables  # pylint: disable=unused-import
from prompt_tuning.data import glue
from prompt_tuning.data import locations
from prompt_tuning.data import mixing
from prompt_tuning.data import mrqa
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue
from prompt_tuning.data import testing
from prompt_tuning.data import vocab

SUPER_GLUE_NAMES = [
    *(f"taskless_super_glue_{b}_v102" for b in
      ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "axb",
       "axg")),
    "taskless_super_glue_wsc_v102_simple_train",
    "taskless_super_glue_wsc_v102_simple_eval",
]
DOMAIN_SHIFT_NAMES = [
    "domain_shift_qqp_v200", "domain_shift_mrpc_v200", "mrqa_squad_v100",
    "mrqa_textbook_qa_v100", "mrqa_bio_asq_v100", "mrqa_race_v100",
    "mrqa_relation_extraction_v100", "mrqa_duo_rc_v100", "mrqa_drop_v100",
]


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
  sentences = ["sentence1: the cat sat sentence2: a cat sat on a mat",
               "hypothesis: it is wet premise: it rained all day"] * 30
  model = testing.train_sentencepiece(tmp_path_factory.mktemp("spm"),
                                      sentences, vocab_size=60)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(vocab.VOCAB_ENV, model)
    yield patch


def test_all_names_registered_with_splits():
  names = set(seqio.TaskRegistry.names())
  prefixed = [n[len("taskless_"):] for n in SUPER_GLUE_NAMES]
  assert set(SUPER_GLUE_NAMES + prefixed + DOMAIN_SHIFT_NAMES) <= names
  get = seqio.get_mixture_or_task
  assert set(get("taskless_super_glue_rte_v102").splits) == {
      "train", "validation", "test"}
  assert set(get("taskless_super_glue_axb_v102").splits) == {"test"}
  assert set(get("taskless_super_glue_wsc_v102_simple_train").splits) == {
      "train"}
  assert set(get("taskless_super_glue_wsc_v102_simple_eval").splits) == {
      "validation", "test"}
  assert get("taskless_super_glue_rte_v102").source.tfds_name == (
      "super_glue/rte:1.0.2")
  assert get("taskless_super_glue_wsc_v102_simple_eval").source.tfds_name == (
      "super_glue/wsc.fixed:1.0.2")
  assert get("mrqa_drop_v100").source.tfds_name == "mrqa/drop:1.0.0"


def test_metrics_are_the_official_ones():
  def metric_names(name):
    return [getattr(f, "func", f).__name__
            for f in seqio.get_mixture_or_task(name).metric_fns]
  assert metric_names("taskless_super_glue_cb_v102") == ["accuracy",
                                                         "macro_f1"]
  assert metric_names("taskless_super_glue_multirc_v102") == [
      "multirc_f1a_and_exact_match"]
  assert metric_names("taskless_super_glue_record_v102") == [
      "squad_f1_and_exact_match"]
  assert metric_names("taskless_super_glue_axb_v102") == ["matthews_corrcoef"]
  assert metric_names("taskless_super_glue_axg_v102") == [
      "accuracy_and_gender_parity"]
  assert metric_names("domain_shift_mrpc_v200") == ["accuracy", "binary_f1"]
  for benchmark in ("boolq", "copa", "rte", "wic", "wsc_simple_eval"):
    assert metric_names(super_glue.task_name(benchmark)) == ["accuracy"]


def test_reimport_is_safe_and_keeps_names():
  before = set(seqio.TaskRegistry.names())
  importlib.reload(prompt_tuning.tasks.super_glue)
  importlib.reload(prompt_tuning.tasks.domain_shift)
  importlib.reload(prompt_tuning.tasks)
  assert set(seqio.TaskRegistry.names()) == before
  assert {"taskless_super_glue_v102", "super_glue_v102"} <= set(
      seqio.MixtureRegistry.names())


@pytest.mark.slow
def test_import_from_another_directory_reads_no_data(tmp_path):
  env = dict(os.environ)
  env[locations.SUPER_GLUE_DIR_ENV] = str(tmp_path / "does_not_exist")
  env[vocab.VOCAB_ENV] = str(tmp_path / "no.model")
  env.pop("PYTHONPATH", None)
  code = ("import prompt_tuning.tasks, seqio, sys; "
          "names = set(seqio.TaskRegistry.names()); "
          f"missing = set({SUPER_GLUE_NAMES!r}) - names; "
          "sys.exit(1 if missing else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=env, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_taskless_mixture_is_capped_examples_proportional(small_vocab):
  # FewGLUE: 32 train rows for each of the eight tasks (the release copy in
  # shared/data/super_glue has no BoolQ train and no ReCoRD).
  small_vocab.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "fewglue")))
  mixture = seqio.get_mixture_or_task("taskless_super_glue_v102")
  assert len(mixture.tasks) == 9  # 7 tasks + WSC train + WSC eval.
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates["taskless_super_glue_rte_v102"] == 32
  assert rates["taskless_super_glue_boolq_v102"] == 32
  # ReCoRD trains on one row per gold answer (32 queries, 44 answers).
  assert rates["taskless_super_glue_record_v102"] == 44
  assert rates["taskless_super_glue_multirc_v102"] == 154  # Answer options.
  # FewGLUE's WSC train rows are all correct referents.
  assert rates["taskless_super_glue_wsc_v102_simple_train"] == 32
  assert rates["taskless_super_glue_wsc_v102_simple_eval"] == 0
  try:
    gin.bind_parameter(
        "prompt_tuning.data.mixing.capped_examples_rate.cap", 40)
    capped = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  finally:
    gin.clear_config()
  assert capped["taskless_super_glue_multirc_v102"] == 40
  assert capped["taskless_super_glue_rte_v102"] == 32
  dataset = mixture.get_dataset(
      sequence_length={"inputs": 64, "targets": 8}, split="train", seed=0,
      num_epochs=1)
  examples = list(dataset.take(5).as_numpy_iterator())
  assert len(examples) == 5
  assert all(e["inputs"].shape[0] <= 64 for e in examples)


def test_mixture_rate_on_the_release_copy_names_the_missing_file(
    small_vocab):
  small_vocab.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "super_glue")))
  mixture = seqio.get_mixture_or_task("taskless_super_glue_v102")
  rte = seqio.get_mixture_or_task("taskless_super_glue_rte_v102")
  assert mixture.get_rate(rte) == 2490  # The full train split.
  boolq = seqio.get_mixture_or_task("taskless_super_glue_boolq_v102")
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    mixture.get_rate(boolq)


def test_rate_needs_a_known_train_size():
  class _Unsized:
    name = "unsized"

    def num_input_examples(self, split):
      del split
      return None

  with pytest.raises(ValueError, match="unsized"):
    mixing.capped_examples_rate(_Unsized())


def test_mrpc_from_shared_msr_files(small_vocab, tmp_path):
  small_vocab.setenv(locations.GLUE_DIR_ENV, str(shared_path("data", "glue")))
  task = seqio.get_mixture_or_task(glue.task_name("mrpc"))
  # GLUE's split: dev_ids.tsv names the 408 validation pairs of the train file.
  assert task.source.num_input_examples("train") == 3668
  assert task.source.num_input_examples("validation") == 408
  assert task.source.num_input_examples("test") == 1725
  validation = list(task.get_dataset(split="validation", shuffle=False,
                                     sequence_length=None).as_numpy_iterator())
  assert collections.Counter(int(e["label"]) for e in validation) == {
      1: 279, 0: 129}
  test = list(task.get_dataset(split="test", shuffle=False,
                               sequence_length=None).as_numpy_iterator())
  assert len(test) == 1725
  targets = [postprocessors.as_text(e["targets_pretokenized"]) for e in test]
  assert set(targets) == set(glue.PARAPHRASE_LABELS)
  first = postprocessors.as_text(test[0]["inputs_pretokenized"])
  assert first.startswith("sentence1: ") and " sentence2: " in first
  ids = [task.postprocess_fn(t, is_target=True) for t in targets]
  assert task.metric_fns[0](ids, ids) == {"accuracy": 100.0}
  # Without GLUE's id list the train file is all train and there is no
  # validation split.
  without_ids = testing.write_msr_subset(shared_path("data", "glue", "MRPC"),
                                         tmp_path / "glue", train_rows=5,
                                         test_rows=2)
  small_vocab.setenv(locations.GLUE_DIR_ENV, str(without_ids))
  assert task.source.num_input_examples("train") == 5
  with pytest.raises(FileNotFoundError, match="dev_ids.tsv"):
    task.get_dataset(split="validation", shuffle=False)
  small_vocab.setenv(locations.GLUE_DIR_ENV, str(pathlib.Path("/nonexistent")))
  with pytest.raises(FileNotFoundError, match="nonexistent"):
    task.get_dataset(split="train")
  small_vocab.delenv(locations.GLUE_DIR_ENV)


def test_domain_shift_tasks_share_one_label_vocabulary():
  qqp = seqio.get_mixture_or_task(glue.task_name("qqp"))
  mrpc = seqio.get_mixture_or_task(glue.task_name("mrpc"))
  for task in (qqp, mrpc):
    assert task.postprocess_fn("equivalent") == 1
    assert task.postprocess_fn("not_equivalent") == 0
    assert task.postprocess_fn("duplicate") == -1
  assert glue.PARAPHRASE_LABELS == ("not_equivalent", "equivalent")
  assert mrqa.OUT_OF_DOMAIN == ("textbook_qa", "bio_asq", "race",
                                "relation_extraction", "duo_rc", "drop")
