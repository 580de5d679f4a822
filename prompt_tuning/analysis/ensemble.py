"""Prompt ensembling (Lester et al. 2021, Section 6 and Table 3).

N prompts trained for one task share the frozen model, so they are served
together: stack them into a bank `[N, p, e]`, repeat every example N times
(example-major: rows `b*N + i` are example b under prompt i, `prompt_index`
= i), decode greedily once, and take a majority vote over each example's N
decoded answers.

Ties: among the answers with the most votes, the winner is the one whose
most confident voter has the highest greedy log-likelihood; if those are
equal too (or no scores are given), the answer of the earliest prompt wins.
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from prompt_tuning.analysis import bank
from prompt_tuning.analysis import task_examples as task_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning import partitioning


def replicate_rows(features: Mapping[str, np.ndarray], num_prompts: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Repeats each example once per prompt, example-major.

  Args:
    features: each `[b, ...]`.
    num_prompts: N.

  Returns:
    (features each `[b*N, ...]`, `prompt_index` `[b*N]` = 0..N-1 per example).
  """
  repeated = {k: np.repeat(v, num_prompts, axis=0)
              for k, v in features.items()}
  b = len(next(iter(features.values())))
  return repeated, np.tile(np.arange(num_prompts, dtype=np.int32), b)


def majority_vote(answers: Sequence[Any],
                  scores: Optional[Sequence[float]] = None) -> tuple[Any, int]:
  """The majority answer of one example's N prompts (see module doc for ties).

  Args:
    answers: N hashable answers (decoded strings), in prompt order.
    scores: N greedy log-likelihoods, or None.

  Returns:
    (winning answer, index of the prompt whose answer is reported: the
    earliest voter for it, or its most confident voter when `scores` decide).
  """
  if not answers:
    raise ValueError("No answers to vote over.")
  counts: dict[Any, list[int]] = {}
  for i, answer in enumerate(answers):
    counts.setdefault(answer, []).append(i)
  top = max(len(v) for v in counts.values())
  tied = [a for a, voters in counts.items() if len(voters) == top]
  if len(tied) == 1 or scores is None:
    winner = tied[0]  # Dict order is first-appearance order.
    return winner, counts[winner][0]

  def confidence(answer):
    best = max(counts[answer], key=lambda i: (scores[i], -i))
    return scores[best], -counts[answer][0], best
  winner = max(tied, key=confidence)
  return winner, confidence(winner)[2]


@dataclasses.dataclass
class EnsembleResult:
  """Scores of N prompts alone and as an ensemble on one task.

  Attributes:
    task: task name.
    per_prompt: N dicts `{metric: value}`.
    ensemble: `{metric: value}` of the majority vote.
    answers: `[examples][N]` decoded answers.
    scores: `[examples][N]` their greedy log-likelihoods.
    voted: `[examples]` the voted answers.
  """
  task: str
  per_prompt: list[dict[str, float]]
  ensemble: dict[str, float]
  answers: list[list[str]]
  scores: list[list[float]]
  voted: list[str]

  def mean(self, metric: str) -> float:
    return float(np.mean([s[metric] for s in self.per_prompt]))

  def std(self, metric: str) -> float:
    return float(np.std([s[metric] for s in self.per_prompt]))

  def best(self, metric: str) -> float:
    return float(np.max([s[metric] for s in self.per_prompt]))


def ensemble_decode(predictor: bank.BankPredictor, params: Any,
                    features: Mapping[str, np.ndarray], num_prompts: int,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Decodes every example under every prompt of the bank in shared passes.

  Args:
    predictor: a `BankPredictor` over a bank of `num_prompts`.
    params: its parameters.
    features: model features `[b, ...]`.
    num_prompts: N.
    batch_size: examples per pass (each pass decodes `batch_size * N` rows).

  Returns:
    (tokens `[b, N, L]`, scores `[b, N]`).
  """
  rows, index = replicate_rows(features, num_prompts)
  tokens, scores = predictor(params, rows, index, batch_size * num_prompts)
  b = len(features["encoder_input_tokens"])
  return (tokens.reshape(b, num_prompts, -1),
          scores.reshape(b, num_prompts))


def evaluate_ensemble(model: EncoderDecoderModel, base_params: Any,
                      prompts: Sequence[np.ndarray], task_name: str,
                      feature_lengths: Mapping[str, int], batch_size: int,
                      split: str = "validation",
                      num_examples: Optional[int] = None,
                      mesh: Optional[Any] = None) -> EnsembleResult:
  """Scores each prompt and their majority vote from one decoding pass.

  Args:
    model: a prompt model (its prompt length and placement are used).
    base_params: its parameters (the frozen base; the prompt is replaced).
    prompts: N prompts `[p, e]` trained for `task_name`.
    task_name: a registered task with predict metrics.
    feature_lengths: `{'inputs': ..., 'targets': ...}`; targets sets L.
    batch_size: examples per pass (times N rows); a multiple of the mesh's
      data axis.
    split: split to evaluate.
    num_examples: only the first N examples.
    mesh: default `partitioning.create_mesh()`.
  """
  stacked = bank.stack_prompts(prompts)
  n = len(stacked)
  bank_m = bank.bank_model(model, n, prompt_length=stacked.shape[1])
  params = bank.with_prompt(base_params, stacked)
  predictor = bank.BankPredictor(bank_m, mesh or partitioning.create_mesh(),
                                 feature_lengths["targets"])
  examples = task_lib.load_task_examples(task_name, feature_lengths, split,
                                         num_examples)
  tokens, scores = ensemble_decode(predictor, params, examples.features, n,
                                   batch_size)
  vocab = task_lib.target_vocabulary(examples.task)
  answers = [[task_lib.decode_tokens(vocab, row) for row in per_example]
             for per_example in tokens.tolist()]
  voted = [majority_vote(a, s)[0] for a, s in zip(answers, scores.tolist())]
  targets = task_lib.targets(examples)

  def score(texts):
    predictions = [task_lib.postprocess(examples.task, t, ex)
                   for t, ex in zip(texts, examples.examples)]
    return task_lib.predict_metrics(examples.task, targets, predictions)

  per_prompt = [score([a[i] for a in answers]) for i in range(n)]
  return EnsembleResult(task=task_name, per_prompt=per_prompt,
                        ensemble=score(voted), answers=answers,
                        scores=scores.tolist(), voted=voted)


def table3_markdown(results: Sequence[EnsembleResult]) -> str:
  """The paper's Table 3 layout: Dataset | Metric | Average | Best | Ensemble.

  Average is the mean ± standard deviation over the N prompts. A second
  table lists every prompt's score.
  """
  lines = ["| Dataset | Metric | Average | Best | Ensemble |",
           "|---|---|---:|---:|---:|"]
  for r in results:
    for metric in r.ensemble:
      lines.append(f"| {r.task} | {metric} | {r.mean(metric):.1f} "
                   f"±{r.std(metric):.1f} | {r.best(metric):.1f} | "
                   f"{r.ensemble[metric]:.1f} |")
  lines += ["", "| Dataset | Metric | " + " | ".join(
      f"prompt {i}" for i in range(max(len(r.per_prompt) for r in results)))
            + " |"]
  lines.append("|---|---|" + "---:|" * max(len(r.per_prompt) for r in results))
  for r in results:
    for metric in r.ensemble:
      lines.append(f"| {r.task} | {metric} | " + " | ".join(
          f"{s[metric]:.1f}" for s in r.per_prompt) + " |")
  return "\n".join(lines) + "\n"
