"""Label strings of closed label-set tasks, from their owners, and the
longest one in tokens."""

import functools

import pytest
import seqio
import sentencepiece as spm

from helpers import RTE
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import glue
from prompt_tuning.data import labels as data_labels
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue
from prompt_tuning.data import vocab

MIXTURE = super_glue.mixture_name()
CLOSED_BENCHMARKS = ("boolq", "cb", "copa", "multirc", "rte", "wic", "axb",
                     "axg")


@pytest.fixture
def t5_spm(local_super_glue):
  """The real T5 SentencePiece model, loaded directly (not through seqio)."""
  return spm.SentencePieceProcessor(
      model_file=local_super_glue[vocab.VOCAB_ENV])


def test_rte_labels_and_longest_target(local_super_glue, t5_spm):
  del local_super_glue
  assert data_labels.label_strings(RTE) == {
      RTE: ("entailment", "not_entailment")}
  assert data_labels.longest_target(RTE) == (RTE, "not_entailment", 6)
  # Independently: SentencePiece pieces plus EOS.
  assert len(t5_spm.encode("not_entailment")) + 1 == 6
  assert len(t5_spm.encode("entailment")) + 1 == 5


def test_mixture_labels_leave_out_open_ended_tasks(local_super_glue, t5_spm):
  del local_super_glue
  labels = data_labels.label_strings(MIXTURE)
  assert set(labels) == {super_glue.task_name(b) for b in
                         ("boolq", "cb", "copa", "multirc", "rte", "wic")}
  for name, strings in labels.items():
    assert strings == super_glue.label_strings(name)  # One owner.
  lengths = {(name, label): len(t5_spm.encode(label)) + 1
             for name, strings in labels.items() for label in strings}
  task, label, count = data_labels.longest_target(MIXTURE)
  assert count == max(lengths.values()) == lengths[(task, label)]
  for name in (super_glue.task_name("record"),
               super_glue.task_name("wsc_simple_train"),
               super_glue.task_name("wsc_simple_eval"), "mrqa_squad_v100"):
    assert data_labels.label_strings(name) is None
    assert data_labels.longest_target(name) is None


def test_labels_of_every_closed_task_match_its_postprocessor():
  for benchmark in CLOSED_BENCHMARKS:
    for taskless in (True, False):
      name = super_glue.task_name(benchmark, taskless)
      assert data_labels.label_strings(name) == {
          name: super_glue.label_strings(name)}
  for config in ("qqp", "mrpc"):
    name = glue.task_name(config)
    assert data_labels.label_strings(name) == {name: glue.PARAPHRASE_LABELS}
  # Where a task's postprocessor maps class names to ids, the published
  # labels are those class names, in id order.
  with_class_ids = 0
  for name in seqio.TaskRegistry.names():
    fn = seqio.get_mixture_or_task(name).postprocessor
    if (isinstance(fn, functools.partial)
        and fn.func is postprocessors.class_id):
      assert data_labels.label_strings(name) == {
          name: tuple(fn.keywords["class_names"])}, name
      with_class_ids += 1
  assert with_class_ids >= 2 * 6 + 2  # SuperGLUE (both forms) and paraphrase.


def test_labels_from_a_class_id_postprocessor_of_an_unknown_task():
  name = "labels_test_class_id_task"
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                      splits=("train",)),
      preprocessors=[],
      output_features=vocab.output_features(),
      postprocess_fn=functools.partial(postprocessors.class_id,
                                       class_names=("no", "yes")))
  try:
    assert data_labels.label_strings(name) == {name: ("no", "yes")}
  finally:
    seqio.TaskRegistry.remove(name)
