"""Rank classification (`<task>_rank`) on real SuperGLUE files with tiny
models: a model biased toward one label picks it for every example and the
task's own metrics come out as for that constant prediction (computed here
from the release files); each example is one scored row per label, scored
by `score_batch`; the variant is picked from the command line for
train-time evaluation and `prompt_tuning.evaluate`.

One `Evaluation` of a test mixture (CB, COPA, MultiRC, RTE) is compiled once
and called with different parameters, to keep the file fast.
"""

import json

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from helpers import T5_VOCAB_SIZE, shared_path, tiny_model
from prompt_tuning import errors
from prompt_tuning import partitioning
from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import rank_classification
from prompt_tuning.data import registration
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.training import data
from prompt_tuning.training import evaluation

LENGTHS = {"inputs": 64, "targets": 8}
CB, COPA, MULTIRC, RTE, AXG = (
    f"taskless_super_glue_{b}_v102_rank"
    for b in ("cb", "copa", "multirc", "rte", "axg"))
MIXTURE = "test_rank_classification_validation"
# Rows per task: 40 CB, 60 COPA and RTE examples, 60 MultiRC answer
# options, and one row cut off from its example (left out of the metrics).
NUM_ROWS = 121
# The label each task's biased model prefers.
FAVOURED = {CB: "neutral", COPA: "choice2", MULTIRC: "True",
            AXG: "not_entailment"}


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  yield local_super_glue
  gin.clear_config()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """model, random params, and a compiled Evaluation of the test mixture
  (validation split, NUM_ROWS rows per task, SeqIO logs in `log_dir`)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("PROMPT_TUNING_SUPER_GLUE_DIR",
                 str(shared_path("data", "super_glue")))
    patch.setenv("PROMPT_TUNING_VOCAB",
                 str(shared_path(*locations.VOCAB_IN_SHARED)))
    # One decoder layer: `biased_toward` silences `layers_0`.
    model = tiny_model("prompt", prompt_length=2, vocab_size=T5_VOCAB_SIZE,
                       num_encoder_layers=1, num_decoder_layers=1)
    boxed = model.init_shapes(LENGTHS["inputs"], LENGTHS["targets"])["params"]
    # Random weights drawn on the host (initialising through JAX compiles
    # for tens of seconds on a busy CPU).
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)
                              / np.sqrt(s.shape[0] if s.ndim > 1 else 1)),
        nn.unbox(boxed))
    data.get_task(CB)  # Registers the tasks.
    registration.add_mixture(MIXTURE, [(t, 1.0) for t in (CB, COPA, MULTIRC,
                                                          RTE)])
    mesh = partitioning.create_mesh()
    shardings = partitioning.param_shardings(boxed, mesh)
    log_dir = tmp_path_factory.mktemp("rank_logs")
    run = evaluation.Evaluation(MIXTURE, model, mesh, shardings,
                                batch_size=64, feature_lengths=LENGTHS,
                                num_examples=NUM_ROWS, log_dir=str(log_dir))
    yield {"model": model, "params": params, "run": run, "log_dir": log_dir,
           "mesh": mesh, "shardings": shardings}
  seqio.MixtureRegistry.remove(MIXTURE)


def biased_toward(params, labels):
  """Parameters under which every token of each of `labels` (EOS included)
  has a logit of sqrt(emb_dim) * 10 at every decoder position, every other
  token 0.

  The decoder's sublayers write nothing (output kernels zeroed), so its
  output is the normalised embedding of the previous token; every embedding
  is (1, 0, ..., 0), and only the labels' vocabulary columns of the output
  kernel read that first dimension.
  """
  vocab = vocab_lib.get_vocabulary()
  ids = sorted({i for label in labels
                for i in list(vocab.encode(label)) + [vocab.eos_id]})
  p = jax.tree_util.tree_map(jnp.asarray, params)
  layer = dict(p["decoder"]["layers_0"])
  for sub in ("self_attention", "encoder_decoder_attention"):
    layer[sub] = dict(layer[sub], out={"kernel": jnp.zeros_like(
        layer[sub]["out"]["kernel"])})
  layer["mlp"] = dict(layer["mlp"], wo={"kernel": jnp.zeros_like(
      layer["mlp"]["wo"]["kernel"])})
  kernel = jnp.zeros_like(p["decoder"]["logits_dense"]["kernel"])
  kernel = kernel.at[0, jnp.array(ids)].set(10.0)
  decoder = dict(p["decoder"], layers_0=layer,
                 logits_dense={"kernel": kernel},
                 decoder_norm={"scale": jnp.ones_like(
                     p["decoder"]["decoder_norm"]["scale"])})
  embedding = jnp.zeros_like(p["token_embedder"]["embedding"]).at[:, 0].set(1)
  return dict(p, decoder=decoder, token_embedder={"embedding": embedding})


def release(*parts):
  path = shared_path("data", "super_glue", *parts)
  return [json.loads(line) for line in path.read_text().splitlines()]


def constant_class_metrics(gold: list[int], constant: int,
                           num_classes: int) -> dict[str, float]:
  """Accuracy and macro-F1 of always predicting `constant`, by hand."""
  gold = np.asarray(gold)
  hits = float(np.sum(gold == constant))
  f1_constant = 2 * hits / (2 * hits + (len(gold) - hits))
  return {"accuracy": 100 * hits / len(gold),
          "macro_f1": 100 * f1_constant / num_classes}


@pytest.mark.slow
def test_biased_model_picks_its_label(tiny):
  biased = biased_toward(tiny["params"], FAVOURED.values())
  results = tiny["run"](biased, step=0)

  cb = ("entailment", "contradiction", "neutral")
  gold = [cb.index(x["label"]) for x in release("CB", "val.jsonl")[:40]]
  assert results[CB] == pytest.approx(
      constant_class_metrics(gold, cb.index("neutral"), 3))

  gold = [x["label"] for x in release("COPA", "val.jsonl")[:60]]
  assert results[COPA] == pytest.approx(
      {"accuracy": 100 * np.mean(np.asarray(gold) == 1)})

  # MultiRC, always True: F1a over answer options, exact match per question
  # (the last question may be cut short, as in the rows scored).
  options = [(p["idx"], q["idx"], a["label"])
             for p in release("MultiRC", "val.jsonl")
             for q in p["passage"]["questions"] for a in q["answers"]][:60]
  positives = sum(label for _, _, label in options)
  questions = {}
  for paragraph, question, label in options:
    questions.setdefault((paragraph, question), []).append(label)
  assert results[MULTIRC] == pytest.approx({
      "f1a": 100 * 2 * positives / (positives + len(options)),
      "exact_match": 100 * np.mean([all(v) for v in questions.values()])})

  # AX-g (test split; its first 20 gender pairs): a constant answer is
  # consistent on every pair.
  run = evaluation.Evaluation(AXG, tiny["model"], tiny["mesh"],
                              tiny["shardings"], batch_size=64,
                              feature_lengths=LENGTHS, split="test",
                              num_examples=80)
  gold = [x["label"] for x in release("AX-g", "AX-g.jsonl")[:40]]
  assert run(biased, step=0)[AXG] == pytest.approx({
      "accuracy": 100 * np.mean([g == "not_entailment" for g in gold]),
      "gender_parity": 100.0})


def test_one_scored_row_per_label_scored_by_score_batch(tiny):
  model, params = tiny["model"], tiny["params"]
  labels = ("entailment", "not_entailment")
  dataset = data.get_task(RTE).get_dataset(
      LENGTHS, split="validation", shuffle=False).take(NUM_ROWS).cache()
  rows = list(dataset.as_numpy_iterator())
  assert len(rows) == NUM_ROWS
  for i in range(NUM_ROWS // 2):
    pair = rows[2 * i:2 * i + 2]
    assert [r["targets_pretokenized"].decode() for r in pair] == list(labels)
    assert [int(r["rank_example"]) for r in pair] == [i, i]
    assert [int(r["rank_choice"]) for r in pair] == [0, 1]
    np.testing.assert_array_equal(pair[0]["inputs"], pair[1]["inputs"])
    gold_text = labels[int(pair[0]["label"])].encode()
    assert [r["rank_gold_targets"] for r in pair] == [gold_text] * 2
    assert pair[0]["idx"] == pair[1]["idx"] == i

  # The scores seqio logs (and the metric ranks) are score_batch's.
  converted = data.feature_converter()(dataset, LENGTHS)
  batch = next(converted.batch(NUM_ROWS).as_numpy_iterator())
  direct = np.asarray(jax.jit(model.score_batch)(
      params, {k: batch[k] for k in data.MODEL_FEATURES}))
  results = tiny["run"](params, step=1)
  logged = [json.loads(line) for line in
            (tiny["log_dir"] / f"{RTE}-000001.jsonl").read_text().splitlines()]
  assert len(logged) == NUM_ROWS
  np.testing.assert_allclose([x["score"] for x in logged], direct, rtol=1e-5,
                             atol=1e-4)
  choice = direct[:NUM_ROWS - 1].reshape(-1, 2).argmax(axis=1)
  gold = [int(r["label"]) for r in rows[:NUM_ROWS - 1:2]]
  assert results[RTE]["accuracy"] == pytest.approx(
      metrics.accuracy(gold, choice)["accuracy"])


def test_rows_of_an_example_are_grouped_and_ties_go_to_the_first():
  rows = [{"example": e, "choice": c, "target": t, "if_chosen": c}
          for e, t in ((0, 1), (1, 0), (2, 1)) for c in (0, 1)][:-1]
  scores = [-3.0, -1.0, -2.0, -2.0, -9.0]
  gold, predicted = rank_classification.ranked_predictions(rows, scores)
  assert (gold, predicted) == ([1, 0], [1, 0])  # Example 2 is incomplete.
  with pytest.raises(errors.ConfigError, match="at least two"):
    rank_classification.expand_choices(("only",))


@pytest.mark.slow
def test_variant_selected_from_the_command_line(tmp_path, capsys):
  from prompt_tuning import evaluate  # pylint: disable=g-import-not-at-top
  from prompt_tuning import infer  # pylint: disable=g-import-not-at-top
  from prompt_tuning import train  # pylint: disable=g-import-not-at-top
  cb = "taskless_super_glue_cb_v102"  # A small training split to check.
  # No pretrained weights: the frozen base is the seed's random init.
  common = ["--gin_file=models/t5_1_1_tiny.gin",
            "--gin_file=prompts/prompt.gin",
            "--gin.INITIAL_CHECKPOINT_PATH=None",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
            "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=3"]

  # Train-time evaluation: every check passes with the variant as the
  # evaluation task (and BEST_METRIC naming it); training on it is refused.
  train_args = common + ["--gin_file=runs/prompt_finetune.gin",
                         f"--gin.MODEL_DIR='{tmp_path / 'train'}'",
                         "--validate_only"]
  assert train.main(train_args + [
      f"--gin.MIXTURE_OR_TASK_NAME='{cb}'",
      f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{cb}_rank'",
      f"--gin.BEST_METRIC='{cb}_rank/accuracy'"]) == 0
  captured = capsys.readouterr()
  assert f"longest label of {cb}_rank is" in captured.out + captured.err
  gin.clear_config()
  with pytest.raises(errors.ConfigError, match=f"train on '{cb}' and "
                     "evaluate with"):
    train.main(train_args + [f"--gin.MIXTURE_OR_TASK_NAME='{cb}_rank'"])
  assert not (tmp_path / "train").exists()
  gin.clear_config()

  # prompt_tuning.evaluate: the zero-shot baseline (no MODEL_DIR), writing
  # its metrics.
  out = tmp_path / "eval"
  assert evaluate.main(common + [
      "--gin_file=runs/prompt_eval.gin", "--gin.MODEL_DIR=None",
      f"--gin.EVAL_OUTPUT_DIR='{out}'",
      f"--gin.MIXTURE_OR_TASK_NAME='{cb}_rank'",
      "--gin.evaluate.evaluate.num_examples=30"]) == 0
  written = json.loads((out / "metrics.json").read_text())
  assert written["step"] == 0
  assert set(written["results"]) == {f"{cb}_rank"}
  assert set(written["results"][f"{cb}_rank"]) == {"accuracy", "macro_f1"}
  assert (out / f"{cb}_rank-metrics.jsonl").exists()
  assert f"{cb}_rank" in capsys.readouterr().out
  gin.clear_config()
  with pytest.raises(errors.ConfigError, match="scored, not decoded"):
    infer.main(common + ["--gin_file=runs/prompt_infer.gin",
                         "--gin.MODEL_DIR=None",
                         f"--gin.MIXTURE_OR_TASK_NAME='{cb}_rank'",
                         "--validate_only"])
