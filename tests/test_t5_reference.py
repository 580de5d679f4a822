"""Our SuperGLUE tasks against goldens made by Google's `t5` 0.9.4 itself.

`tests/testdata/t5_reference/<t5 task>.json` (written by
`scripts/make_t5_reference.py` in its own venv) holds t5's inputs/targets for
the first rows of the real shared files, token ids through the real T5
vocabulary, and t5's metric values for fixed predictions. Here the same
rows go through our registered tasks, prefixed (`super_glue_*`: identical to
t5) and taskless (`taskless_super_glue_*`: t5's inputs without their first
word), and the same predictions through our postprocessors and metrics.
"""

import json

import numpy as np
import pytest
import seqio

from helpers import TESTDATA, shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import locations
from prompt_tuning.data import postprocessors
from prompt_tuning.data import sources
from prompt_tuning.data import super_glue
from prompt_tuning.data import super_glue_files
from prompt_tuning.data import vocab

GOLDEN_DIR = TESTDATA / "t5_reference"

# t5 task -> (our benchmark, split read, SuperGLUE directory under shared/).
TASKS = {
    "super_glue_boolq_v102": ("boolq", "validation", "super_glue"),
    "super_glue_cb_v102": ("cb", "validation", "super_glue"),
    "super_glue_copa_v102": ("copa", "validation", "super_glue"),
    "super_glue_multirc_v102": ("multirc", "validation", "super_glue"),
    "super_glue_record_v102": ("record", "train", "fewglue"),
    "super_glue_rte_v102": ("rte", "validation", "super_glue"),
    "super_glue_wic_v102": ("wic", "validation", "super_glue"),
    "super_glue_axb_v102": ("axb", "test", "super_glue"),
    "super_glue_axg_v102": ("axg", "test", "super_glue"),
    "super_glue_wsc_v102_simple_train": ("wsc_simple_train", "train",
                                         "super_glue"),
    "super_glue_wsc_v102_simple_eval": ("wsc_simple_eval", "validation",
                                        "super_glue"),
}
# t5's metric names -> ours.
METRIC_NAMES = {
    "accuracy": "accuracy", "mean_3class_f1": "macro_f1",
    "matthews_corrcoef": "matthews_corrcoef", "exact_match": "exact_match",
    "em": "exact_match",
}


def _golden(name: str) -> dict:
  with open(GOLDEN_DIR / f"{name}.json", encoding="utf-8") as f:
    return json.load(f)


def _text(value) -> str:
  return postprocessors.as_text(value)


@pytest.fixture(scope="module")
def env():
  """The real vocabulary; the SuperGLUE directory is set per test."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(vocab.VOCAB_ENV, str(shared_path(*locations.VOCAB_IN_SHARED)))
    patch.delenv(locations.TFDS_DATA_DIR_ENV, raising=False)
    yield patch


_CACHE: dict = {}


def _our_examples(env, t5_name: str, taskless: bool) -> list[dict]:
  """Our task's first examples (as many as the golden has), read once."""
  if (t5_name, taskless) not in _CACHE:
    _CACHE[(t5_name, taskless)] = _read_our_examples(env, t5_name, taskless)
  return _CACHE[(t5_name, taskless)]


def _read_our_examples(env, t5_name: str, taskless: bool) -> list[dict]:
  benchmark, split, folder = TASKS[t5_name]
  env.setenv(locations.SUPER_GLUE_DIR_ENV, str(shared_path("data", folder)))
  task = seqio.get_mixture_or_task(super_glue.task_name(benchmark, taskless))
  count = len(_golden(t5_name)["examples"])
  dataset = task.get_dataset(split=split, shuffle=False,
                             sequence_length=None).take(count)
  return list(dataset.as_numpy_iterator())


def _without_first_word(text: str) -> str:
  return text.split(" ", 1)[1]


@pytest.mark.parametrize("t5_name", sorted(TASKS))
def test_texts_and_ids_match_t5(env, t5_name):
  golden = _golden(t5_name)
  expected = golden["examples"]
  assert len(expected) >= 24
  prefixed = _our_examples(env, t5_name, taskless=False)
  taskless = _our_examples(env, t5_name, taskless=True)
  assert len(prefixed) == len(taskless) == len(expected)
  for ours, bare, theirs in zip(prefixed, taskless, expected):
    assert _text(ours["inputs_pretokenized"]) == theirs["inputs"]
    assert _text(bare["inputs_pretokenized"]) == _without_first_word(
        theirs["inputs"])
    assert _text(ours["targets_pretokenized"]) == theirs["targets"]
    assert _text(bare["targets_pretokenized"]) == theirs["targets"]
    if "answers" in theirs:  # ReCoRD: every row keeps all gold answers.
      assert [_text(a) for a in ours["answers"]] == theirs["answers"]
  assert len(golden["input_ids"]) == 20
  for ours, ids, target_ids in zip(prefixed, golden["input_ids"],
                                   golden["target_ids"]):
    assert ours["inputs"].tolist() == ids
    assert ours["targets"].tolist() == target_ids


def _score(task: seqio.Task, examples, targets, predictions) -> dict:
  scored_targets = [task.postprocess_fn(t, example=e, is_target=True)
                    for t, e in zip(targets, examples)]
  scored = [task.postprocess_fn(p, example=e)
            for p, e in zip(predictions, examples)]
  result = {}
  for fn in task.metric_fns:
    result.update(fn(scored_targets, scored))
  return result


def _check_cases(task, examples, golden, rename):
  assert golden["metric_cases"]
  for case in golden["metric_cases"]:
    ours = _score(task, examples, case["targets"], case["predictions"])
    for name, value in case["metrics"].items():
      assert ours[rename.get(name, name)] == pytest.approx(value, abs=1e-9), (
          case["name"], name)


@pytest.mark.parametrize("t5_name", [
    "super_glue_boolq_v102", "super_glue_cb_v102", "super_glue_copa_v102",
    "super_glue_rte_v102", "super_glue_wic_v102", "super_glue_axb_v102",
    "super_glue_axg_v102", "super_glue_multirc_v102",
    "super_glue_wsc_v102_simple_eval"])
def test_metrics_match_t5(env, t5_name):
  golden = _golden(t5_name)
  examples = _our_examples(env, t5_name, taskless=True)
  task = seqio.get_mixture_or_task(
      super_glue.task_name(TASKS[t5_name][0], taskless=True))
  rename = dict(METRIC_NAMES)
  if t5_name == "super_glue_multirc_v102":
    rename["f1"] = "f1a"
  _check_cases(task, examples, golden, rename)


def test_wsc_cases_that_used_to_differ_from_t5(env):
  # On all 104 validation examples (66 negatives): a trailing period or a
  # possessive answer never names the candidate, so they score as "no".
  cases = {c["name"]: c["metrics"]["accuracy"]
           for c in _golden("super_glue_wsc_v102_simple_eval")[
               "metric_cases"]}
  assert cases["candidate_period"] == pytest.approx(100 * 66 / 104)
  assert cases["possessive_noun"] == pytest.approx(100 * 66 / 104)
  assert cases["candidate"] == pytest.approx(100 * 38 / 104)
  train = _golden("super_glue_wsc_v102_simple_train")["examples"]
  special = [e for e in train if e["idx"] == 137]
  assert special and special[0]["inputs"].endswith(
      '"Good for *him* ," he said.')


def _record_rows(env) -> tuple[list[dict], dict]:
  golden = _golden("super_glue_record_v102")
  env.setenv(locations.SUPER_GLUE_DIR_ENV, str(shared_path("data",
                                                           "fewglue")))
  reader = super_glue_files.SuperGlueFiles("record")
  raw = reader.read(str(shared_path("data", "fewglue")), "train")
  keys = {(e["idx/passage"], e["idx/query"]) for e in golden["examples"]}
  raw = [r for r in raw if (r["idx"]["passage"], r["idx"]["query"]) in keys]
  return raw, golden


def test_record_train_has_one_row_per_answer_and_eval_one_per_query(env):
  raw, golden = _record_rows(env)
  dataset = sources.examples_dataset(raw, reader_spec("record"))
  preprocess = super_glue.text_preprocessor("record", taskless=False)
  train = list(preprocess(super_glue.record_rows_per_answer(dataset))
               .as_numpy_iterator())
  expected = golden["examples"]
  assert len(train) >= len(expected) > len(raw)
  assert [_text(e["targets"]) for e in train[:len(expected)]] == [
      e["targets"] for e in expected]
  assert [[_text(a) for a in e["answers"]] for e in train[:len(expected)]
         ] == [e["answers"] for e in expected]
  evaluation = list(preprocess(dataset).as_numpy_iterator())
  assert len(evaluation) == len(raw) == len(golden["evaluation_rows"])
  for ours, row in zip(evaluation, golden["evaluation_rows"]):
    theirs = expected[row]
    assert _text(ours["inputs"]) == theirs["inputs"]
    assert _text(ours["targets"]) == theirs["targets"]
    assert [_text(a) for a in ours["answers"]] == theirs["answers"]
  # A query without answers (a test row) stays one row, targeting <unk>.
  unanswered = dict(raw[0], answers=[])
  rows = list(preprocess(super_glue.record_rows_per_answer(
      sources.examples_dataset([unanswered], reader_spec("record"))))
              .as_numpy_iterator())
  assert [_text(r["targets"]) for r in rows] == [super_glue.UNLABELLED_TARGET]
  # Scored as t5 scores it (deduplicated to one row per query).
  for example in evaluation:
    example["targets_pretokenized"] = example["targets"]
  task = seqio.get_mixture_or_task(super_glue.task_name("record"))
  _check_cases(task, evaluation, golden, METRIC_NAMES)


def reader_spec(config: str) -> dict:
  return super_glue_files.SuperGlueFiles(config).element_spec


def test_record_training_rows_are_counted_for_mixing(env):
  env.setenv(locations.SUPER_GLUE_DIR_ENV, str(shared_path("data",
                                                           "fewglue")))
  task = seqio.get_mixture_or_task(super_glue.task_name("record"))
  raw = super_glue_files.SuperGlueFiles("record").read(
      str(shared_path("data", "fewglue")), "train")
  answers = sum(max(len(r["answers"]), 1) for r in raw)
  assert answers > len(raw) == 32
  assert task.num_input_examples("train") == answers
  rows = list(task.get_dataset(split="train", shuffle=False,
                               sequence_length=None)
              .as_numpy_iterator())
  assert len(rows) == answers
  # Every row targets one of its query's answers; each answer once.
  per_query = {}
  for row in rows:
    key = (int(row["idx"]["passage"]), int(row["idx"]["query"]))
    per_query.setdefault(key, []).append(_text(row["targets_pretokenized"]))
    assert _text(row["targets_pretokenized"]) in [
        _text(a) for a in row["answers"]]
  for r in raw:
    key = (r["idx"]["passage"], r["idx"]["query"])
    assert sorted(per_query[key]) == sorted(r["answers"])
  assert np.mean([len(v) for v in per_query.values()]) > 1


def test_record_fewglue_train_rows_are_t5s_in_count_and_order(env):
  # t5 (through TFDS) makes each query's answers distinct and sorted, then
  # has one row per answer in that order, each keeping all the answers.
  golden = _golden("super_glue_record_v102")
  env.setenv(locations.SUPER_GLUE_DIR_ENV, str(shared_path("data",
                                                           "fewglue")))
  for taskless in (True, False):
    task = seqio.get_mixture_or_task(super_glue.task_name("record", taskless))
    rows = list(task.get_dataset(split="train", shuffle=False,
                                 sequence_length=None).as_numpy_iterator())
    assert len(rows) == len(golden["all_rows"]) == 44
    assert [[int(r["idx"]["passage"]), int(r["idx"]["query"]),
             _text(r["targets_pretokenized"])] for r in rows
           ] == golden["all_rows"]
  by_key = {}
  for row in rows:
    key = (int(row["idx"]["passage"]), int(row["idx"]["query"]))
    by_key.setdefault(key, []).append(row)
  for key, query_rows in by_key.items():
    answers = [_text(a) for a in query_rows[0]["answers"]]
    assert answers == sorted(set(answers))
    assert [_text(r["targets_pretokenized"]) for r in query_rows] == answers
    for row in query_rows:
      assert [_text(a) for a in row["answers"]] == answers
  # A query whose answers in the file are neither distinct nor sorted.
  with open(shared_path("data", "fewglue", "ReCoRD", "train.jsonl"),
            encoding="utf-8") as f:
    file_answers = {(r["idx"], qa["idx"]): [a["text"] for a in qa["answers"]]
                    for r in map(json.loads, f) for qa in r["qas"]}
  assert file_answers[(8657, 13387)] == ["North Korea", "North", "North Korea"]
  north = by_key[(8657, 13387)]
  assert [_text(r["targets_pretokenized"]) for r in north] == [
      "North", "North Korea"]
  assert [[_text(a) for a in r["answers"]] for r in north] == [
      ["North", "North Korea"]] * 2
  theirs = [e for e in golden["examples"]
            if (e["idx/passage"], e["idx/query"]) == (8657, 13387)]
  assert [(e["targets"], e["answers"]) for e in theirs] == [
      ("North", ["North", "North Korea"]),
      ("North Korea", ["North", "North Korea"])]


def test_multirc_markup_removed_from_the_whole_input_as_t5(env):
  # t5 removes <br> (a space) and <b>/</b> from the joined input: question
  # and answer too, not only the paragraph; `<br/>` and `<B>` stay.
  golden = _golden("super_glue_multirc_v102")
  row = golden["markup_rows"][0]
  question = row["passage"]["questions"][0]
  assert "<b>" in question["question"] and "<br>" in question["question"]
  assert any("<b>" in a["text"] for a in question["answers"])
  assert any("<br>" in a["text"] for a in question["answers"])
  expected = golden["markup_examples"]
  raw = list(super_glue_files.convert_row("multirc", row))
  dataset = sources.examples_dataset(raw, reader_spec("multirc"))
  for taskless in (False, True):
    ours = list(super_glue.text_preprocessor("multirc", taskless)(dataset)
                .as_numpy_iterator())
    assert len(ours) == len(expected) == len(question["answers"])
    for example, theirs in zip(ours, expected):
      text = theirs["inputs"]
      assert _text(example["inputs"]) == (
          _without_first_word(text) if taskless else text)
      assert _text(example["targets"]) == theirs["targets"]
  first = expected[0]["inputs"]
  assert first.startswith("multirc question: Would the mass ")
  assert "<b>" not in first and "<br>" not in first
  assert " answer: No paragraph: Sent 1: " in first
  assert " answer: Yes more paragraph: " in expected[1]["inputs"]
  assert "<br/> paragraph: " in expected[2]["inputs"]
  assert " answer: <B>It depends" in expected[3]["inputs"]
