"""Metrics and postprocessors against hand-computed cases."""

import functools

import numpy as np
import pytest

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors

CB_CLASSES = ("entailment", "contradiction", "neutral")


def test_accuracy_counts_unparseable_as_wrong():
  class_id = functools.partial(postprocessors.class_id,
                               class_names=("False", "True"))
  predictions = [class_id(p) for p in ("True", " False\n", "maybe", "")]
  assert predictions == [1, 0, -1, -1]
  assert metrics.accuracy([1, 0, 1, 0], predictions) == {"accuracy": 50.0}


def test_accuracy_never_rewards_invalid_against_unlabelled_target():
  assert metrics.accuracy([-1, 1], [-1, 1]) == {"accuracy": 50.0}


def test_cb_macro_f1_hand_computed():
  # Class 0: tp 1, fp 1, fn 1 -> 1/2. Class 1: tp 2, fp 1 -> 4/5.
  # Class 2: tp 1, fn 1 -> 2/3. Mean: 0.65556.
  targets = [0, 0, 1, 1, 2, 2]
  predictions = [0, 1, 1, 1, 2, 0]
  f1 = metrics.macro_f1(targets, predictions, num_classes=3)["macro_f1"]
  assert f1 == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)
  assert metrics.accuracy(targets, predictions)["accuracy"] == pytest.approx(
      400 / 6)


def test_cb_macro_f1_unparseable_is_a_miss_for_the_true_class():
  # Class 0 loses its only true positive; no class gains a false positive.
  targets = [0, 1, 2]
  f1 = metrics.macro_f1(targets, [-1, 1, 2], num_classes=3)["macro_f1"]
  assert f1 == pytest.approx(100 * (0 + 1 + 1) / 3)


def test_cb_postprocessor_maps_label_words():
  class_id = functools.partial(postprocessors.class_id,
                               class_names=CB_CLASSES)
  assert [class_id(w) for w in (b"neutral", "contradiction", "Neutral")] == [
      2, 1, -1]


def test_multirc_f1a_and_exact_match_group_by_question():
  example = lambda p, q: {"idx": {"paragraph": p, "question": q, "answer": 0}}
  # Question (0, 0): three options, all right. Question (0, 1): one missed
  # true answer. Question (1, 0): same question id in another paragraph,
  # an unparseable answer on a false option.
  rows = [
      ((0, 0), "True", "True"), ((0, 0), "False", "False"),
      ((0, 0), "True", "True"),
      ((0, 1), "False", "False"), ((0, 1), "True", "False"),
      ((1, 0), "False", "yes"),
  ]
  targets = [postprocessors.multirc(t, example(*g), is_target=True)
             for g, t, _ in rows]
  predictions = [postprocessors.multirc(p, example(*g)) for g, _, p in rows]
  assert targets[0] == {"value": 1, "group": (0, 0)}
  assert predictions[-1] == {"value": -1, "group": (1, 0)}
  result = metrics.multirc_f1a_and_exact_match(targets, predictions)
  # Positives: tp 2, fn 1; the unparseable option on a false answer is a
  # false positive. F1 = 4 / (4 + 1 + 1).
  assert result["f1a"] == pytest.approx(100 * 4 / 6)
  assert result["exact_match"] == pytest.approx(100 / 3)


def test_record_max_over_answers():
  example = {"answers": np.array([b"Barack Obama", b"Obama"])}
  assert postprocessors.answers_or_prediction(
      b"", example, is_target=True) == ["Barack Obama", "Obama"]
  assert postprocessors.answers_or_prediction(b" obama ", example) == "obama"
  targets = [["Barack Obama", "Obama"], ["the United States"]]
  predictions = ["obama", "United States of America"]
  result = metrics.squad_f1_and_exact_match(targets, predictions)
  # Example 2: "united states" vs "united states of america": P 1/2, R 1.
  assert result["exact_match"] == pytest.approx(50.0)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_squad_normalisation_ignores_case_articles_punctuation():
  assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  result = metrics.squad_f1_and_exact_match([["an apple"]], ["Apple."])
  assert result == {"f1": 100.0, "exact_match": 100.0}


def test_squad_skips_unanswered_and_rejects_all_unanswered():
  result = metrics.squad_f1_and_exact_match([["x"], []], ["x", "y"])
  assert result == {"f1": 100.0, "exact_match": 100.0}
  with pytest.raises(ValueError, match="gold answer"):
    metrics.squad_f1_and_exact_match([[]], ["y"])


def test_axb_matthews_correlation():
  # tp 3, tn 3, fp 1, fn 1 -> (9 - 1) / sqrt(4 * 4 * 4 * 4) = 0.5.
  targets = [1, 1, 1, 0, 0, 0, 1, 0]
  predictions = [1, 1, 0, 0, 0, 1, 1, 0]
  assert metrics.matthews_corrcoef(targets, predictions) == {
      "matthews_corrcoef": pytest.approx(50.0)}
  # An unparseable answer (-1) is a third class, as in scikit-learn (T5):
  # confusion rows t=1: [-1:1, 0:1, 1:2], t=0: [0:3, 1:1]; with c=5 correct
  # of s=8, t=(0, 4, 4), p=(1, 4, 3): (5*8 - 28) / sqrt((64-26)(64-32)).
  predictions[0] = -1
  expected = (5 * 8 - 28) / np.sqrt((64 - 26) * (64 - 32))
  assert metrics.matthews_corrcoef(targets, predictions)[
      "matthews_corrcoef"] == pytest.approx(100 * expected)
  # Not the same as scoring it as the wrong class (0 here).
  predictions[0] = 0
  assert metrics.matthews_corrcoef(targets, predictions)[
      "matthews_corrcoef"] != pytest.approx(100 * expected)
  assert metrics.matthews_corrcoef([1, 0], [1, 1])["matthews_corrcoef"] == 0


def test_axg_accuracy_and_gender_parity():
  examples = [{"idx": np.int32(i)} for i in range(6)]
  target_words = ["entailment", "entailment", "not_entailment",
                  "not_entailment", "entailment", "entailment"]
  predicted_words = ["entailment", "entailment", "entailment",
                     "not_entailment", "???", "???"]
  targets = [postprocessors.axg(w, e, is_target=True)
             for w, e in zip(target_words, examples)]
  predictions = [postprocessors.axg(w, e)
                 for w, e in zip(predicted_words, examples)]
  assert [t["pair"] for t in targets] == [0, 0, 1, 1, 2, 2]
  result = metrics.accuracy_and_gender_parity(targets, predictions)
  assert result["accuracy"] == pytest.approx(100 * 3 / 6)
  # Pair 0 consistent; pair 1 split; pair 2 both unparseable: not parity.
  assert result["gender_parity"] == pytest.approx(100 / 3)


def test_wsc_simple_postprocessor():
  example = {"targets_pretokenized": b"the pony", "label": np.int64(1)}
  assert postprocessors.wsc_simple(b"the pony", example, is_target=True) == 1
  assert postprocessors.wsc_simple("The pony", example) == 1
  # T5's rule: punctuation stays, so "pony." is another word; `its` is no
  # determiner; an apostrophe on one side only never names the candidate.
  assert postprocessors.wsc_simple("pony.", example) == 0
  assert postprocessors.wsc_simple("its pony", example) == 1  # Superset.
  assert postprocessors.wsc_simple("the little pony", example) == 1
  assert postprocessors.wsc_simple("the pony's", example) == 0
  hat = {"targets_pretokenized": "John's hat", "label": 1}
  assert postprocessors.wsc_simple("John's hat", hat) == 1
  assert postprocessors.wsc_simple("John", hat) == 0
  assert postprocessors.wsc_simple("the boy", example) == 0
  assert postprocessors.wsc_simple("  ", example) == -1
  tina = {"targets_pretokenized": "Tina", "label": 0}
  assert postprocessors.wsc_simple("Tina's", tina) == 0
  # Naming the candidate when it is not the referent is wrong, and vice
  # versa: accuracy compares against the label.
  targets = [1, 0, 0]
  predictions = [1, 1, -1]
  assert metrics.accuracy(targets, predictions)["accuracy"] == pytest.approx(
      100 / 3)


def test_binary_f1_for_paraphrase():
  # tp 1, fp 1, fn 1 -> 0.5; the unparseable answer on a 0 is an fp.
  assert metrics.binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == {"f1": 50.0}
  assert metrics.binary_f1([1, 0], [1, -1])["f1"] == pytest.approx(100 * 2 / 3)


def test_metrics_reject_length_mismatch_and_empty():
  with pytest.raises(ValueError):
    metrics.accuracy([1, 0], [1])
  with pytest.raises(ValueError):
    metrics.accuracy([], [])


def _full_results(prefix="taskless_super_glue_"):
  return {
      f"{prefix}boolq_v102": {"accuracy": 80.0},
      f"{prefix}cb_v102": {"accuracy": 90.0, "macro_f1": 70.0},
      f"{prefix}copa_v102": {"accuracy": 60.0},
      f"{prefix}multirc_v102": {"f1a": 70.0, "exact_match": 30.0},
      f"{prefix}record_v102": {"f1": 85.0, "exact_match": 75.0},
      f"{prefix}rte_v102": {"accuracy": 88.0},
      f"{prefix}wic_v102": {"accuracy": 66.0},
      f"{prefix}wsc_v102_simple_eval": {"accuracy": 64.0},
      f"{prefix}wsc_v102_simple_train": {},
      f"{prefix}axb_v102": {"matthews_corrcoef": 10.0},
  }


def test_super_glue_score_is_mean_of_task_means():
  expected = np.mean([80, 80, 60, 50, 80, 88, 66, 64])
  assert metrics.super_glue_score(_full_results()) == pytest.approx(expected)
  assert metrics.super_glue_score(
      _full_results("super_glue_")) == pytest.approx(expected)
  short = {"boolq": {"accuracy": 1.0}, "cb": {"a": 2.0, "b": 4.0},
           "copa": {"accuracy": 3.0}, "multirc": {"x": 4.0},
           "record": {"x": 5.0}, "rte": {"x": 6.0}, "wic": {"x": 7.0},
           "wsc": {"x": 8.0}}
  # CB counts once, as the mean of its two metrics (3).
  assert metrics.super_glue_score(short) == pytest.approx(
      (1 + 3 + 3 + 4 + 5 + 6 + 7 + 8) / 8)


def test_super_glue_score_rejects_missing_and_duplicate_tasks():
  results = _full_results()
  del results["taskless_super_glue_copa_v102"]
  with pytest.raises(ValueError, match="copa"):
    metrics.super_glue_score(results)
  both = {**_full_results(), "super_glue_rte_v102": {"accuracy": 1.0}}
  with pytest.raises(ValueError, match="rte"):
    metrics.super_glue_score(both)
