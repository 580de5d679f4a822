"""P-Tuning v2 end to end: deep prompts + a classification head trained by
the trainer from gin (runs/ptuning_v2_finetune.gin) on real SuperGLUE CB
files with the T5X-written tiny checkpoint; only the prompt and head train
and are checkpointed; the head's class ids are scored by CB's own metrics in
training and by `prompt_tuning.evaluate`; deep prompts round-trip through
`.npy` files and start a new run (P-Tuning v2's multi-task option); a soft
and a deep prompt train together."""

import json

import flax.linen as nn
import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import initial_params, shared_path
from prompt_tuning import evaluate as evaluate_lib
from prompt_tuning import errors
from prompt_tuning import gin_utils
from prompt_tuning import partitioning
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.data import locations
from prompt_tuning.prompts import deep_init
from prompt_tuning.prompts import deep_soft
from prompt_tuning.prompts import freezing
from prompt_tuning.training import data
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned
from prompt_tuning.training import train_state
from prompt_tuning.training import trainer

CB = "taskless_super_glue_cb_v102"  # 250 train / 56 validation, 3 classes.
T5X_TINY = ("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")
LENGTHS = {"inputs": 32, "targets": 8}
STEPS, BATCH, LOG = 16, 32, 8  # A log window (256 examples) ~ one CB epoch.
TRAINED = {"deep_prompt/encoder/prefix", "classifier/dense/kernel",
           "classifier/bias"}


def _parse(files, bindings):
  gin.clear_config()
  gin_utils.parse_gin(files, bindings)


def _bindings(model_dir, **extra):
  values = {
      "MODEL_DIR": repr(str(model_dir)), "MIXTURE_OR_TASK_NAME": repr(CB),
      "INITIAL_CHECKPOINT_PATH": repr(str(shared_path(*T5X_TINY))),
      "NUM_CLASSES": "3", "PREFIX_LENGTH": "4",
      "TASK_FEATURE_LENGTHS": repr(LENGTHS),
      **{k: str(v) for k, v in extra.items()}}
  return [f"{k} = {v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One P-Tuning v2 training run from gin, shared by the tests below."""
  mp = pytest.MonkeyPatch()
  mp.setenv("PROMPT_TUNING_SUPER_GLUE_DIR",
            str(shared_path("data", "super_glue")))
  mp.setenv("PROMPT_TUNING_VOCAB",
            str(shared_path(*locations.VOCAB_IN_SHARED)))
  model_dir = tmp_path_factory.mktemp("ptv2") / "cb"
  try:
    _parse(["models/t5_1_1_tiny.gin", "prompts/deep_prompt.gin",
            "runs/ptuning_v2_finetune.gin"],
           _bindings(model_dir, TRAIN_STEPS=STEPS, BATCH_SIZE=BATCH,
                     EVAL_PERIOD=STEPS, CHECKPOINT_PERIOD=STEPS,
                     LEARNING_RATE=0.3) +
           [f"trainer.train.log_period = {LOG}",
            "trainer.train.progress = False"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    result = gin.get_configurable(trainer.train)(run_config=gin.config_str())
  finally:
    gin.clear_config()
  yield model, model_dir, result
  mp.undo()


@pytest.mark.slow
def test_gin_run_trains_the_head_and_loss_decreases(run):
  model, _, result = run
  assert model.is_classifier
  per_example = [m["loss_per_token"] for _, m in result.history]
  assert len(per_example) == STEPS // LOG and all(np.isfinite(per_example))
  # Cross entropy over 3 classes starts near ln 3 and must go down.
  assert per_example[0] < 1.2, per_example
  assert per_example[-1] < per_example[0] - 0.03, per_example
  assert all(m["update_ratio"] > 0 for _, m in result.history)


def test_only_deep_prompt_and_head_change_and_are_checkpointed(run):
  _, model_dir, result = run
  pretrained = param_tree.flatten_params(
      sharded.read_params(shared_path(*T5X_TINY)))
  trained = param_tree.flatten_params(jax.device_get(result.state.params))
  assert set(trained) - set(pretrained) == TRAINED
  for name, value in pretrained.items():  # The frozen T5, bit for bit.
    np.testing.assert_array_equal(trained[name], value, err_msg=name)
  assert set(param_tree.flatten_params(result.state.trainable)) == TRAINED
  saved = ocp.StandardCheckpointer().metadata(
      model_dir / "checkpoints" / str(STEPS) / "state")
  names = set(param_tree.flatten_params(saved.item_metadata.tree))
  assert {n for n in names if n.startswith("trainable/")} == {
      f"trainable/{n}" for n in TRAINED}
  assert not any(n.startswith("frozen/") for n in names)
  assert all(n.split("/")[0] in ("step", "trainable", "opt_state")
             for n in names)


def _direct_accuracy(model, params, n=None):
  """CB validation accuracy of `model.classify_batch`, computed here."""
  task = data.get_task(CB)
  ds = task.get_dataset(LENGTHS, split="validation", shuffle=False)
  if n:
    ds = ds.take(n)
  examples = list(ds.as_numpy_iterator())
  tokens = np.zeros((len(examples), LENGTHS["inputs"]), np.int32)
  for i, ex in enumerate(examples):
    tokens[i, :len(ex["inputs"])] = ex["inputs"][:LENGTHS["inputs"]]
  ids = np.asarray(jax.jit(model.classify_batch)(
      params, {"encoder_input_tokens": tokens}))
  labels = np.array([ex["label"] for ex in examples])
  return 100.0 * float(np.mean(ids == labels)), ids


def test_head_class_ids_are_scored_by_the_task_metrics(run, tmp_path):
  model, model_dir, result = run
  in_training = result.eval_results[STEPS][CB]
  assert set(in_training) == {"accuracy", "macro_f1"}  # CB's own metrics.
  accuracy, ids = _direct_accuracy(model, jax.device_get(result.state.params))
  assert in_training["accuracy"] == pytest.approx(accuracy)
  logged = [json.loads(line) for line in (
      model_dir / "inference_eval" / f"{CB}-{STEPS:06d}.jsonl").open()]
  assert [r["prediction"] for r in logged] == ids.tolist()

  # prompt_tuning.evaluate on the run's checkpoint, from gin.
  try:
    _parse(["models/t5_1_1_tiny.gin", "prompts/deep_prompt.gin",
            "runs/ptuning_v2_eval.gin"],
           _bindings(model_dir, BATCH_SIZE=8,
                     EVAL_OUTPUT_DIR=repr(str(tmp_path / "eval"))))
    results = gin.get_configurable(evaluate_lib.evaluate)()
  finally:
    gin.clear_config()
  written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert written["step"] == STEPS
  assert written["results"] == results
  assert results[CB]["accuracy"] == pytest.approx(in_training["accuracy"])
  assert results[CB]["macro_f1"] == pytest.approx(in_training["macro_f1"])


@pytest.mark.slow
def test_deep_prompt_file_round_trip_and_run_init(run, tmp_path):
  model, model_dir, result = run
  trained = param_tree.flatten_params(jax.device_get(result.state.params))
  prefix, name, step = prompt_io.export_prompt(
      model_dir, name="deep_prompt/encoder/prefix")
  assert (name, step, prefix.shape) == ("deep_prompt/encoder/prefix", STEPS,
                                        (2, 2, 4, 4))  # [L, 2, p, h*d]
  path = prompt_io.save_prompt(tmp_path / "deep.npy", prefix)
  shapes = {k: v.shape for k, v in trained.items()}
  fresh = {k: np.zeros_like(v) for k, v in trained.items()}
  source = deep_init.from_files(encoder=str(path))
  source.check(shapes)
  loaded = param_tree.flatten_params(
      deep_init.initialize_deep_prompt(param_tree.unflatten_params(fresh),
                                       source))
  np.testing.assert_array_equal(loaded["deep_prompt/encoder/prefix"],
                                trained["deep_prompt/encoder/prefix"])
  for other in set(loaded) - {"deep_prompt/encoder/prefix"}:
    assert not np.any(loaded[other]), other  # Nothing else is touched.

  np.save(tmp_path / "bad.npy", np.zeros((2, 2, 5, 4), np.float32))
  with pytest.raises(errors.ConfigError) as e:
    deep_init.from_files(encoder=str(tmp_path / "bad.npy")).check(shapes)
  message = str(e.value)
  assert "bad.npy" in message and "[2, 2, 5, 4]" in message
  assert "expected [2, 2, 4, 4]" in message

  # The multi-task option from gin: a new run's deep prompt starts from the
  # trained run's, its head afresh (checked before anything is loaded).
  try:
    _parse(["models/t5_1_1_tiny.gin", "prompts/deep_prompt.gin",
            "prompts/deep_from_run.gin"],
           ["PREFIX_LENGTH = 4", "NUM_CLASSES = 2", "NUM_EMBEDDINGS = 64",
            f"DEEP_PROMPT_RUN = {str(model_dir)!r}"])
    new_model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert new_model.module.prompt_source == deep_init.from_run(str(model_dir))
  boxed = new_model.init_shapes(8, 4)["params"]
  params = initial_params(new_model, lengths={"inputs": 8, "targets": 4})
  flat = param_tree.flatten_params(jax.device_get(params))
  np.testing.assert_array_equal(flat["deep_prompt/encoder/prefix"],
                                trained["deep_prompt/encoder/prefix"])
  assert flat["classifier/bias"].shape == (2,)  # Its own classes.


@pytest.mark.slow
def test_soft_and_deep_prompts_train_together():
  try:
    _parse(["models/t5_1_1_tiny.gin", "prompts/deep_and_soft_prompt.gin"],
           ["PREFIX_LENGTH = 3", "PROMPT_LENGTH = 2", "NUM_CLASSES = 3",
            "NUM_EMBEDDINGS = 64",
            "models.EncoderDecoderModel.objective = 'classification'"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert isinstance(model.module, deep_soft.DeepSoftPromptTransformer)
  boxed = model.init_shapes(8, 4)["params"]
  params = jax.jit(lambda r: nn.unbox(model.init(r, 8, 4))["params"])(
      jax.random.PRNGKey(0))
  tx = optimizers.adafactor(learning_rate=0.3)
  mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.devices()[:1])
  # The model declares both prompts and the head (no TRAINABLE_PATTERNS).
  split = freezing.compute_split(boxed, model.trainable_patterns)
  assert set(split.trainable) == {"prompt/prompt"} | TRAINED
  state = train_state.create_train_state(params, split, tx)
  shardings = partitioned.state_shardings(boxed, state, split, mesh)
  before = param_tree.flatten_params(jax.device_get(state.params))
  assert {n for n in before if n.startswith(("prompt/", "deep_prompt/",
                                             "classifier/"))} == {
      "prompt/prompt"} | TRAINED
  step = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings)
  rng = np.random.RandomState(0)
  batch = {"encoder_input_tokens": rng.randint(2, 64, (4, 8)).astype(
               np.int32),
           "label": np.array([0, 1, 2, 1], np.int32)}
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, None)
    losses.append(float(metrics["loss"]))
  after = param_tree.flatten_params(jax.device_get(state.params))
  for name, value in before.items():
    if name in TRAINED | {"prompt/prompt"}:
      assert np.any(after[name] != value), f"{name} did not train"
    else:
      np.testing.assert_array_equal(after[name], value, err_msg=name)
  assert losses[-1] < losses[0], losses


def test_too_few_classes_is_refused_before_loading(local_super_glue,
                                                   tmp_path):
  try:
    _parse(["models/t5_1_1_tiny.gin", "prompts/deep_prompt.gin",
            "runs/ptuning_v2_finetune.gin"],
           _bindings(tmp_path / "run", TRAIN_STEPS=1, BATCH_SIZE=8,
                     NUM_CLASSES=2))
    with pytest.raises(errors.ConfigError, match=r"3 labels .*NUM_CLASSES=3"):
      gin.get_configurable(trainer.train)(run_config=gin.config_str())
  finally:
    gin.clear_config()
  assert not (tmp_path / "run").exists()  # Nothing written.

