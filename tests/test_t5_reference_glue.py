"""Our GLUE tasks against goldens made by Google's `t5` 0.9.4 itself.

`scripts/make_t5_reference.py` (run in its own venv) fed the first rows of
the real shared GLUE files (SST-2 train/dev, MRPC's GLUE dev pairs, STS-B
dev) through t5's `glue_*_v002` tasks and scored fixed predictions with t5's
metrics; CoLA has metric cases only (no CoLA files are shared). Here the
same rows go through our registered tasks, read from GLUE's own files:
`glue_*_v002` must equal t5 exactly and `taskless_glue_*_v200` must be t5's
inputs without their first word.
"""

import pytest
import seqio

from helpers import shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import locations
from prompt_tuning.data import vocab
from test_t5_reference import _golden, _text  # The goldens' reader.

# Golden file -> (our benchmark, split).
GOLDENS = {
    "glue_sst2_v002": ("sst2", "validation"),
    "glue_sst2_v002_train": ("sst2", "train"),
    "glue_mrpc_v002": ("mrpc", "validation"),
    "glue_stsb_v002": ("stsb", "validation"),
}


@pytest.fixture(scope="module")
def env():
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(locations.GLUE_DIR_ENV, str(shared_path("data", "glue")))
    patch.setenv(vocab.VOCAB_ENV, str(shared_path(*locations.VOCAB_IN_SHARED)))
    yield patch


def _ours_by_idx(benchmark: str, split: str, taskless: bool,
                 wanted: set[int]) -> dict[int, dict]:
  """Our task's examples whose `idx` is in `wanted`, keyed by idx."""
  task = seqio.get_mixture_or_task(glue_tasks.task_name(benchmark, taskless))
  found = {}
  for example in task.get_dataset(split=split, shuffle=False,
                                  sequence_length=None).as_numpy_iterator():
    if int(example["idx"]) in wanted:
      found[int(example["idx"])] = example
      if len(found) == len(wanted):
        break
  return found


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_texts_and_ids_match_t5(env, name):
  del env
  benchmark, split = GOLDENS[name]
  golden = _golden(name)
  expected = golden["examples"]
  assert len(expected) >= 200
  wanted = {e["idx"] for e in expected}
  prefixed = _ours_by_idx(benchmark, split, False, wanted)
  taskless = _ours_by_idx(benchmark, split, True, wanted)
  assert len(prefixed) == len(taskless) == len(expected)
  for theirs in expected:
    ours, bare = prefixed[theirs["idx"]], taskless[theirs["idx"]]
    assert _text(ours["inputs_pretokenized"]) == theirs["inputs"]
    assert _text(bare["inputs_pretokenized"]) == theirs["inputs"].split(
        " ", 1)[1]
    assert _text(ours["targets_pretokenized"]) == theirs["targets"]
    assert _text(bare["targets_pretokenized"]) == theirs["targets"]
  for theirs, ids, target_ids in zip(expected, golden["input_ids"],
                                     golden["target_ids"]):
    assert prefixed[theirs["idx"]]["inputs"].tolist() == ids
    assert prefixed[theirs["idx"]]["targets"].tolist() == target_ids


@pytest.mark.parametrize("name", ["glue_sst2_v002", "glue_mrpc_v002",
                                  "glue_stsb_v002", "glue_cola_v002"])
def test_metrics_match_t5(name):
  golden = _golden(name)
  benchmark = name.split("_")[1]
  task = seqio.get_mixture_or_task(glue_tasks.task_name(benchmark, True))
  assert golden["metric_cases"]
  for case in golden["metric_cases"]:
    targets = [task.postprocess_fn(t, example={}, is_target=True)
               for t in case["targets"]]
    predictions = [task.postprocess_fn(p, example={})
                   for p in case["predictions"]]
    ours = {}
    for fn in task.metric_fns:
      ours.update(fn(targets, predictions))
    assert set(case["metrics"]) <= set(ours), (case["name"], ours)
    for metric, value in case["metrics"].items():
      assert ours[metric] == pytest.approx(value, abs=1e-9), (
          case["name"], metric)
