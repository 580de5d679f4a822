"""GLUE's local reader gives what TFDS's own `glue` builder gives for the same
tsv files: same rows, `idx` numbering, labels, skipped corrupt rows and
dtypes. The builder runs unchanged on small files written here (the real
SST-2 and STS-B rows from ../shared, hand-written rows in the other
layouts); only its download is served locally."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import shared_path
from prompt_tuning.data import glue_files
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import testing

tfds.disable_progress_bar()

_HAND_WRITTEN = {
    # CoLA's train/dev files have no header; test has one.
    "CoLA/train.tsv": ["gj04\t1\t\tOur friends won't buy this analysis.",
                       "gj04\t0\t*\tThey drank the pub.",
                       "gj04\t1\t\tThe more we study verbs, the crazier."],
    "CoLA/dev.tsv": ["gj04\t0\t*\tHim left.", "gj04\t1\t\tShe left."],
    "CoLA/test.tsv": ["index\tsentence", "0\tBill whistled.",
                      "1\tWho left?"],
    "QQP/train.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                      "0\t1\t2\tHow do I learn Python?\tBest way to learn "
                      "Python?\t1",
                      "1\t3\t4\tIs the moon cheese?",  # Corrupt: skipped.
                      "2\t5\t6\tWhy is the sky blue?\tHow far is Mars?\t0"],
    "QQP/dev.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                    "7\t8\t9\tWhat is 2+2?\tHow much is two plus two?\t1"],
    "QQP/test.tsv": ["id\tquestion1\tquestion2", "0\tA?\tB?"],
    "QNLI/train.tsv": ["index\tquestion\tsentence\tlabel",
                       "0\tWhere is Paris?\tParis is in France.\tentailment",
                       "1\tWho?\tThe sky is blue.\tnot_entailment"],
    "QNLI/dev.tsv": ["index\tquestion\tsentence\tlabel",
                     "0\tWhen?\tIn 1889.\tentailment"],
    "QNLI/test.tsv": ["index\tquestion\tsentence", "0\tWhy?\tBecause."],
    "RTE/train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tA dog runs.\tAn animal runs.\tentailment",
                      "1\tA cat sleeps.\tA cat runs.\tnot_entailment"],
    "RTE/dev.tsv": ["index\tsentence1\tsentence2\tlabel",
                    "0\tIt rains.\tIt is wet.\tentailment"],
    "RTE/test.tsv": ["index\tsentence1\tsentence2", "0\tX.\tY."],
    "WNLI/train.tsv": ["index\tsentence1\tsentence2\tlabel",
                       "0\tThe fish ate the worm. It was tasty.\tThe worm "
                       "was tasty.\t1",
                       "1\tI put the cake in the box. It was big.\tThe cake "
                       "was big.\t0"],
    "WNLI/dev.tsv": ["index\tsentence1\tsentence2\tlabel",
                     "0\tA.\tB.\t0"],
    "WNLI/test.tsv": ["index\tsentence1\tsentence2", "0\tC.\tD."],
}
_MNLI_HEADER = "index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
for _name, _genre in (("train", "fiction"), ("dev_matched", "fiction"),
                      ("dev_mismatched", "letters")):
  _HAND_WRITTEN[f"MNLI/{_name}.tsv"] = [
      _MNLI_HEADER,
      f"0\t{_genre}\tA man eats.\tSomeone eats.\tentailment\tentailment",
      f"1\t{_genre}\tA man eats.\tNobody eats.\t\t",  # No label: skipped.
      f"2\t{_genre}\tA man eats.\tHe is hungry.\tneutral\tneutral",
      f"3\t{_genre}\tA man eats.\tA man sleeps.\tcontradiction\t"
      "contradiction"]
for _name in ("test_matched", "test_mismatched"):
  _HAND_WRITTEN[f"MNLI/{_name}.tsv"] = [
      "index\tgenre\tsentence1\tsentence2", "0\tfiction\tP.\tH."]


def _head(path: pathlib.Path, rows: int) -> list[str]:
  with open(path, encoding="utf-8", newline="") as f:
    return [next(f).rstrip("\n") for _ in range(rows + 1)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """GLUE-layout files and TFDS glue datasets prepared from them."""
  root = tmp_path_factory.mktemp("glue")
  files = dict(_HAND_WRITTEN)
  sst2 = shared_path("data", "glue", "SST-2")
  for name in ("train", "dev", "test"):
    files[f"SST-2/{name}.tsv"] = _head(sst2 / f"{name}.tsv", 4)
  stsb = _head(shared_path("data", "glue", "STS-B", "dev.tsv"), 760)
  picked = [stsb[0]] + stsb[1:4] + stsb[50:52] + stsb[698:712:6] + stsb[757:]
  files["STS-B/train.tsv"] = picked[:5]
  files["STS-B/dev.tsv"] = [picked[0]] + picked[5:]
  files["STS-B/test.tsv"] = ["\t".join(r.split("\t")[:-1])
                             for r in picked[:3]]
  for relative, lines in files.items():
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  data_dir = tmp_path_factory.mktemp("tfds")
  for benchmark in glue_files.LAYOUTS:
    testing.prepare_tfds(glue_tasks.tfds_name(benchmark), data_dir,
                         str(root))
  return root, data_dir


def _plain(example):
  return {k: (v.decode() if isinstance(v, bytes) else v.item())
          for k, v in example.items()}


@pytest.mark.parametrize("benchmark", sorted(glue_files.LAYOUTS))
def test_local_reader_matches_tfds(built, benchmark):
  root, data_dir = built
  reader = glue_files.reader(benchmark)
  for split in glue_tasks.config(benchmark).splits:
    dataset = tfds.load(glue_tasks.tfds_name(benchmark), split=split,
                        data_dir=str(data_dir), shuffle_files=False)
    assert dataset.element_spec == reader.element_spec
    from_tfds = sorted((_plain(e) for e in tfds.as_numpy(dataset)),
                       key=lambda e: e["idx"])
    local = reader.read(str(root), split)
    assert from_tfds, (benchmark, split)
    if benchmark == glue_tasks.STSB:
      for a, b in zip(from_tfds, local):
        assert np.float32(a.pop("label")) == np.float32(b["label"])
      local = [{k: v for k, v in e.items() if k != "label"} for e in local]
    assert from_tfds == local, (benchmark, split)
  if benchmark == "qqp":
    assert [e["idx"] for e in reader.read(str(root), "train")] == [0, 2]
  if benchmark == "mnli":
    assert [e["label"] for e in reader.read(str(root), "train")] == [0, 1, 2]
