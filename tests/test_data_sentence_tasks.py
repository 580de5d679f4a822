"""Tasks constructed on SST-2's sentences (length, negation): their labels on
the real dev file, checked against a plain-Python count; both formats; the
multi-task mixture of T5's supervised setting."""

import csv

import seqio

from helpers import shared_path
from test_data_glue import local_glue  # pylint: disable=unused-import
from test_data_glue import texts
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import sentence_tasks


def _dev_rows():
  with open(shared_path("data", "glue", "SST-2", "dev.tsv"),
            newline="") as f:
    return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _expected(name, sentence):
  words = sentence.strip().split(" ")
  if name == "length":
    return "long" if len(words) >= sentence_tasks.LONG_WORDS else "short"
  return "yes" if set(words) & set(sentence_tasks.NEGATIONS) else "no"


def test_labels_match_a_plain_count_on_all_of_dev(local_glue):
  rows = _dev_rows()
  for name in sentence_tasks.TASKS:
    got = texts(sentence_tasks.task_name(name), "validation", len(rows))
    assert len(got) == len(rows) == 872
    for (idx, inputs, target), row in zip(got, rows):
      assert inputs == f"{name} sentence: {row['sentence']}"
      assert target == _expected(name, row["sentence"]), (idx, inputs)
    # Both labels occur (dev's full sentences are mostly long: 92.5%).
    share = sum(t == sentence_tasks.TASKS[name].label_names[1]
                for _, _, t in got) / len(got)
    assert 0.05 < share < 0.95


def test_taskless_inputs_are_sst2s_and_labels_are_known(local_glue):
  sst2 = texts("taskless_glue_sst2_v200", "validation", 3)
  for name, task in sentence_tasks.TASKS.items():
    taskless = sentence_tasks.task_name(name, taskless=True)
    assert [x[1] for x in texts(taskless, "validation", 3)] == [
        x[1] for x in sst2]
    assert data_labels.label_strings(taskless) == {taskless: task.label_names}
    assert seqio.get_mixture_or_task(f"{taskless}_rank")


def test_multitask_mixture_is_sst2_and_the_constructed_tasks_equally():
  # Equal rates: no task is the one a model falls back to without a name.
  mixture = seqio.get_mixture_or_task("sst2_multitask_v001")
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert set(rates) == {"glue_sst2_v002", "sst2_length_v001",
                        "sst2_negation_v001"}
  assert len(set(rates.values())) == 1, rates
