"""Counting the examples the feature lengths truncate, exactly and fast."""

import json
import time

import numpy as np
import pytest
import seqio

from helpers import RTE, shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import locations
from prompt_tuning.data import super_glue
from prompt_tuning.data import truncation
from test_data_labels import t5_spm  # pylint: disable=unused-import  # Fixture.

MIXTURE = super_glue.mixture_name()


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


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
  inputs, targets = truncation.truncation_report(
      RTE, "train", {"inputs": 64, "targets": 8})
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
  (report,) = truncation.truncation_report(RTE, "train", {"inputs": 96},
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
    # pylint: disable-next=protected-access
    assert truncation._text_steps(task) is not None
    fast = truncation._token_lengths(  # pylint: disable=protected-access
        task, split, ["inputs", "targets"], 150)
    full = truncation._token_lengths(  # pylint: disable=protected-access
        task, split, ["inputs", "targets"], 150, fast=False)
    for feature in ("inputs", "targets"):
      np.testing.assert_array_equal(fast[feature], full[feature])
  wsc = truncation.truncation_report(
      super_glue.task_name("wsc_simple_train"), "train", {"inputs": 512})
  assert wsc[0].num_examples == 259  # Only the correct referents train.


def test_truncation_over_a_mixture(local_super_glue, monkeypatch):
  del local_super_glue
  # FewGLUE's 32-row train subsets: every task's rows are counted together.
  monkeypatch.setenv(locations.SUPER_GLUE_DIR_ENV,
                     str(shared_path("data", "fewglue")))
  inputs, = truncation.truncation_report(MIXTURE, "train", {"inputs": 512})
  # 32 rows for each of 5 tasks, ReCoRD's 44 gold answers (one training
  # row each), MultiRC's 154 answer options, 32 WSC positives.
  assert inputs.num_examples == 5 * 32 + 44 + 154 + 32
  assert inputs.name == MIXTURE and inputs.num_truncated > 0
  with pytest.raises(ValueError, match="decoder_inputs"):
    truncation.truncation_report(RTE, "train", {"decoder_inputs": 8})


def test_truncation_checks_availability_first(local_super_glue):
  del local_super_glue
  with pytest.raises(FileNotFoundError, match=r"BoolQ[/\\]train\.jsonl"):
    truncation.truncation_report(MIXTURE, "train", {"inputs": 64})
