"""The TFDS path, on real TFDS datasets generated from local files.

TFDS's own builders (`super_glue`, `glue`, `mrqa`) prepare small datasets in
a temporary data directory, their downloads served from files written here;
the registered tasks then read them through `tfds.load`, as users do. The
local-directory reader must give the very same features for the same rows.
"""

import json

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from helpers import shared_path
import prompt_tuning.tasks  # pylint: disable=unused-import  # Registers.
from prompt_tuning.data import glue
from prompt_tuning.data import locations
from prompt_tuning.data import mrpc_files
from prompt_tuning.data import mrqa
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue
from prompt_tuning.data import super_glue_files
from prompt_tuning.data import super_glue_schema as schema
from prompt_tuning.data import testing
from prompt_tuning.data import vocab

tfds.disable_progress_bar()

_SQUAD = [{
    "context": "The Eiffel Tower is in Paris. It was built in 1889.",
    "qas": [{"qid": "s1", "question": "Where is the Eiffel Tower?",
             "answers": ["Paris", "in Paris"]},
            {"qid": "s2", "question": "When was it built?",
             "answers": ["1889"]}],
}]
_BIOASQ = [{
    "context": "Insulin is produced by beta cells of the pancreas.",
    "qas": [{"qid": "b1", "question": "Which cells produce insulin?",
             "answers": ["beta cells"]}],
}]
_QQP_TRAIN = [("0", "1", "2", "How do I learn Python?",
               "What is the best way to learn Python?", "1"),
              ("1", "3", "4", "Is the moon made of cheese?",
               "How far is the moon?", "0")]


def _splits(config):
  if config in schema.DIAGNOSTIC_CONFIGS:
    return ("test",)
  return ("train", "validation", "test")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Raw release files, TFDS datasets built from them, a small vocabulary."""
  # The release copy's rows (real test and AX-b/AX-g files), FewGLUE's where
  # the copy has none (BoolQ train, ReCoRD). Four rows: WSC's fourth train
  # row is the first correct referent, which WSC's simple train task keeps.
  release = [shared_path("data", "super_glue"), shared_path("data", "fewglue")]
  raw = testing.write_release_subset(release, tmp_path_factory.mktemp("raw"),
                                     rows_per_split=4)
  data_dir = tmp_path_factory.mktemp("tfds")
  for config in schema.RELEASE_FOLDERS:
    testing.prepare_tfds(schema.tfds_name(config), data_dir, str(raw))
  texts = [line for path in sorted(raw.glob("*/*.jsonl"))
           for line in path.read_text(encoding="utf-8").splitlines()]
  model = testing.train_sentencepiece(tmp_path_factory.mktemp("spm"), texts,
                                      vocab_size=500)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(vocab.VOCAB_ENV, model)
    patch.setenv(locations.TFDS_DATA_DIR_ENV, str(data_dir))
    patch.delenv(locations.SUPER_GLUE_DIR_ENV, raising=False)
    patch.delenv(locations.GLUE_DIR_ENV, raising=False)
    yield {"raw": raw, "data_dir": data_dir, "patch": patch}


def _idx_key(example):
  idx = example["idx"]
  if isinstance(idx, dict):
    return tuple(int(idx[k]) for k in sorted(idx))
  return (int(idx),)


def _plain(value):
  """numpy/bytes -> Python values, for comparing TFDS with local rows."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)) or (
      isinstance(value, np.ndarray) and value.ndim):
    return [_plain(v) for v in value]
  if isinstance(value, (bytes, np.bytes_, str)):
    return postprocessors.as_text(value)
  return int(value)


def _tfds_rows(name, split, data_dir):
  dataset = tfds.load(name, split=split, data_dir=str(data_dir))
  return dataset, sorted(tfds.as_numpy(dataset), key=_idx_key)


def test_local_reader_gives_tfds_features_for_every_config(env):
  for config in schema.RELEASE_FOLDERS:
    reader = super_glue_files.SuperGlueFiles(config)
    for split in _splits(config):
      dataset, from_tfds = _tfds_rows(schema.tfds_name(config), split,
                                      env["data_dir"])
      assert dataset.element_spec == reader.element_spec, config
      local = sorted(reader.read(str(env["raw"]), split), key=_idx_key)
      assert [_plain(e) for e in from_tfds] == [_plain(e) for e in local], (
          config, split)
      assert from_tfds, (config, split)


def test_wsc_span_repairs_match_tfds_wsc_fixed(tmp_path):
  raw = testing.write_release_subset(shared_path("data", "super_glue"),
                                     tmp_path / "raw", rows_per_split=1000,
                                     folders=("WSC",))
  testing.prepare_tfds("super_glue/wsc.fixed:1.0.2", tmp_path / "tfds",
                       str(raw))
  reader = super_glue_files.SuperGlueFiles("wsc.fixed")
  repaired = 0
  for split in ("train", "validation"):
    _, from_tfds = _tfds_rows("super_glue/wsc.fixed:1.0.2", split,
                              tmp_path / "tfds")
    local = sorted(reader.read(str(raw), split), key=_idx_key)
    assert [_plain(e) for e in from_tfds] == [_plain(e) for e in local]
    rows = {json.loads(line)["idx"]: json.loads(line) for line in open(
        raw / "WSC" / super_glue_files.SPLIT_FILES[split], encoding="utf-8")}
    repaired += sum(e["span1_text"] != rows[e["idx"]]["target"]["span1_text"]
                    for e in local)
  assert repaired >= 10  # "The table" -> "the table", etc.


def _task_examples(name, split):
  task = seqio.get_mixture_or_task(name)
  dataset = task.get_dataset(split=split, shuffle=False, sequence_length=None)
  return sorted(dataset.as_numpy_iterator(), key=_idx_key)


def test_registered_tasks_read_tfds_and_local_identically(env):
  patch = env["patch"]
  benchmarks = (super_glue.STANDARD_BENCHMARKS + super_glue.WSC_VARIANTS
                + super_glue.DIAGNOSTIC_BENCHMARKS)
  for benchmark in benchmarks:
    name = super_glue.task_name(benchmark)
    split = "test" if benchmark in super_glue.DIAGNOSTIC_BENCHMARKS else (
        "train" if benchmark == "wsc_simple_train" else "validation")
    source = seqio.get_mixture_or_task(name).source
    assert source.local_dir() is None
    from_tfds = _task_examples(name, split)
    patch.setenv(locations.SUPER_GLUE_DIR_ENV, str(env["raw"]))
    try:
      assert source.local_dir() == str(env["raw"])
      from_files = _task_examples(name, split)
    finally:
      patch.delenv(locations.SUPER_GLUE_DIR_ENV)
    assert from_tfds and len(from_tfds) == len(from_files), benchmark
    for a, b in zip(from_tfds, from_files):
      assert set(a) == set(b)
      for key in a:
        np.testing.assert_equal(_plain(a[key]), _plain(b[key]))
      assert a["inputs"].dtype == np.int32 and a["inputs"][-1] == 1


def test_record_training_rows_from_tfds_are_t5s(env):
  # As t5: one row per distinct gold answer in TFDS's sorted order, every
  # row keeping all of them; the local files give the same rows.
  name = super_glue.task_name("record")
  from_tfds = _task_examples(name, "train")  # Stable: answer order kept.
  env["patch"].setenv(locations.SUPER_GLUE_DIR_ENV, str(env["raw"]))
  try:
    from_files = _task_examples(name, "train")
  finally:
    env["patch"].delenv(locations.SUPER_GLUE_DIR_ENV)

  def rows(examples):
    return [(_idx_key(e), _plain(e["targets_pretokenized"]),
             _plain(e["answers"])) for e in examples]

  assert rows(from_tfds) == rows(from_files)
  # FewGLUE's third query lists ["North Korea", "North", "North Korea"].
  north = [r for r in rows(from_tfds) if r[0] == (8657, 13387)]
  assert north == [((8657, 13387), "North", ["North", "North Korea"]),
                   ((8657, 13387), "North Korea", ["North", "North Korea"])]


def test_tfds_source_sizes_and_shards(env):
  source = seqio.get_mixture_or_task(super_glue.task_name("multirc")).source
  expected = len(super_glue_files.SuperGlueFiles("multirc").read(
      str(env["raw"]), "validation"))
  assert source.num_input_examples("validation") == expected
  shards = [
      list(tfds.as_numpy(source.get_dataset(
          "validation", shuffle=False, shard_info=seqio.ShardInfo(i, 2))))
      for i in range(2)
  ]
  keys = [_idx_key(_plain(e)) for shard in shards for e in shard]
  assert len(keys) == expected == len(set(keys))
  with pytest.raises(ValueError, match="no split"):
    source.get_dataset("dev32")


def test_mrpc_from_msr_files_matches_tfds_glue(env, tmp_path):
  raw = testing.write_msr_subset(shared_path("data", "glue", "MRPC"),
                                 tmp_path / "glue", train_rows=7,
                                 test_rows=4, dev_rows=2)
  folder = raw / mrpc_files.FOLDER
  downloads = {"train": str(folder / mrpc_files.TRAIN_FILE),
               "test": str(folder / mrpc_files.TEST_FILE),
               "dev_ids": str(folder / mrpc_files.DEV_IDS_FILE)}
  testing.prepare_tfds(glue.tfds_name("mrpc"), env["data_dir"], downloads)
  reader = mrpc_files.MrpcFiles()
  sizes = {}
  for split in ("train", "validation", "test"):
    dataset, from_tfds = _tfds_rows(glue.tfds_name("mrpc"), split,
                                    env["data_dir"])
    assert dataset.element_spec == reader.element_spec
    local = sorted(reader.read(str(raw), split), key=_idx_key)
    sizes[split] = len(local)
    if split == "test":
      # TFDS blanks the test labels; the MSR test file has them.
      assert {int(e["label"]) for e in from_tfds} == {-1}
      assert {e["label"] for e in local} <= {0, 1}
      for e in from_tfds:
        e["label"] = local[_idx_key(e)[0]]["label"]
    assert [_plain(e) for e in from_tfds] == [_plain(e) for e in local]
  assert sizes == {"train": 5, "validation": 2, "test": 4}

  # The registered task reads the same TFDS dataset in the shared format.
  examples = _task_examples(glue.task_name("mrpc"), "validation")
  assert len(examples) == 2
  for example in examples:
    assert postprocessors.as_text(example["inputs_pretokenized"]).startswith(
        "sentence1: ")
    assert postprocessors.as_text(
        example["targets_pretokenized"]) in glue.PARAPHRASE_LABELS


def test_qqp_through_tfds_uses_the_shared_format(env, tmp_path):
  folder = tmp_path / "qqp" / "QQP"
  folder.mkdir(parents=True)
  header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
  for name in ("train.tsv", "dev.tsv"):
    (folder / name).write_text(
        "\n".join([header] + ["\t".join(r) for r in _QQP_TRAIN]) + "\n")
  (folder / "test.tsv").write_text(
      "id\tquestion1\tquestion2\n0\tWhy?\tWhy not?\n")
  testing.prepare_tfds(glue.tfds_name("qqp"), env["data_dir"],
                       str(tmp_path / "qqp"))
  examples = _task_examples(glue.task_name("qqp"), "train")
  texts = [(postprocessors.as_text(e["inputs_pretokenized"]),
            postprocessors.as_text(e["targets_pretokenized"]))
           for e in examples]
  assert texts == [
      ("sentence1: How do I learn Python? sentence2: What is the best way to "
       "learn Python?", "equivalent"),
      ("sentence1: Is the moon made of cheese? sentence2: How far is the "
       "moon?", "not_equivalent"),
  ]
  test = _task_examples(glue.task_name("qqp"), "test")
  assert postprocessors.as_text(test[0]["targets_pretokenized"]) == "<unk>"


def test_mrqa_squad_and_out_of_domain_through_tfds(env, tmp_path):
  squad = testing.write_mrqa_file(tmp_path / "squad.jsonl", "SQuAD", _SQUAD)
  bioasq = testing.write_mrqa_file(tmp_path / "bioasq.jsonl", "BioASQ",
                                   _BIOASQ)
  testing.prepare_tfds(mrqa.tfds_name("squad"), env["data_dir"],
                       {"train": squad, "validation": squad})
  testing.prepare_tfds(mrqa.tfds_name("bio_asq"), env["data_dir"],
                       {"test": bioasq})

  def read(name, split):
    task = seqio.get_mixture_or_task(name)
    dataset = task.get_dataset(split=split, shuffle=False,
                               sequence_length=None)
    return task, sorted(dataset.as_numpy_iterator(),
                        key=lambda e: e["qid"])

  task, squad_examples = read(mrqa.task_name("squad"), "validation")
  first = squad_examples[0]
  assert postprocessors.as_text(first["inputs_pretokenized"]) == (
      "question: Where is the Eiffel Tower? context: The Eiffel Tower is in "
      "Paris. It was built in 1889.")
  assert postprocessors.as_text(first["targets_pretokenized"]) == "Paris"
  targets = [task.postprocess_fn(e["targets_pretokenized"], example=e,
                                 is_target=True) for e in squad_examples]
  assert targets == [["Paris", "in Paris"], ["1889"]]
  result = task.metric_fns[0](targets, ["in paris", "in 1889"])
  assert result["exact_match"] == pytest.approx(50.0)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)

  _, bio_examples = read(mrqa.task_name("bio_asq"), "validation")
  assert [postprocessors.as_text(e["targets_pretokenized"])
          for e in bio_examples] == ["beta cells"]
  assert set(seqio.get_mixture_or_task(mrqa.task_name("bio_asq")).splits) == {
      "validation", "test"}
