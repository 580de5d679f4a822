"""Prompt ensembling: the vote and its tie rule, the example-major layout,
one bank pass equal to decoding each prompt alone, and the Table 3 layout."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import helpers
from helpers import shared_path
from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import ensemble
from prompt_tuning.data import locations

RTE = "taskless_super_glue_rte_v102"


def tiny_model(prompt_length=3):
  return helpers.tiny_model("prompt", prompt_length=prompt_length,
                            vocab_size=helpers.T5_VOCAB_SIZE,
                            num_encoder_layers=1, num_decoder_layers=1)


def one_device_mesh():
  return partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.devices()[:1])


def random_params(model):
  return jax.device_get(jax.jit(
      lambda rng: nn.unbox(model.init(rng, 1, 1))["params"])(
          jax.random.PRNGKey(0)))


def random_prompts(n, length=3, width=helpers.TINY_CONFIG["emb_dim"],
                   seed=1):
  return list(np.random.RandomState(seed).uniform(
      -2, 2, (n, length, width)).astype(np.float32))


def test_majority_vote_and_ties():
  assert ensemble.majority_vote(["a", "b", "a"]) == ("a", 0)
  assert ensemble.majority_vote(["b", "a", "a", "c", "b", "a"]) == ("a", 1)
  # Tie without scores: the earliest prompt's answer.
  assert ensemble.majority_vote(["b", "a", "a", "b"]) == ("b", 0)
  # Tie with scores: the answer with the single most confident voter.
  assert ensemble.majority_vote(["b", "a", "a", "b"],
                                [-3.0, -0.5, -4.0, -2.0]) == ("a", 1)
  assert ensemble.majority_vote(["b", "a", "a", "b"],
                                [-3.0, -2.5, -4.0, -0.1]) == ("b", 3)
  # Equal confidence too: back to the earliest prompt.
  assert ensemble.majority_vote(["x", "y"], [-1.0, -1.0]) == ("x", 0)
  # Scores never overturn a strict majority.
  assert ensemble.majority_vote(["a", "a", "b"], [-9.0, -9.0, 0.0])[0] == "a"
  with pytest.raises(ValueError):
    ensemble.majority_vote([])


def test_rows_are_example_major():
  features = {"encoder_input_tokens": np.array([[5, 1], [7, 1]], np.int32)}
  rows, index = ensemble.replicate_rows(features, 3)
  np.testing.assert_array_equal(rows["encoder_input_tokens"][:, 0],
                                [5, 5, 5, 7, 7, 7])
  np.testing.assert_array_equal(index, [0, 1, 2, 0, 1, 2])


def test_one_bank_pass_equals_each_prompt_alone():
  model = tiny_model()
  base = random_params(model)
  prompts = random_prompts(3)
  rng = np.random.RandomState(0)
  inputs = rng.randint(2, 32000, (8, 12)).astype(np.int32)
  inputs[:, 9:] = 0
  inputs[:, 8] = 1
  features = {"encoder_input_tokens": inputs}

  bank_m = bank.bank_model(model, 3)
  predictor = bank.BankPredictor(bank_m, one_device_mesh(), 5)
  tokens, scores = ensemble.ensemble_decode(
      predictor, bank.with_prompt(base, bank.stack_prompts(prompts)),
      features, 3, batch_size=8)
  assert tokens.shape == (8, 3, 5) and scores.shape == (8, 3)

  alone = jax.jit(model.predict_batch, static_argnames="max_decode_length")
  for i, prompt in enumerate(prompts):
    expected, expected_scores = alone(bank.with_prompt(base, prompt),
                                      features, max_decode_length=5)
    np.testing.assert_array_equal(tokens[:, i], expected, err_msg=str(i))
    np.testing.assert_allclose(scores[:, i], expected_scores, rtol=1e-4,
                               atol=1e-4)
  # The prompts really differ, so the bank did pick per row.
  assert len({tokens[:, i].tobytes() for i in range(3)}) > 1


@pytest.mark.slow
def test_evaluate_ensemble_on_rte_and_table3(monkeypatch):
  monkeypatch.setenv("PROMPT_TUNING_SUPER_GLUE_DIR",
                     str(shared_path("data", "super_glue")))
  monkeypatch.setenv("PROMPT_TUNING_VOCAB",
                     str(shared_path(*locations.VOCAB_IN_SHARED)))
  model = tiny_model()
  prompts = random_prompts(3)
  result = ensemble.evaluate_ensemble(
      model, random_params(model), prompts, RTE,
      {"inputs": 32, "targets": 4}, batch_size=8, num_examples=10,
      mesh=one_device_mesh())
  assert len(result.answers) == 10 and all(len(a) == 3 for a in
                                           result.answers)
  assert result.voted == [ensemble.majority_vote(a, s)[0] for a, s in
                          zip(result.answers, result.scores)]
  assert set(result.ensemble) == {"accuracy"} and len(result.per_prompt) == 3

  fake = ensemble.EnsembleResult(
      task="rte", per_prompt=[{"accuracy": 70.0}, {"accuracy": 74.0},
                              {"accuracy": 72.0}],
      ensemble={"accuracy": 75.5}, answers=[], scores=[], voted=[])
  table = ensemble.table3_markdown([fake])
  assert table.splitlines()[:3] == [
      "| Dataset | Metric | Average | Best | Ensemble |",
      "|---|---|---:|---:|---:|",
      "| rte | accuracy | 72.0 ±1.6 | 74.0 | 75.5 |"]
  assert "| rte | accuracy | 70.0 | 74.0 | 72.0 |" in table
