"""Pretraining and LM adaptation end to end: the text-file source on real
SST-2 / SuperGLUE files and its errors, the span-corruption and prefix-LM
tasks through SeqIO with the real vocabulary, T5's rsqrt schedule, and
runs/pretrain.gin then runs/lm_adapt.gin through the real entry point, the
second starting from the first one's T5X checkpoint."""

import importlib
import json
import re

import gin
import jax
import numpy as np
import pytest
import seqio

from helpers import shared_path
from prompt_tuning import errors
from prompt_tuning import train
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import pretrained
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import availability
from prompt_tuning.data import network
from prompt_tuning.data import pretraining
from prompt_tuning.data import pretraining_tasks
from prompt_tuning.data import text_files
from prompt_tuning.data import truncation
from prompt_tuning.training import optimizers
import prompt_tuning.tasks  # pylint: disable=unused-import
from prompt_tuning.tasks import pretraining as pretraining_registry

EOS = 1
SENTINEL_0 = 32099  # <extra_id_0>


@pytest.fixture(autouse=True)
def _vocab_and_clean_gin(local_super_glue):
  yield
  gin.clear_config()


def _super_glue(*parts: str) -> str:
  return str(shared_path("data", "super_glue", *parts))


def _json_lines(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _texts(source, split="train", **kwargs) -> list[str]:
  return [x["text"].decode("utf-8") for x in
          source.get_dataset(split, **kwargs).as_numpy_iterator()]


# ------------------------------------------------------------ text files.


def test_text_files_read_tsv_columns_json_keys_nested_keys_and_lists():
  sst2 = text_files.text_files_source(
      [str(shared_path("data", "glue", "SST-2", "train.tsv")) + ":sentence"])
  assert sst2.num_input_examples("train") == 67349
  first = next(sst2.get_dataset("train").as_numpy_iterator())
  assert first == {"text": b"hide new secretions from the parental units "}

  rte_path, multirc_path = (_super_glue("RTE", "train.jsonl"),
                            _super_glue("MultiRC", "train.jsonl"))
  rte, multirc = _json_lines(rte_path), _json_lines(multirc_path)
  both = text_files.text_files_source(
      [f"{rte_path}:premise", f"{multirc_path}:passage.text"],
      validation_specs=[_super_glue("RTE", "val.jsonl") + ":hypothesis"])
  assert set(both.splits) == {"train", "validation"}
  texts = _texts(both)
  # Files in the order given, lines in file order.
  assert texts == [r["premise"] for r in rte] + [m["passage"]["text"]
                                                 for m in multirc]
  assert len(texts) == 2490 + 456 == both.num_input_examples("train")
  assert texts[2490].startswith("While this process moved along, diplomacy")
  # Sharded by example, in order.
  shard = _texts(both, shard_info=seqio.ShardInfo(index=1, num_shards=2))
  assert shard == texts[1::2]
  assert both.num_input_examples("validation") == 277

  # A .txt with a column is tab-separated: the MSR paraphrase corpus.
  msr_path = str(shared_path("data", "glue", "MRPC",
                             "msr_paraphrase_train.txt"))
  msr = text_files.text_files_source([f"{msr_path}:#1 String"])
  assert msr.num_input_examples("train") == 4076
  assert _texts(msr)[0].startswith("Amrozi accused his brother , whom he")

  # A list on the way yields each element: every MultiRC question.
  questions = text_files.text_files_source(
      [f"{multirc_path}:passage.questions.question"])
  expected = [q["question"] for m in multirc for q in m["passage"]["questions"]]
  assert questions.check("train") == len(expected) > 456
  assert _texts(questions)[:3] == expected[:3]


def test_txt_files_give_one_text_per_non_empty_line(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("first line\n\n   \nsecond: with a colon\r\nlast", "utf-8")
  source = text_files.text_files_source([str(path)])
  assert _texts(source) == ["first line", "second: with a colon", "last"]
  assert source.num_input_examples("train") == 3
  assert text_files.parse_spec(f" {path} ") == (str(path), None)
  colon = tmp_path / "a:b.jsonl"  # The field follows the last colon.
  colon.write_text('{"x": {"y": "z"}}\n', "utf-8")
  assert text_files.parse_spec(f"{colon}:x.y") == (str(colon), "x.y")


@pytest.mark.parametrize("spec, error, match", [
    ("{dir}/missing.txt", FileNotFoundError,
     "Text file {dir}/missing.txt .*does not exist"),
    ("{dir}/data.csv", errors.ConfigError,
     "unknown extension '.csv'; use .txt, .jsonl, .tsv"),
    ("{dir}/data.jsonl", errors.ConfigError,
     "a .jsonl file needs the key to read, as '{dir}/data.jsonl:KEY'"),
    ("{dir}/data.tsv", errors.ConfigError,
     "a .tsv file needs the column to read, as '{dir}/data.tsv:COLUMN'"),
    ("{dir}/data.tsv:sentense", errors.ConfigError,
     r"has no column 'sentense'; its header has \['sentence', 'label'\]"),
    ("{dir}/data.jsonl:passage.txt", errors.ConfigError,
     r"data.jsonl:1 has no key 'passage.txt' \(missing 'txt'\)"),
    ("{dir}/data.jsonl:idx", errors.ConfigError, "holds int .*not text"),
])
def test_bad_specs_are_refused_when_the_source_is_built(tmp_path, spec, error,
                                                        match):
  (tmp_path / "data.tsv").write_text("sentence\tlabel\na b\t0\n", "utf-8")
  (tmp_path / "data.jsonl").write_text(
      '{"idx": 0, "passage": {"text": "t"}}\n', "utf-8")
  (tmp_path / "data.txt").write_text("x\n", "utf-8")
  (tmp_path / "data.csv").write_text("x\n", "utf-8")
  with pytest.raises(error, match=match.format(dir=re.escape(str(tmp_path)))):
    text_files.text_files_source([spec.format(dir=tmp_path)])


def test_a_bad_later_line_is_named_before_any_training(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"other": "c"}\n',
                  "utf-8")
  source = text_files.text_files_source([f"{path}:text"])  # Line 1 is fine.
  pretraining_tasks.add_span_corruption_task("test_bad_line_span", source)
  message = rf"{re.escape(str(path))}:4 has no key 'text'.*keys are \['other'\]"
  with pytest.raises(errors.ConfigError, match=message):
    availability.check_split_available("test_bad_line_span", "train")
  (tmp_path / "rows.tsv").write_text("a\tsentence\nx\n", "utf-8")
  with pytest.raises(errors.ConfigError, match=r"rows.tsv:2 has 1 fields"):
    text_files.text_files_source([f"{tmp_path}/rows.tsv:sentence"]).check(
        "train")


# ----------------------------------------------------------------- tasks.


def _uncorrupt(inputs, targets) -> list[int]:
  """The original tokens: each input sentinel replaced by its target span."""
  spans, current = {}, None
  for token in targets:
    if token >= 32000:
      current = spans.setdefault(token, [])
    else:
      current.append(token)
  return [t for token in inputs
          for t in (spans[token] if token >= 32000 else [token])]


def test_span_corruption_and_prefix_lm_tasks_through_seqio():
  spec = _super_glue("RTE", "train.jsonl") + ":premise"
  source = text_files.text_files_source([spec])
  span = pretraining_tasks.add_span_corruption_task("test_rte_span", source)
  prefix = pretraining_tasks.add_prefix_lm_task("test_rte_prefix", source)
  assert span.metric_fns == [] and prefix.metric_fns == []
  vocabulary = span.output_features["targets"].vocabulary
  stream = np.concatenate([vocabulary.encode(t) for t in _texts(source)[:40]])

  chunk, targets_length = pretraining.span_corruption_lengths(64)
  lengths = {"inputs": 64, "targets": targets_length}
  examples = list(span.get_dataset(lengths, split="train", shuffle=False,
                                   seed=0).take(3).as_numpy_iterator())
  for i, x in enumerate(examples):
    # Full chunks fill both features exactly, EOS last.
    assert x["inputs"].shape == (64,) and x["targets"].shape == (
        targets_length,)
    assert x["inputs"][-1] == EOS and x["targets"][-1] == EOS
    assert x["targets"][0] == SENTINEL_0 and SENTINEL_0 in x["inputs"]
    # Each sentinel of the inputs stands for its span in the targets.
    np.testing.assert_array_equal(
        _uncorrupt(x["inputs"][:-1], x["targets"][:-1]),
        stream[i * chunk:(i + 1) * chunk])
  # Nothing is truncated at T5's lengths; one target token less cuts all.
  reports = truncation.truncation_report("test_rte_span", "train", lengths,
                                         max_examples=30)
  assert [r.num_truncated for r in reports] == [0, 0]
  assert reports[0].longest == 64 and reports[1].longest == targets_length
  short = dict(lengths, targets=targets_length - 1)
  assert truncation.truncation_report("test_rte_span", "train", short,
                                      max_examples=30)[1].num_truncated == 30

  lengths = {"inputs": 24, "targets": 20}
  pairs = list(prefix.get_dataset(lengths, split="train", shuffle=False,
                                  seed=0).take(20).as_numpy_iterator())
  for i, x in enumerate(pairs):
    assert x["inputs"][-1] == EOS and x["targets"][-1] == EOS
    joined = np.concatenate([x["inputs"][:-1], x["targets"][:-1]])
    np.testing.assert_array_equal(joined, stream[i * 20:(i + 1) * 20])
  assert len({len(x["inputs"]) for x in pairs}) > 5
  assert [r.num_truncated for r in truncation.truncation_report(
      "test_rte_prefix", "train", lengths, max_examples=50)] == [0, 0]


def test_c4_tasks_fail_fast_when_c4_is_not_prepared(tmp_path, monkeypatch):
  monkeypatch.setenv("PROMPT_TUNING_TFDS_DATA_DIR", str(tmp_path))
  for name in (pretraining_registry.C4_SPAN_CORRUPTION,
               pretraining_registry.C4_PREFIX_LM):
    assert set(seqio.get_mixture_or_task(name).splits) == {"train",
                                                           "validation"}
    with pytest.raises(network.DataUnavailableError,
                       match=rf"{name}/train reads TFDS c4/en:3.1.0, which is "
                       rf"not prepared in {tmp_path}.*Apache Beam.*"
                       "PROMPT_TUNING_TFDS_DATA_DIR"):
      availability.check_split_available(name, "train")


# -------------------------------------------------------------- schedule.


def test_rsqrt_schedule_is_constant_then_inverse_square_root():
  schedule = optimizers.rsqrt_schedule()
  for step, expected in [(0, 0.01), (1, 0.01), (10000, 0.01),
                         (40000, 0.005), (1_000_000, 0.001)]:
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
  assert float(optimizers.rsqrt_schedule(2.0, 4)(16)) == pytest.approx(0.5)
  for kwargs, match in [({"base_learning_rate": 0}, "positive number"),
                        ({"base_learning_rate": True}, "positive number"),
                        ({"warmup_steps": 0}, r"WARMUP_STEPS\) must be"),
                        ({"warmup_steps": 2.5}, r"WARMUP_STEPS\) must be")]:
    with pytest.raises(errors.ConfigError, match=match):
      optimizers.rsqrt_schedule(**kwargs)


# ------------------------------------------------------------- gin runs.


@pytest.fixture
def text_tasks(monkeypatch):
  """text_* tasks over RTE's validation premises (277), registered from the
  environment."""
  monkeypatch.setenv(text_files.TEXT_FILES_ENV,
                     _super_glue("RTE", "val.jsonl") + ":premise")
  importlib.reload(pretraining_registry)
  yield


def _argv(run_file: str, model_dir, *overrides) -> list[str]:
  """A 1+1-layer, 8-wide T5 1.1 on the real vocabulary, 2 steps."""
  return [
      "--gin_file=models/t5_1_1_tiny.gin", f"--gin_file=runs/{run_file}",
      "--gin.t5_config.T5Config.emb_dim=8",
      "--gin.t5_config.T5Config.num_encoder_layers=1",
      "--gin.t5_config.T5Config.num_decoder_layers=1",
      f"--gin.MODEL_DIR='{model_dir}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
      "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.WARMUP_STEPS=10",
      "--gin.CHECKPOINT_PERIOD=2", "--gin.trainer.train.progress=False",
      *overrides]


def test_gin_runs_validate_and_lm_adapt_needs_a_checkpoint(tmp_path,
                                                           text_tasks,
                                                           capsys):
  span = "--gin.MIXTURE_OR_TASK_NAME='text_span_corruption'"
  assert train.main(_argv("pretrain.gin", tmp_path / "pre", span,
                          "--validate_only")) == 0
  assert "Configuration valid" in capsys.readouterr().out
  assert gin.query_parameter("trainer.train.allow_all_trainable")
  assert gin.query_parameter("%TRAINABLE_PATTERNS") == (".*",)
  assert gin.query_parameter("%INITIAL_CHECKPOINT_PATH") is None
  gin.clear_config()
  prefix = "--gin.MIXTURE_OR_TASK_NAME='text_prefix_lm'"
  with pytest.raises(Exception, match="INITIAL_CHECKPOINT_PATH"):
    train.main(_argv("lm_adapt.gin", tmp_path / "lm", prefix,
                     "--validate_only"))
  gin.clear_config()
  # An evaluation task without metrics is refused.
  with pytest.raises(errors.ConfigError, match="has no metrics"):
    train.main(_argv("pretrain.gin", tmp_path / "pre", span, "--validate_only",
                     "--gin.EVAL_MIXTURE_OR_TASK_NAME='text_span_corruption'",
                     "--gin.eval/DatasetConfig.split='train'"))
  assert not (tmp_path / "pre").exists() and not (tmp_path / "lm").exists()


def test_a_bad_text_files_setting_fails_the_import(tmp_path, monkeypatch):
  monkeypatch.setenv(text_files.TEXT_FILES_ENV,
                     f"{tmp_path}/corpus.txt")
  with pytest.raises(FileNotFoundError, match="corpus.txt"):
    importlib.reload(pretraining_registry)
  monkeypatch.delenv(text_files.TEXT_FILES_ENV)
  importlib.reload(pretraining_registry)


@pytest.mark.slow
def test_pretrain_then_lm_adapt_from_its_t5x_checkpoint(tmp_path, text_tasks):
  pre, lm = tmp_path / "pre", tmp_path / "lm"
  assert train.main(_argv(
      "pretrain.gin", pre,
      "--gin.MIXTURE_OR_TASK_NAME='text_span_corruption'")) == 0
  gin.clear_config()
  first = sharded.open_checkpoint(pre / "checkpoint_2")
  assert first.step == 2 and first.version == 3
  assert pretrained.detect_checkpoint_format(pre) == (
      pretrained.CheckpointFormat.T5X)
  assert train.main(_argv(
      "lm_adapt.gin", lm, "--gin.MIXTURE_OR_TASK_NAME='text_prefix_lm'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{pre / 'checkpoint_2'}'")) == 0
  gin.clear_config()
  # The step continues: Adafactor's counter 2 + 2 names the checkpoint.
  assert sorted(t5x.checkpoint_steps(lm)) == [4]
  second = sharded.open_checkpoint(lm)
  assert second.step == 4
  first_params, second_params = first.read_all(), second.read_all()
  before = param_tree.flatten_params(first_params)
  after = param_tree.flatten_params(second_params)
  assert set(before) == set(after) and len(before) > 20
  unchanged = [n for n in before if np.array_equal(before[n], after[n])]
  assert not unchanged, unchanged
  # The orbax checkpoint (to resume) holds the same, whole model.
  assert (lm / "checkpoints" / "2").is_dir()
  assert all(np.all(np.isfinite(v)) for v in after.values())
  assert jax.tree_util.tree_structure(first_params) == (
      jax.tree_util.tree_structure(second_params))
