"""Whether a task or mixture can serve a split here, checked within seconds.

A run should learn before any model loads that its data cannot be read.
`check_split_available` reads at most file listings, TFDS metadata and (for
local text files) the files themselves, and never downloads anything: a TFDS
dataset must be prepared, or its download host must answer a short probe
(`prompt_tuning.data.network`; none with `PROMPT_TUNING_OFFLINE=1`).
"""

import sys
from typing import Mapping, Optional

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import locations
from prompt_tuning.data import network
from prompt_tuning.data import registration
from prompt_tuning.data import sources
from prompt_tuning.data import text_files

# Probed when a TFDS builder names no download URL we can find.
_FALLBACK_DOWNLOAD_HOST = "storage.googleapis.com"


def tasks_with_split(mixture_or_task_name: str,
                     split: str) -> list[seqio.Task]:
  """The tasks that have `split` (as a mixture reads them: others skipped).

  Raises:
    ValueError: no task has the split; lists each task's splits.
  """
  tasks = registration.leaf_tasks(mixture_or_task_name)
  having = [t for t in tasks if split in t.splits]
  if not having:
    listed = "; ".join(f"{t.name}: {sorted(t.splits)}" for t in tasks)
    raise ValueError(f"{mixture_or_task_name} has no split {split!r}. "
                     f"Splits: {listed}.")
  return having


def _download_urls(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Download URLs a TFDS builder names (its config's, else its module's)."""
  config = builder.builder_config
  url = getattr(config, "data_url", "") if config is not None else ""
  if isinstance(url, str) and url.startswith(("http://", "https://")):
    return [url]
  urls = []
  module = sys.modules.get(type(builder).__module__)
  for name, value in (vars(module).items() if module else ()):
    upper = name.upper()
    if "HOMEPAGE" in upper or "CITATION" in upper:
      continue
    if isinstance(value, Mapping):
      if "URL" not in upper:  # e.g. builder kwargs, with homepage URLs.
        continue
      values = value.values()
    else:
      values = [value]
    urls.extend(v for v in values
                if isinstance(v, str) and v.startswith(("http://",
                                                        "https://")))
  return urls


def _download_hosts(builder: tfds.core.DatasetBuilder) -> list[str]:
  hosts = {network.remote_host(url) for url in _download_urls(builder)}
  hosts.discard(None)
  return sorted(hosts) or [_FALLBACK_DOWNLOAD_HOST]


def _tfds_fix(task: seqio.Task, source: sources.TfdsOrLocalSource) -> str:
  """What a user can set to get this task's data without a download."""
  data_dir = locations.setting_of(locations.tfds_data_dir)
  options = []
  if source.local is not None:
    local = locations.setting_of(source.local.directory)
    if local is not None:
      options.append(f"point {local.hint()} at a local copy of the files")
  options.append(f"point {data_dir.hint()} at a TFDS data directory where "
                 f"{source.tfds_name} is prepared")
  if network.offline():
    options.append(f"or unset {network.OFFLINE_ENV} where the network is "
                   "reachable so that TFDS can download it")
  else:
    options.append("or run where the network is reachable so that TFDS can "
                   "download it")
  return f"To run {task.name}: " + "; ".join(options) + "."


def _check_tfds(task: seqio.Task, source: sources.TfdsOrLocalSource,
                split: str, probed: dict[str, Optional[str]]) -> None:
  """The TFDS dataset is prepared, or could be downloaded (probe)."""
  data_dir = source.tfds_data_dir()
  shown_dir = data_dir or f"TFDS's default ({tfds.core.constants.DATA_DIR})"
  fix = _tfds_fix(task, source)
  remote = network.remote_host(data_dir) if data_dir else None
  if remote:
    network.require_network(
        [remote], f"The TFDS data directory {data_dir} is remote", fix,
        probed)
  builder = tfds.builder(source.tfds_name, data_dir=data_dir)
  tfds_split = source.tfds_split(split)
  if builder.is_prepared():
    available = builder.info.splits
    if tfds_split not in available:
      raise network.DataUnavailableError(
          f"TFDS {source.tfds_name} in {shown_dir} has no split "
          f"{tfds_split!r} (it has {sorted(available)}), needed by "
          f"{task.name}/{split}. {fix}")
    return
  if isinstance(builder, tfds.core.BeamBasedBuilder):
    # No download can help: TFDS builds it with an Apache Beam pipeline
    # (c4: from Common Crawl, hundreds of GB), never on first use.
    raise network.DataUnavailableError(
        f"{task.name}/{split} reads TFDS {source.tfds_name}, which is not "
        f"prepared in {shown_dir}; TFDS cannot prepare it on first use (it "
        "is built by an Apache Beam pipeline, see the TFDS catalog). Build "
        f"it with `tfds build {source.tfds_name.split(':')[0]}` and Beam, "
        f"then point {locations.setting_of(locations.tfds_data_dir).hint()} "
        "at that data directory; or pretrain on local text files instead "
        f"({text_files.TEXT_FILES_ENV} and the text_* tasks, see "
        "prompt_tuning.tasks.pretraining).")
  hosts = _download_hosts(builder)
  network.require_network(
      hosts,
      f"{task.name}/{split} reads TFDS {source.tfds_name}, which is not "
      f"prepared in {shown_dir} and would have to be downloaded from "
      f"{', '.join(hosts)}", fix, probed)


def _check_file_source(task: seqio.Task, source: seqio.FileDataSource,
                       split: str) -> None:
  """Local file patterns match at least one file (remote ones: unchecked)."""
  patterns = getattr(source, "_split_to_filepattern", {}).get(split)
  if patterns is None:
    return
  if isinstance(patterns, str):
    patterns = [patterns]
  for pattern in patterns:
    if network.remote_host(pattern):
      continue
    if not tf.io.gfile.glob(pattern):
      raise FileNotFoundError(f"No file matches {pattern}, the {split!r} "
                              f"split of {task.name}.")


def check_split_available(mixture_or_task_name: str, split: str) -> None:
  """Checks, within seconds, that every task can serve `split`.

  Tasks of a mixture that lack the split are skipped, as the mixture's
  `get_dataset` skips them. For each remaining task:

  * a local directory configured (`prompt_tuning.data.locations`: an
    environment variable or its gin binding): the split's files exist;
  * TFDS: the dataset is prepared in the TFDS data directory, or else a short
    connect probe (`network.PROBE_TIMEOUT_S`) reaches its download host(s),
    so that a download could work. Offline (`network.offline()`) the probe
    is skipped and the check fails at once; a dataset TFDS builds with
    Apache Beam (c4) fails at once unless prepared;
  * local text files (`text_files.TextFilesSource`): every file is read once
    and must parse (a bad JSON line is named with its line number);
  * other sources: local file patterns must match; anything else is
    accepted as it is.

  Nothing is downloaded or written.

  Args:
    mixture_or_task_name: a registered task or mixture.
    split: e.g. `train`.

  Raises:
    ValueError: no task has `split` (the message lists their splits).
    FileNotFoundError: a local file is missing (named, with the layout).
    network.DataUnavailableError: a TFDS dataset is not prepared and cannot
      be downloaded; names the environment variable and gin binding to set.
  """
  probed: dict[str, Optional[str]] = {}
  for task in tasks_with_split(mixture_or_task_name, split):
    source = task.source
    if isinstance(source, sources.TfdsOrLocalSource):
      root = source.local_dir()
      if root:
        files = getattr(source.local.reader, "files", None)
        if files is not None:
          files(root, split)
      else:
        _check_tfds(task, source, split, probed)
    elif isinstance(source, text_files.TextFilesSource):
      source.check(split)
    elif isinstance(source, seqio.FileDataSource):
      _check_file_source(task, source, split)
