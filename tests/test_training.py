"""The trainer end to end on real SuperGLUE RTE files and the real T5
vocabulary, with tiny models: loss goes down, frozen weights never move,
meshes agree, NaN stops cleanly, a killed run resumes bit-identically, and
evaluation/inference write what they promise."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from helpers import REPO_ROOT, RTE, T5X_TINY, T5X_TINY_CONFIG, T5_VOCAB_SIZE
from helpers import mini_checkpoint, mini_model
from helpers import prompt_run_flags, rte_train_cfg, shared_path, subprocess_env
from helpers import tiny_model
from prompt_tuning import partitioning
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning import evaluate as evaluate_lib
from prompt_tuning import infer as infer_lib
from prompt_tuning.data import super_glue_submission
from prompt_tuning.prompts import freezing
from prompt_tuning.training import evaluation
from prompt_tuning.training import monitoring
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned
from prompt_tuning.training import run_settings
from prompt_tuning.training import state as state_lib
from prompt_tuning.training import trainer
from prompt_tuning.training import train_state

LENGTHS = {"inputs": 64, "targets": 8}  # RTE's labels take up to 6.


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  return local_super_glue


def random_prompt_model(prompt_length=4, dropout_rate=0.0):
  return tiny_model("prompt", prompt_length=prompt_length,
                    vocab_size=T5_VOCAB_SIZE, num_encoder_layers=1,
                    num_decoder_layers=1, dropout_rate=dropout_rate)


def tiny_fixture_model(prompt_length=3):
  """The shape of the T5X-written checkpoint, with a prompt."""
  config = T5X_TINY_CONFIG
  return EncoderDecoderModel(PromptTransformer(config,
                                               prompt_length=prompt_length))


def _random_init(model):
  """(boxed parameter shapes, randomly initialised parameters on one
  device)."""
  boxed = state_lib.model_shapes(model, LENGTHS)
  mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.devices()[:1])
  initial = state_lib.initial_params(
      model, boxed, mesh, None, _prompt_split(boxed), jax.random.PRNGKey(0))
  return boxed, jax.device_get(initial.params)


def _prompt_split(boxed):
  return freezing.compute_split(boxed, freezing.PROMPT_PATTERNS)


@pytest.mark.slow
def test_loss_decreases_on_rte(tmp_path):
  # The pre-trained mini T5 with a 20-position prompt: a random tiny model's
  # loss moves less than the noise between windows of different batches.
  result = trainer.train(
      model=mini_model(dropout_rate=0.1),
      initial_checkpoint_path=mini_checkpoint(),
      train_dataset_cfg=rte_train_cfg(LENGTHS), train_steps=30,
      model_dir=str(tmp_path), log_period=10,
      checkpoint_cfg=run_settings.CheckpointConfig(period=100),
      progress=False)
  losses = [m["loss_per_token"] for _, m in result.history]
  assert len(losses) == 3 and all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
  assert result.metrics["tokens_per_second"] > 0
  # TensorBoard events were written.
  assert list((tmp_path / "train").glob("events.out.tfevents*"))


def test_frozen_weights_are_bit_identical_after_training(tmp_path):
  ckpt = shared_path(*T5X_TINY)
  result = trainer.train(
      model=tiny_fixture_model(), train_dataset_cfg=rte_train_cfg(LENGTHS),
      train_steps=5, model_dir=str(tmp_path),
      initial_checkpoint_path=str(ckpt), log_period=5, progress=False)
  pretrained = param_tree.flatten_params(
      sharded.read_params(ckpt))
  trained = param_tree.flatten_params(jax.device_get(result.state.params))
  assert set(trained) - set(pretrained) == {"prompt/prompt"}
  for name, value in pretrained.items():
    np.testing.assert_array_equal(trained[name], value, err_msg=name)
  # Only the prompt and its optimizer state are in the checkpoint.
  saved = ocp.StandardCheckpointer().metadata(
      tmp_path / "checkpoints" / "5" / "state")
  names = param_tree.flatten_params(saved.item_metadata.tree)
  assert {n.split("/")[0] for n in names} == {"step", "trainable",
                                                "opt_state"}
  assert "trainable/prompt/prompt" in names
  # By default Adafactor's counter continues the checkpoint's (step 3), as
  # the original does.
  assert optimizers.optimizer_step(result.state.opt_state) == 3 + 5


def test_optimizer_step_zero_and_hugging_face_checkpoints_start_at_0():
  # ('restored', the default, is checked above: the T5X step continues.)
  from helpers import TESTDATA  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import preflight  # pylint: disable=g-import-not-at-top
  ckpt = str(shared_path(*T5X_TINY))
  model = tiny_fixture_model()
  boxed = state_lib.model_shapes(model, LENGTHS)
  built = state_lib.build_train_state(
      model, partitioning.create_mesh(1), optimizers.adafactor(), ckpt,
      _prompt_split(boxed), boxed_params=boxed, optimizer_step="zero")
  assert optimizers.optimizer_step(built.state.opt_state) == 0
  # A Hugging Face checkpoint holds no step: 0, and the run says so.
  note = preflight._check_checkpoint_path(  # pylint: disable=protected-access
      str(TESTDATA / "hf_t5_1_1_tiny"), "restored")
  assert "holds no step counter" in note and "starts at 0" in note
  assert preflight._check_checkpoint_path(ckpt, "restored") is None  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4)])
def test_train_step_on_meshes_matches_one_device(mesh_shape):
  model = random_prompt_model()
  boxed, params = _random_init(model)
  tx = optimizers.adafactor()
  rng = np.random.RandomState(0)
  targets = rng.randint(2, 32000, (8, 4)).astype(np.int32)
  batch = {"encoder_input_tokens": rng.randint(2, 32000, (8, 16)).astype(
               np.int32),
           "decoder_target_tokens": targets,
           "decoder_input_tokens": np.concatenate(
               [np.zeros((8, 1), np.int32), targets[:, :-1]], 1)}

  def run(shape):
    devices = jax.devices()[:shape[0] * shape[1]]
    mesh = partitioning.create_mesh(mesh_shape=shape, devices=devices)
    split = _prompt_split(boxed)
    make = lambda p: train_state.create_train_state(p, split, tx)
    shardings = partitioned.state_shardings(
        boxed, jax.eval_shape(make, params), split, mesh)
    state = jax.jit(make, out_shardings=shardings)(params)
    step = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings)
    losses = []
    for _ in range(3):
      state, metrics = step(state, batch, jax.random.PRNGKey(1))
      losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.trainable)

  base_losses, base_prompt = run((1, 1))
  losses, prompt = run(mesh_shape)
  np.testing.assert_allclose(losses, base_losses, rtol=1e-5)
  np.testing.assert_allclose(prompt["prompt"]["prompt"],
                             base_prompt["prompt"]["prompt"], atol=1e-5)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(monitoring.NonFiniteLossError, match="last good checkpoint "
                     "is step 2"):
    trainer.train(
        model=random_prompt_model(), train_dataset_cfg=rte_train_cfg(LENGTHS),
        train_steps=6, model_dir=str(tmp_path), log_period=1,
        checkpoint_cfg=run_settings.CheckpointConfig(period=1),
        # Updates blow up from the third step on.
        optimizer=optax.chain(optimizers.adafactor(), optax.scale_by_schedule(
            lambda count: jnp.where(count >= 2, jnp.inf, 1.0))),
        progress=False)
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [1, 2]


def _train_command(model_dir, train_steps, checkpoint_period=2):
  return [sys.executable, "-m", "prompt_tuning.train", *prompt_run_flags(
      model_dir, lengths=LENGTHS, train_steps=train_steps, batch_size=4,
      checkpoint_period=checkpoint_period)]


def _saved_prompt(model_dir, step):
  tree = ocp.StandardCheckpointer().restore(
      pathlib.Path(model_dir) / "checkpoints" / str(step) / "state")
  return np.asarray(tree["trainable"]["prompt"]["prompt"]), tree


@pytest.mark.slow
def test_killed_run_resumes_bit_identically(tmp_path, local_data):
  env = subprocess_env(local_data, tmp_path)
  full, killed = tmp_path / "full", tmp_path / "killed"
  subprocess.run(_train_command(full, 8), env=env, cwd=REPO_ROOT, check=True,
                 capture_output=True, timeout=600)

  # Kill -9 a long run as soon as its step-4 checkpoint is complete.
  proc = subprocess.Popen(_train_command(killed, 1000), env=env,
                          cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  marker = killed / "checkpoints" / "4" / "commit_success.txt"
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert marker.exists(), "the interrupted run never reached step 4"
  steps = [int(p.name) for p in (killed / "checkpoints").iterdir()
           if p.name.isdigit()]
  assert 4 <= max(steps) <= 8, steps

  subprocess.run(_train_command(killed, 8), env=env, cwd=REPO_ROOT,
                 check=True, capture_output=True, timeout=600)
  expected, expected_tree = _saved_prompt(full, 8)
  resumed, resumed_tree = _saved_prompt(killed, 8)
  np.testing.assert_array_equal(resumed, expected)
  for a, b in zip(jax.tree_util.tree_leaves(expected_tree["opt_state"]),
                  jax.tree_util.tree_leaves(resumed_tree["opt_state"])):
    np.testing.assert_array_equal(a, b)
  meta = json.loads((killed / "checkpoints" / "8" / "meta" /
                     "metadata").read_text())
  assert meta["data_position"] == 8


@pytest.mark.slow
def test_evaluate_and_infer_write_their_outputs(tmp_path):
  ckpt = str(shared_path(*T5X_TINY))
  model = tiny_fixture_model()
  trainer.train(model=model, train_dataset_cfg=rte_train_cfg(LENGTHS),
                train_steps=2, model_dir=str(tmp_path),
                initial_checkpoint_path=ckpt, progress=False)
  results = evaluate_lib.evaluate(
      model=model, mixture_or_task_name=RTE, task_feature_lengths=LENGTHS,
      batch_size=16, model_dir=str(tmp_path), initial_checkpoint_path=ckpt,
      num_examples=32)
  assert set(results) == {RTE} and set(results[RTE]) == {"accuracy"}
  written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert written["step"] == 2 and "accuracy" in written["results"][RTE]

  paths = infer_lib.infer(
      model=model, mixture_or_task_name=RTE, task_feature_lengths=LENGTHS,
      batch_size=16, model_dir=str(tmp_path), initial_checkpoint_path=ckpt,
      split="validation")
  lines = pathlib.Path(paths[RTE]).read_text().splitlines()
  assert len(lines) == 277
  first = json.loads(lines[0])
  assert set(first) == {"index", "idx", "inputs", "prediction",
                        "postprocessed"}
  assert first["inputs"].startswith("hypothesis:")


def test_batch_size_must_split_over_the_data_axis(tmp_path):
  with pytest.raises(ValueError, match="BATCH_SIZE 4 is not divisible by the "
                     "mesh's 8-way 'data' axis"):
    trainer.train(model=random_prompt_model(),
                  train_dataset_cfg=rte_train_cfg(LENGTHS, batch_size=4),
                  train_steps=1, model_dir=str(tmp_path), progress=False)


def test_submission_lines_follow_the_leaderboard_format():
  rte = super_glue_submission.submission_lines("rte", [
      {"idx": 0, "postprocessed": 1, "prediction": "not_entailment"},
      {"idx": 1, "postprocessed": -1, "prediction": "garbage"}])
  assert rte == [{"idx": 0, "label": "not_entailment"},
                 {"idx": 1, "label": "not_entailment"}]
  boolq = super_glue_submission.submission_lines("boolq", [
      {"idx": 3, "postprocessed": 1, "prediction": "True"}])
  assert boolq == [{"idx": 3, "label": "true"}]
  multirc = super_glue_submission.submission_lines("multirc", [
      {"idx": {"paragraph": 0, "question": 0, "answer": 0},
       "postprocessed": {"value": 1, "group": (0, 0)}},
      {"idx": {"paragraph": 0, "question": 0, "answer": 1},
       "postprocessed": {"value": 0, "group": (0, 0)}},
      {"idx": {"paragraph": 0, "question": 1, "answer": 2},
       "postprocessed": {"value": 1, "group": (0, 1)}}])
  assert multirc == [{"idx": 0, "passage": {"questions": [
      {"idx": 0, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]},
      {"idx": 1, "answers": [{"idx": 2, "label": 1}]}]}}]


@pytest.mark.slow
def test_restore_rejects_a_different_frozen_base(tmp_path):
  ckpt = str(shared_path(*T5X_TINY))
  trainer.train(model=tiny_fixture_model(),
                train_dataset_cfg=rte_train_cfg(LENGTHS), train_steps=1,
                model_dir=str(tmp_path), initial_checkpoint_path=ckpt,
                progress=False)
  with pytest.raises(Exception, match="different frozen model|mismatch"):
    trainer.train(model=random_prompt_model(prompt_length=3),
                  train_dataset_cfg=rte_train_cfg(LENGTHS), train_steps=2,
                  model_dir=str(tmp_path), progress=False)


def test_evaluation_scores_targets_for_score_metrics():
  # A rank-classification style metric reads the model's log-likelihood of
  # each example's target; the evaluator must call the scoring path.
  import seqio  # pylint: disable=g-import-not-at-top
  from prompt_tuning.data import registration  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import data  # pylint: disable=g-import-not-at-top
  rte = data.get_task(RTE)  # Registers the tasks.
  received = {}

  def mean_log_likelihood(targets, scores):
    received["n"] = len(scores)
    return {"mean_log_likelihood": float(np.mean(scores))}

  registration.add_task("test_rte_scored", rte.source,
                        rte.preprocessors[0], metric_fns=[mean_log_likelihood])
  try:
    model = random_prompt_model()
    boxed, params = _random_init(model)
    mesh = partitioning.create_mesh()
    run = evaluation.Evaluation(
        "test_rte_scored", model, mesh,
        partitioning.param_shardings(boxed, mesh), batch_size=8,
        feature_lengths=LENGTHS, num_examples=16)
    results = run(params, step=0)
  finally:
    seqio.TaskRegistry.remove("test_rte_scored")
  assert received["n"] == 16
  # Each target is a few tokens of a 32k vocabulary under a random model.
  assert -60 < results["test_rte_scored"]["mean_log_likelihood"] < -5
