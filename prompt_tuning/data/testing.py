"""Helpers for tests of the data pipeline: tiny vocabularies and datasets.

* `train_sentencepiece` trains a small SentencePiece model with T5's special
  ids (pad 0, EOS 1, UNK 2, no BOS) so tests need not load the 32k model.
* `write_release_subset` writes a few rows of each SuperGLUE task, in the
  official release layout, from one or more directories in that layout (e.g.
  the full release, then FewGLUE for the files the release copy lacks).
* `prepare_tfds` builds a real TFDS dataset directory with TFDS's own
  builder, serving its downloads from local files: tests then go through
  `tfds.load` exactly as users do, without network.
"""

import json
import os
import pathlib
from typing import Any, Iterable, Optional, Sequence, Union
from unittest import mock

import sentencepiece as spm
import tensorflow_datasets as tfds

from prompt_tuning.data import mrpc_files
from prompt_tuning.data import super_glue_schema as schema

PathLike = Union[str, os.PathLike]

def train_sentencepiece(output_dir: PathLike, texts: Iterable[str],
                        vocab_size: int = 300) -> str:
  """Trains a unigram SentencePiece model with T5's special ids.

  Args:
    output_dir: where `spiece.model` is written.
    texts: training sentences.
    vocab_size: the piece count (a soft limit on small corpora).

  Returns:
    The model file's path.
  """
  prefix = os.path.join(os.fspath(output_dir), "spiece")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(texts)),
      model_prefix=prefix,
      vocab_size=vocab_size,
      model_type="unigram",
      character_coverage=1.0,
      hard_vocab_limit=False,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      num_threads=1,
      minloglevel=2,
  )
  return prefix + ".model"


def _read_jsonl(path: pathlib.Path, limit: int) -> list[dict]:
  rows = []
  with path.open(encoding="utf-8") as f:
    for line in f:
      if line.strip():
        rows.append(json.loads(line))
      if len(rows) == limit:
        break
  return rows


def _write_jsonl(path: pathlib.Path, rows: Iterable[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def without_labels(folder: str, row: dict) -> dict:
  """A copy of a release row with every gold label removed (test style)."""
  row = json.loads(json.dumps(row))
  row.pop("label", None)
  if folder == "MultiRC":
    for question in row["passage"]["questions"]:
      for answer in question["answers"]:
        answer.pop("label", None)
  if folder == "ReCoRD":
    for qa in row["qas"]:
      qa.pop("answers", None)
  return row


def _first_file(dirs: Sequence[pathlib.Path], relative: str,
                *alternatives: str) -> Optional[pathlib.Path]:
  """The first existing `dir/relative` (then alternatives) over `dirs`."""
  for name in (relative,) + alternatives:
    for directory in dirs:
      if (directory / name).exists():
        return directory / name
  return None


def write_release_subset(
    release_dirs: Union[PathLike, Sequence[PathLike]],
    output_dir: PathLike,
    rows_per_split: int = 3,
    folders: Optional[Sequence[str]] = None,
) -> pathlib.Path:
  """Writes a small SuperGLUE directory in the official release layout.

  Every split file takes the first rows of the first directory of
  `release_dirs` that has it, so a full release copy can be completed by
  FewGLUE's subsets (e.g. BoolQ train, ReCoRD). Validation falls back to
  `dev32.jsonl` where no directory has `val.jsonl`; test, where no directory
  has `test.jsonl`, is made of the validation rows with their labels removed.
  AX-b and AX-g take the first rows of the real diagnostic files.

  Args:
    release_dirs: directories in the official layout, in order of preference.
    output_dir: where to write the subset.
    rows_per_split: rows (release lines) per split file.
    folders: release folders to write (e.g. `("WSC",)`); default all.

  Returns:
    `output_dir` as a path.

  Raises:
    FileNotFoundError: no directory has a file the subset needs.
  """
  if isinstance(release_dirs, (str, os.PathLike)):
    release_dirs = [release_dirs]
  dirs = [pathlib.Path(d) for d in release_dirs]
  output_dir = pathlib.Path(output_dir)

  def source(relative: str, *alternatives: str) -> pathlib.Path:
    path = _first_file(dirs, relative, *alternatives)
    if path is None:
      raise FileNotFoundError(
          f"None of {[str(d) for d in dirs]} has "
          f"{' or '.join((relative,) + alternatives)}.")
    return path

  for config, folder in schema.RELEASE_FOLDERS.items():
    if folders is not None and folder not in folders:
      continue
    if config in schema.DIAGNOSTIC_CONFIGS:
      name = f"{folder}/{folder}.jsonl"
      _write_jsonl(output_dir / name, _read_jsonl(source(name),
                                                  rows_per_split))
      continue
    train = _read_jsonl(source(f"{folder}/train.jsonl"), rows_per_split)
    val = _read_jsonl(source(f"{folder}/val.jsonl", f"{folder}/dev32.jsonl"),
                      rows_per_split)
    test_file = _first_file(dirs, f"{folder}/test.jsonl")
    if test_file is None:
      test = [without_labels(folder, r) for r in val]
    else:
      test = _read_jsonl(test_file, rows_per_split)
    _write_jsonl(output_dir / folder / "train.jsonl", train)
    _write_jsonl(output_dir / folder / "val.jsonl", val)
    _write_jsonl(output_dir / folder / "test.jsonl", test)
  return output_dir


def write_msr_subset(source_dir: PathLike, output_dir: PathLike,
                     train_rows: int, test_rows: int,
                     dev_rows: int = 0) -> pathlib.Path:
  """Writes `MRPC/` with the first rows of the MSR files (and dev ids).

  The files get a single UTF-8 byte-order mark, the release's header and its
  double quotes (a tokenized copy's `<QUOTE>` written back as `"`), as the
  originals have. The first `dev_rows` train pairs are listed in
  `dev_ids.tsv` when `dev_rows` > 0.

  Returns:
    The directory holding `MRPC/`.
  """
  source_dir, output_dir = pathlib.Path(source_dir), pathlib.Path(output_dir)
  folder = output_dir / mrpc_files.FOLDER
  folder.mkdir(parents=True, exist_ok=True)
  header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
  for name, count in ((mrpc_files.TRAIN_FILE, train_rows),
                      (mrpc_files.TEST_FILE, test_rows)):
    lines = (source_dir / name).read_bytes().decode("utf-8").splitlines()
    body = [line.replace(mrpc_files.QUOTE_TOKEN, '"')
            for line in lines[1:] if line.strip()][:count]
    text = "\ufeff" + "\r\n".join([header] + body) + "\r\n"
    (folder / name).write_bytes(text.encode("utf-8"))
    if name == mrpc_files.TRAIN_FILE and dev_rows:
      pairs = ["\t".join(line.split("\t")[1:3]) for line in body[:dev_rows]]
      (folder / mrpc_files.DEV_IDS_FILE).write_text("\n".join(pairs) + "\n")
  return output_dir


def prepare_tfds(name: str, data_dir: PathLike, downloaded: Any) -> None:
  """Builds TFDS dataset `name` in `data_dir` from already-local files.

  TFDS's own builder runs unchanged; only its download manager is replaced
  so that `download`/`download_and_extract` return `downloaded` (what the
  builder expects back: a directory, or a dict of paths).

  Args:
    name: e.g. `super_glue/boolq:1.0.2`.
    data_dir: TFDS data directory to write.
    downloaded: the value the builder's download calls should return.
  """
  def serve(self, urls):
    del self, urls
    return downloaded

  with mock.patch.object(tfds.download.DownloadManager,
                         "download_and_extract", serve), \
       mock.patch.object(tfds.download.DownloadManager, "download", serve):
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    builder.download_and_prepare()


def write_mrqa_file(path: PathLike, subset: str,
                    paragraphs: Iterable[dict]) -> str:
  """Writes an MRQA-format jsonl file (header line, then paragraphs).

  Args:
    path: the file to write.
    subset: the dataset name for the header (e.g. `SQuAD`).
    paragraphs: `{"context": str, "qas": [{"qid", "question", "answers"}]}`;
      token lists and detected answers are filled in.

  Returns:
    The path, as a string.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps({"header": {"dataset": subset, "split": "dev"}})]
  for paragraph in paragraphs:
    context = paragraph["context"]
    qas = []
    for qa in paragraph["qas"]:
      detected = []
      for answer in qa["answers"]:
        start = context.find(answer)
        detected.append({"text": answer,
                         "char_spans": [[start, start + len(answer) - 1]],
                         "token_spans": [[0, 0]]})
      qas.append({**qa,
                  "question_tokens": [[w, 0] for w in qa["question"].split()],
                  "detected_answers": detected})
    lines.append(json.dumps({
        "context": context,
        "context_tokens": [[w, 0] for w in context.split()],
        "qas": qas,
    }))
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return os.fspath(path)
