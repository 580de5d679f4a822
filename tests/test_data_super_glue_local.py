"""SuperGLUE tasks over the real release files in `shared/data`.

`shared/data/super_glue` is the official release layout with the full train
(except BoolQ), validation and unlabelled test splits and the AX-b/AX-g
diagnostics, but no ReCoRD; `shared/data/fewglue` holds FewGLUE's 32-example
subsets in the same layout, ReCoRD's train/dev32 among them.
"""

import collections
import json
import re

import gin
import numpy as np
import pytest
import seqio

from helpers import shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
import prompt_tuning.gin_configurables  # pylint: disable=unused-import
from prompt_tuning.data import locations
from prompt_tuning.data import mixing
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue
from prompt_tuning.data import testing
from prompt_tuning.data import vocab

# Official train sizes (MultiRC: 456 paragraphs, 27243 answer options; WSC:
# 554 rows, of which the simple train task keeps the 259 correct referents).
TRAIN_SIZES = {
    "cb": 250, "copa": 400, "multirc": 27243, "rte": 2490, "wic": 5428,
    "wsc_simple_train": 554,
}
# Official unlabelled test sizes (MultiRC: 166 paragraphs, 9693 options).
TEST_SIZES = {
    "boolq": 3245, "cb": 250, "copa": 500, "multirc": 9693, "rte": 3000,
    "wic": 1400, "wsc_simple_eval": 146, "axb": 1104, "axg": 356,
}
# Official validation sizes (MultiRC: 83 paragraphs, 953 questions, 4848
# answer options; WSC through its simple eval task).
VALIDATION_SIZES = {
    "boolq": 3270, "cb": 56, "copa": 100, "multirc": 4848, "rte": 277,
    "wic": 638, "wsc_simple_eval": 104,
}
TASK_WORDS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc",
              "axb", "axg")


def _release_dir():
  return shared_path("data", "super_glue")


def _fewglue_dir():
  return shared_path("data", "fewglue")


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
  """Small vocabulary and the shared release directory, for this module."""
  with open(_release_dir() / "BoolQ" / "val.jsonl", encoding="utf-8") as f:
    passages = [json.loads(line)["passage"] for _, line in zip(range(300), f)]
  model = testing.train_sentencepiece(tmp_path_factory.mktemp("spm"),
                                      passages, vocab_size=400)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(vocab.VOCAB_ENV, model)
    patch.setenv(locations.SUPER_GLUE_DIR_ENV, str(_release_dir()))
    patch.delenv(locations.TFDS_DATA_DIR_ENV, raising=False)
    yield patch


def _examples(name, split, limit=None):
  task = seqio.get_mixture_or_task(name)
  dataset = task.get_dataset(split=split, shuffle=False, sequence_length=None)
  if limit:
    dataset = dataset.take(limit)
  return list(dataset.as_numpy_iterator())


@pytest.fixture(scope="module")
def validation(settings):
  """All taskless validation examples, by benchmark."""
  del settings
  return {b: _examples(super_glue.task_name(b), "validation")
          for b in VALIDATION_SIZES}


def _text(value):
  return postprocessors.as_text(value)


@pytest.mark.slow
def test_validation_sizes_match_the_official_release(validation):
  assert {b: len(v) for b, v in validation.items()} == VALIDATION_SIZES
  multirc = validation["multirc"]
  assert len({int(e["idx"]["paragraph"]) for e in multirc}) == 83
  assert len({(int(e["idx"]["paragraph"]), int(e["idx"]["question"]))
              for e in multirc}) == 953


def test_no_input_starts_with_a_task_name(validation):
  for benchmark, examples in validation.items():
    for example in examples:
      first_word = _text(example["inputs_pretokenized"]).split(" ")[0]
      assert first_word.rstrip(":") not in TASK_WORDS, (benchmark, first_word)


def test_every_target_is_a_label_string(validation):
  for benchmark, examples in validation.items():
    if benchmark == "wsc_simple_eval":
      continue
    labels = super_glue.label_strings(super_glue.task_name(benchmark))
    targets = collections.Counter(_text(e["targets_pretokenized"])
                                  for e in examples)
    assert set(targets) <= set(labels), (benchmark, targets)
  # Both classes of each task occur in the official validation data.
  rte = {_text(e["targets_pretokenized"]) for e in validation["rte"]}
  assert rte == {"entailment", "not_entailment"}
  cb = {_text(e["targets_pretokenized"]) for e in validation["cb"]}
  assert cb == {"entailment", "contradiction", "neutral"}


def test_inputs_follow_t5_key_order(validation):
  starts = {
      "boolq": ("passage: ", " question: "),
      "cb": ("hypothesis: ", " premise: "),
      "copa": ("choice1: ", " choice2: ", " premise: ", " question: "),
      "multirc": ("question: ", " answer: ", " paragraph: "),
      "rte": ("hypothesis: ", " premise: "),
      "wic": ("sentence1: ", " sentence2: ", " word: "),
  }
  for benchmark, keys in starts.items():
    for example in validation[benchmark][:20]:
      text = _text(example["inputs_pretokenized"])
      assert text.startswith(keys[0]), text
      positions = [text.index(k) for k in keys]
      assert positions == sorted(positions), (benchmark, text)
  copa = _text(validation["copa"][0]["inputs_pretokenized"])
  assert copa.endswith(("question: cause", "question: effect"))


def test_wsc_marks_the_pronoun_and_targets_the_candidate(validation):
  release = [json.loads(line)
             for line in open(_release_dir() / "WSC" / "val.jsonl",
                              encoding="utf-8")]
  by_idx = {row["idx"]: row for row in release}
  labels = collections.Counter()
  for example in validation["wsc_simple_eval"]:
    row = by_idx[int(example["idx"])]
    text = _text(example["inputs_pretokenized"])
    assert "*" not in row["text"] and text.count("*") == 2, text
    marked = text.split("*", 2)[1]
    assert marked == row["target"]["span2_text"], text
    assert _text(example["targets_pretokenized"]).lower() == (
        row["target"]["span1_text"].lower())
    labels[int(example["label"])] += 1
  assert labels == {0: 66, 1: 38}


def test_multirc_and_wsc_postprocessors_on_real_examples(validation):
  task = seqio.get_mixture_or_task(super_glue.task_name("multirc"))
  examples = validation["multirc"]
  targets = [task.postprocess_fn(e["targets_pretokenized"], example=e,
                                 is_target=True) for e in examples]
  assert len({t["group"] for t in targets}) == 953
  perfect = task.metric_fns[0](targets, targets)
  assert perfect == {"f1a": 100.0, "exact_match": 100.0}

  wsc = seqio.get_mixture_or_task(super_glue.task_name("wsc_simple_eval"))
  examples = validation["wsc_simple_eval"]
  targets = [wsc.postprocess_fn(e["targets_pretokenized"], example=e,
                                is_target=True) for e in examples]
  # Always answering with the candidate is right exactly on the positives.
  always_candidate = [wsc.postprocess_fn(e["targets_pretokenized"], example=e)
                      for e in examples]
  assert set(always_candidate) == {1}
  assert wsc.metric_fns[0](targets, always_candidate)["accuracy"] == (
      pytest.approx(100 * 38 / 104))


def test_cb_metrics_on_real_targets(validation):
  task = seqio.get_mixture_or_task(super_glue.task_name("cb"))
  examples = validation["cb"]
  targets = [task.postprocess_fn(e["targets_pretokenized"], example=e,
                                 is_target=True) for e in examples]
  assert collections.Counter(targets) == {1: 28, 0: 23, 2: 5}
  always_contradiction = [1] * len(targets)
  result = {}
  for fn in task.metric_fns:
    result.update(fn(targets, always_contradiction))
  assert result["accuracy"] == pytest.approx(100 * 28 / 56)
  # Only "contradiction" scores: F1 = 2*28 / (2*28 + 28) = 2/3.
  assert result["macro_f1"] == pytest.approx(100 * (2 / 3) / 3)


@pytest.fixture
def fewglue(settings):
  """Points the SuperGLUE tasks at FewGLUE (which has ReCoRD) for one test."""
  settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(_fewglue_dir()))
  yield _fewglue_dir()
  settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(_release_dir()))


def test_record_train_one_example_per_answer(fewglue):
  examples = _examples(super_glue.task_name("record"), "train")
  rows = _rows(fewglue / "ReCoRD" / "train.jsonl")
  assert sum(len(r["qas"]) for r in rows) == 32
  # As in T5: one training row per distinct gold answer (44 of them).
  assert len(examples) == sum(
      len({a["text"] for a in qa["answers"]}) for r in rows
      for qa in r["qas"]) == 44
  for example in examples:
    text = _text(example["inputs_pretokenized"])
    assert text.startswith("query: ") and " entities: " in text
    assert "@highlight" not in text
    # Every row keeps its query's answers, distinct and sorted as TFDS's.
    answers = [_text(a) for a in example["answers"]]
    assert answers and answers == sorted(set(answers))
    assert _text(example["targets_pretokenized"]) in answers
    entities = text.split(" entities: ", 1)[1].split(" passage: ", 1)[0]
    for answer in answers:
      assert answer in entities.split(", ")


def test_record_has_no_local_validation_and_says_where(fewglue):
  # FewGLUE has ReCoRD's folder but no val.jsonl.
  with pytest.raises(FileNotFoundError, match=r"ReCoRD[/\\]val\.jsonl"):
    _examples(super_glue.task_name("record"), "validation")


def test_release_copy_has_no_record_and_says_how_to_get_it(settings):
  del settings
  with pytest.raises(FileNotFoundError,
                     match=r"ReCoRD[/\\]train\.jsonl") as error:
    _examples(super_glue.task_name("record"), "train")
  assert locations.SUPER_GLUE_DIR_ENV in str(error.value)


def test_boolq_train_is_absent_and_the_error_says_so(settings):
  del settings
  name = super_glue.task_name("boolq")
  with pytest.raises(FileNotFoundError) as error:
    _examples(name, "train")
  message = str(error.value)
  assert re.search(r"BoolQ[/\\]train\.jsonl", message), message
  assert "not in the local directory" in message
  assert f"unsetting {locations.SUPER_GLUE_DIR_ENV}" in message
  assert "TFDS" in message
  # The mixture's rate needs BoolQ's train size: the same error, not a guess.
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    seqio.get_mixture_or_task(name).num_input_examples("train")


def test_train_sizes_are_the_full_release(settings):
  del settings
  sizes = {b: seqio.get_mixture_or_task(
      super_glue.task_name(b)).num_input_examples("train")
           for b in TRAIN_SIZES}
  assert sizes == TRAIN_SIZES
  labels = collections.Counter(
      r["label"] for r in _rows(_release_dir() / "RTE" / "train.jsonl"))
  assert labels == {"entailment": 1249, "not_entailment": 1241}


def test_full_train_split_reads_through_the_task(settings):
  del settings
  examples = _examples(super_glue.task_name("cb"), "train")
  assert len(examples) == 250
  targets = collections.Counter(_text(e["targets_pretokenized"])
                                for e in examples)
  assert targets == {"contradiction": 119, "entailment": 115, "neutral": 16}


def test_prefixed_tasks_keep_t5_task_name(settings):
  del settings
  expected = {"boolq": "boolq passage: ", "rte": "rte hypothesis: ",
              "wic": "wic sentence1: ", "multirc": "multirc question: ",
              "wsc_simple_eval": "wsc: "}
  for benchmark, start in expected.items():
    example = _examples(super_glue.task_name(benchmark, taskless=False),
                        "validation", limit=1)[0]
    assert _text(example["inputs_pretokenized"]).startswith(start)
    taskless = _examples(super_glue.task_name(benchmark), "validation",
                         limit=1)[0]
    assert _text(example["inputs_pretokenized"]) == (
        start.split(" ")[0] + " " + _text(taskless["inputs_pretokenized"]))


def test_tokenized_features_end_with_eos(validation):
  example = validation["rte"][0]
  assert example["inputs"].dtype == np.int32
  assert example["inputs"][-1] == 1 and example["targets"][-1] == 1


def test_diagnostics_read_as_rte(settings):
  del settings
  expected_labels = {"axb": {"entailment": 460, "not_entailment": 644},
                     "axg": {"entailment": 178, "not_entailment": 178}}
  for benchmark, folder in (("axb", "AX-b"), ("axg", "AX-g")):
    rows = _rows(_release_dir() / folder / f"{folder}.jsonl")
    examples = _examples(super_glue.task_name(benchmark), "test")
    assert len(examples) == len(rows) == TEST_SIZES[benchmark]
    labels = super_glue.label_strings(super_glue.task_name(benchmark))
    assert labels == ("entailment", "not_entailment")
    by_idx = {int(r["idx"]): r for r in rows}  # AX-b's idx is a string.
    for example in examples:
      row = by_idx[int(example["idx"])]
      hypothesis = row.get("hypothesis", row.get("sentence2"))
      premise = row.get("premise", row.get("sentence1"))
      assert _text(example["inputs_pretokenized"]) == (
          f"hypothesis: {hypothesis} premise: {premise}")
      assert _text(example["targets_pretokenized"]) == row["label"]
    targets = collections.Counter(_text(e["targets_pretokenized"])
                                  for e in examples)
    assert targets == expected_labels[benchmark]
    prefixed = _examples(super_glue.task_name(benchmark, False), "test",
                         limit=1)
    assert _text(prefixed[0]["inputs_pretokenized"]).startswith(
        "rte hypothesis: ")


def test_diagnostic_metrics_on_the_real_files(settings):
  del settings
  for benchmark, perfect in (
      ("axb", {"matthews_corrcoef": 100.0}),
      ("axg", {"accuracy": 100.0, "gender_parity": 100.0})):
    task = seqio.get_mixture_or_task(super_glue.task_name(benchmark))
    examples = _examples(task.name, "test")
    targets = [task.postprocess_fn(e["targets_pretokenized"], example=e,
                                   is_target=True) for e in examples]
    assert task.metric_fns[0](targets, targets) == perfect
  # AX-g's minimal pairs are consecutive (idx 2k, 2k+1): the same
  # hypothesis and label, premises that differ in the pronoun only.
  rows = _rows(_release_dir() / "AX-g" / "AX-g.jsonl")
  pairs = collections.defaultdict(list)
  for row in rows:
    pairs[row["idx"] // 2].append(row)
  assert len(pairs) == 178
  for first, second in pairs.values():
    assert first["hypothesis"] == second["hypothesis"]
    assert first["label"] == second["label"]
    assert first["premise"] != second["premise"]


def test_unlabelled_test_splits_have_the_official_sizes(settings):
  del settings
  for benchmark, size in TEST_SIZES.items():
    source = seqio.get_mixture_or_task(super_glue.task_name(benchmark)).source
    assert source.num_input_examples("test") == size, benchmark
  # Several release test files (and AX-g) end without a newline; the last
  # record still counts.
  rte = (_release_dir() / "RTE" / "test.jsonl").read_bytes()
  assert not rte.endswith(b"\n") and rte.count(b"\n") == 2999


def test_unlabelled_test_split_targets_unk(settings):
  del settings
  for benchmark in TEST_SIZES:
    if benchmark in super_glue.DIAGNOSTIC_BENCHMARKS:
      continue
    source = seqio.get_mixture_or_task(super_glue.task_name(benchmark)).source
    labels = source.get_dataset("test", shuffle=False).map(
        lambda x: x["label"]).batch(4096)
    assert {int(v) for batch in labels.as_numpy_iterator()
            for v in batch} == {-1}, benchmark
    examples = _examples(super_glue.task_name(benchmark), "test", limit=5)
    assert len(examples) == 5
    if benchmark == "wsc_simple_eval":
      assert {int(e["label"]) for e in examples} == {-1}
    else:
      assert {_text(e["targets_pretokenized"]) for e in examples} == {"<unk>"}


def test_wsc_training_keeps_only_correct_referents(settings):
  del settings
  rows = _rows(_release_dir() / "WSC" / "train.jsonl")
  assert len(rows) == 554
  positives = sum(bool(r["label"]) for r in rows)
  assert positives == 259
  name = super_glue.task_name("wsc_simple_train")
  train = _examples(name, "train")
  rate = mixing.capped_examples_rate(seqio.get_mixture_or_task(name),
                                     positives_only=True)
  assert len(train) == positives
  assert {int(e["label"]) for e in train} == {1}
  assert rate == positives  # The mixing rate counts what training sees.


def test_missing_directory_folder_and_split_name_the_path(tmp_path, settings):
  name = super_glue.task_name("boolq")
  missing = tmp_path / "nowhere"
  settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(missing))
  try:
    with pytest.raises(FileNotFoundError, match="nowhere"):
      _examples(name, "validation")
    (tmp_path / "BoolQ").mkdir()
    settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"CB[/\\]val\.jsonl"):
      _examples(super_glue.task_name("cb"), "validation")
    with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]test\.jsonl"):
      _examples(name, "test")
  finally:
    settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(_release_dir()))


def test_gin_binding_selects_local_directory(settings):
  settings.delenv(locations.SUPER_GLUE_DIR_ENV)
  try:
    assert locations.super_glue_dir() is None
    gin.bind_parameter("prompt_tuning.data.locations.super_glue_dir.path",
                       str(_release_dir()))
    assert len(_examples(super_glue.task_name("cb"), "validation")) == 56
    gin.clear_config()
    # Without binding or variable the source is back on TFDS (not read here:
    # that would download).
    source = seqio.get_mixture_or_task(super_glue.task_name("cb")).source
    assert source.local_dir() is None
    assert source.tfds_name == "super_glue/cb:1.0.2"
  finally:
    gin.clear_config()
    settings.setenv(locations.SUPER_GLUE_DIR_ENV, str(_release_dir()))


def test_label_strings_published_for_every_task():
  assert super_glue.LABELS["taskless_super_glue_rte_v102"] == (
      "entailment", "not_entailment")
  assert super_glue.label_strings("taskless_super_glue_cb_v102") == (
      "entailment", "contradiction", "neutral")
  assert super_glue.label_strings("super_glue_copa_v102") == ("choice1",
                                                             "choice2")
  assert super_glue.label_strings("taskless_super_glue_boolq_v102") == (
      "False", "True")
  assert super_glue.label_strings("taskless_super_glue_record_v102") == ()
  with pytest.raises(KeyError, match="not a SuperGLUE task"):
    super_glue.label_strings("glue_rte_v002")
  registered = set(seqio.TaskRegistry.names())
  assert set(super_glue.LABELS) <= registered
