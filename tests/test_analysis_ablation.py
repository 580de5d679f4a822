"""The length × initialiser ablation runner at tiny scale: real training
runs on RTE, a well-formed CSV (with the class-label skip rule) and a PNG."""

import csv
import json
import os

import numpy as np
import pytest
from matplotlib import image as mpl_image

import helpers
from helpers import load_script
from prompt_tuning.analysis import ablation
from prompt_tuning.analysis import prompt_io

RTE = "taskless_super_glue_rte_v102"


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  return local_super_glue


_script = load_script


def tiny_model():
  return helpers.tiny_model("prompt", prompt_length=7,
                            vocab_size=helpers.T5_VOCAB_SIZE,
                            num_encoder_layers=1, num_decoder_layers=1)


def _check_png(path):
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  pixels = mpl_image.imread(path)
  assert pixels.shape[0] > 300 and pixels.shape[1] > 400
  assert np.std(pixels) > 0  # Not a blank canvas.


@pytest.mark.slow
def test_real_runs_write_csv_and_png(tmp_path):
  rows = ablation.run_ablation(
      model=tiny_model(), task_name=RTE, out_dir=str(tmp_path),
      task_feature_lengths={"inputs": 32, "targets": 8}, train_steps=2,
      batch_size=8, lengths=(1, 2),
      initializer_names=(ablation.RANDOM_UNIFORM,),
      eval_num_examples=8, progress=False)

  with open(tmp_path / "results.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == ablation.CSV_FIELDS
  assert [(r["initializer"], r["prompt_length"]) for r in table] == [
      ("random_uniform", "1"), ("random_uniform", "2")]
  for r in table:
    assert r["metric"] == f"{RTE}/accuracy" and r["step"] == "2"
    assert 0.0 <= float(r["score"]) <= 100.0
  assert ablation.read_csv(str(tmp_path / "results.csv")) == rows
  # Each run trained a prompt of its own length.
  for length in (1, 2):
    value, _, _ = prompt_io.export_prompt(
        tmp_path / f"random_uniform_len{length}")
    assert value.shape == (length, helpers.TINY_CONFIG["emb_dim"])

  # The command line redraws the figure from the CSV.
  _script("prompt_ablation").main([f"--out_dir={tmp_path}", "--plot_only"])
  _check_png(tmp_path / "ablation.png")


def test_sweep_order_skip_rule_and_plot(tmp_path):
  calls = []

  def fake_train(*, model, model_dir, **kwargs):
    length = model.module.prompt_length
    calls.append((length, kwargs["eval_cfg"].dataset.mixture_or_task_name))
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "eval_metrics.jsonl"), "w") as f:
      for step, score in ((5, 10.0), (10, 50.0 + length)):
        f.write(json.dumps({"step": step, f"{RTE}/accuracy": score}) + "\n")

  rows = ablation.run_ablation(
      model=tiny_model(), task_name=RTE, out_dir=str(tmp_path),
      task_feature_lengths={"inputs": 32, "targets": 4}, train_steps=10,
      batch_size=8, lengths=(1, 5, 20), train=fake_train,
      label_encoder=lambda text: [len(text)])
  assert len(calls) == 8 and all(c[1] == RTE for c in calls)
  assert [(r.initializer, r.prompt_length, r.score) for r in rows] == [
      (name, length, None if (name, length) == ("class_labels", 1)
       else 50.0 + length)
      for name in ablation.INITIALIZERS for length in (1, 5, 20)]
  assert rows[6].note.startswith("skipped: 2 class labels")
  assert all(r.step == 10 for r in rows if r.score is not None)
  ablation.plot_ablation(rows, str(tmp_path / "fig.png"), title="RTE")
  _check_png(tmp_path / "fig.png")


def test_initializers_by_name():
  assert ablation.make_initializer(ablation.SAMPLED_VOCAB) is not None
  with pytest.raises(ValueError, match="needs label strings"):
    ablation.make_initializer(ablation.CLASS_LABELS, ())
  with pytest.raises(ValueError, match="Unknown initialiser"):
    ablation.make_initializer("zeros")
  with pytest.raises(ValueError, match="No scored rows"):
    ablation.plot_ablation([ablation.AblationRow("x", 1, "m", None, None)],
                           "/tmp/never.png")


def test_class_labels_of_any_closed_label_task():
  # SuperGLUE, GLUE and the sentence tasks all give their labels (the
  # SST-2 ablation's class-label cells need them); free text gives none.
  assert ablation.class_label_strings(RTE) == ("entailment",
                                               "not_entailment")
  assert ablation.class_label_strings("taskless_glue_sst2_v200") == (
      "negative", "positive")
  assert ablation.class_label_strings("taskless_super_glue_record_v102") == ()
