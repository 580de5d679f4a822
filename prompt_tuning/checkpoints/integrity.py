"""Content checksums of checkpoints: one algorithm, one record format.

Every checkpoint this project writes records checksums of what it holds, and
every read verifies them, per array or per file, as it reads:

  * arrays (run checkpoints' trees, small: prompts, heads, optimizer
    state): `array_checksum(a)` over the dtype, shape and bytes of the
    array's values, recorded at save time and compared after restore;
  * files (T5X exports, the zarr chunks and msgpack of any T5X or Hugging
    Face checkpoint read): `file_checksum(path)` over the file's bytes.
    A directory written by this project holds a manifest
    (`MANIFEST_NAME`, `write_manifest`) of its files' checksums;
    `verify_file` compares a file against it.

The algorithm is CRC-32 (zlib, several GB/s): it detects damaged and
truncated files and changed values, not tampering. A checkpoint's content
fingerprint (`fingerprint`) combines its per-array or per-file checksums
with SHA-256, so that two checkpoints of the same shapes but other weights
are told apart.

Reading a checkpoint, `FileChecksums` hashes each file once, when a read
first uses it, and verifies it against the directory's manifest when there
is one; a checkpoint written elsewhere (by T5X itself, or a Hugging Face
download) has none, and its checksums are only recorded, so that its
content fingerprint (`FileChecksums.fingerprint`) still tells it apart.
Damage found while reading (a missing or mis-described file, one that does
not decode) is a `DamagedCheckpointError`; a file whose bytes differ from
its manifest a `ChecksumMismatchError`, one of those.
"""

import concurrent.futures
import hashlib
import json
import mmap
import os
import pathlib
import zlib
from typing import Iterable, Mapping, Optional

import numpy as np

from prompt_tuning import errors

PathLike = str | os.PathLike[str]

ALGORITHM = "crc32"
# A directory's manifest: {"algorithm": "crc32", "files": {relpath: checksum}}.
MANIFEST_NAME = "checksums.json"
_CHUNK = 1 << 22


# How every error about a damaged checkpoint ends: the fix.
RESTORE_FIX = "Restore the checkpoint from a good copy, or use another one."


class DamagedCheckpointError(errors.ConfigError):
  """A checkpoint file is missing, truncated, does not decode or disagrees
  with what the checkpoint records about it; the message names the file and
  the fix (restore it from a good copy)."""


class ChecksumMismatchError(DamagedCheckpointError):
  """A checkpoint's content differs from what was recorded when it was
  written: the file or array is damaged. (A ValueError, via ConfigError.)"""


def array_checksum(array: np.ndarray) -> str:
  """`'crc32:xxxxxxxx'` of an array's dtype, shape and values (C order)."""
  a = np.ascontiguousarray(array)
  crc = zlib.crc32(f"{a.dtype.str}{list(a.shape)}".encode())
  # Bytes through a uint8 view: also for ml_dtypes (bfloat16), which
  # memoryview does not take.
  crc = zlib.crc32(a.reshape(-1).view(np.uint8), crc)
  return f"{ALGORITHM}:{crc:08x}"


def tree_checksums(flat: Mapping[str, np.ndarray]) -> dict[str, str]:
  """`{name: array_checksum}` of a flat `{name: array}` tree."""
  return {name: array_checksum(np.asarray(a)) for name, a in flat.items()}


def bytes_checksum(data: bytes | memoryview) -> str:
  """`'crc32:xxxxxxxx'` of bytes in memory: `file_checksum` of a file
  holding them (for a file already read whole, e.g. T5X's msgpack)."""
  return f"{ALGORITHM}:{zlib.crc32(data):08x}"


def file_checksum(path: PathLike) -> str:
  """`'crc32:xxxxxxxx'` of a file's bytes.

  The file is memory-mapped and hashed in place (no copy; zlib releases
  the GIL), or read in chunks where it cannot be mapped (an empty file).
  """
  with open(path, "rb") as f:
    try:
      with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return f"{ALGORITHM}:{zlib.crc32(mapped):08x}"
    except (ValueError, OSError):  # Empty, or not mappable.
      crc = 0
      while chunk := f.read(_CHUNK):
        crc = zlib.crc32(chunk, crc)
      return f"{ALGORITHM}:{crc:08x}"


def fingerprint(checksums: Mapping[str, str]) -> str:
  """12 hex digits of SHA-256 over sorted `{name: checksum}` items."""
  text = json.dumps(sorted(checksums.items()))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_manifest(directory: PathLike,
                   files: Optional[Iterable[PathLike]] = None) -> str:
  """Writes `directory/MANIFEST_NAME` with the checksums of `files` (all
  files below `directory` by default); returns its path. Written to a
  temporary name and renamed."""
  directory = os.fspath(directory)
  if files is None:
    files = [os.path.join(root, n) for root, _, names in os.walk(directory)
             for n in names if n != MANIFEST_NAME]
  record = {"algorithm": ALGORITHM, "files": {
      pathlib.Path(os.path.relpath(f, directory)).as_posix(): file_checksum(f)
      for f in sorted(os.fspath(f) for f in files)}}
  path = os.path.join(directory, MANIFEST_NAME)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
  return path


def read_manifest(directory: PathLike) -> Optional[dict[str, str]]:
  """`{relpath: checksum}` of `directory`'s manifest, or None without one."""
  path = os.path.join(os.fspath(directory), MANIFEST_NAME)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
    return dict(record["files"])
  except (ValueError, KeyError, TypeError) as e:
    raise ChecksumMismatchError(
        f"{path} is damaged ({e}); the checkpoint's checksums cannot be "
        "verified. Restore the directory from a good copy.") from e


def verify_file(path: PathLike, expected: Optional[str],
                what: str = "") -> str:
  """The file's checksum; raises ChecksumMismatchError, naming the file,
  when `expected` is given and differs."""
  actual = file_checksum(path)
  if expected is not None and actual != expected:
    raise _mismatch(path, actual, expected, what)
  return actual


def _mismatch(path: PathLike, actual: str, expected: str,
              what: str = "") -> ChecksumMismatchError:
  return ChecksumMismatchError(
      f"{os.fspath(path)}{' (' + what + ')' if what else ''} does not match "
      f"the checksum recorded when it was written ({actual} vs {expected}):"
      f" the file is damaged. {RESTORE_FIX}")


def verify_array(name: str, array: np.ndarray, expected: Optional[str],
                 where: str) -> None:
  """Raises ChecksumMismatchError, naming the array and `where` it came
  from, when `expected` is given and the array's checksum differs."""
  if expected is None:
    return
  actual = array_checksum(array)
  if actual != expected:
    raise ChecksumMismatchError(
        f"{name} in {where} does not match the checksum recorded when it "
        f"was saved ({actual} vs {expected}): the checkpoint is damaged.")


def folder_files(folder: PathLike) -> list[pathlib.Path]:
  """Every file below `folder`, sorted."""
  return sorted(pathlib.Path(root, n) for root, _, names in os.walk(folder)
                for n in names)


class FileChecksums:
  """The checksums of one checkpoint directory's files, as they are read.

  Each file is hashed once, when a read first uses it (`check`,
  `check_bytes`, `check_folder`), and verified against the directory's
  manifest when it has one: a file whose checksum differs, one the manifest
  lists and that is missing, or one it does not list, is refused naming the
  file. Without a manifest (checkpoints written by T5X itself, Hugging Face
  downloads) checksums are only recorded. `fingerprint` combines them.

  Attributes:
    directory: the checkpoint directory; files are named relative to it,
      '/'-separated, as in its manifest.
    manifest: {name: checksum} of its manifest; None without one.
  """

  def __init__(self, directory: PathLike):
    self.directory = pathlib.Path(directory)
    self.manifest = read_manifest(self.directory)
    self._checksums: dict[str, str] = {}
    self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._pending: dict[str, concurrent.futures.Future] = {}

  @property
  def manifest_path(self) -> pathlib.Path:
    """Where the directory's manifest is (or would be)."""
    return self.directory / MANIFEST_NAME

  @property
  def checksums(self) -> dict[str, str]:
    """{name: checksum} of the files hashed so far."""
    return dict(self._checksums)

  def name(self, path: PathLike) -> str:
    """`path`'s name in the manifest: relative to `directory`."""
    return pathlib.Path(os.path.relpath(path, self.directory)).as_posix()

  def _verified(self, name: str, actual: str) -> str:
    if self.manifest is not None:
      expected = self.manifest.get(name)
      if expected is None:
        raise ChecksumMismatchError(
            f"{self.directory / name} is not listed in {self.manifest_path}, "
            "written with the checkpoint: the file was added or renamed "
            f"after it was written. {RESTORE_FIX}")
      if actual != expected:
        raise _mismatch(self.directory / name, actual, expected)
    self._checksums[name] = actual
    return actual

  def check(self, path: PathLike) -> str:
    """The file's checksum (hashed on first use); raises
    ChecksumMismatchError, naming the file, when it differs from the
    manifest's."""
    name = self.name(path)
    if name in self._checksums:
      return self._checksums[name]
    return self._verified(name, file_checksum(path))

  def check_bytes(self, path: PathLike, data: bytes) -> str:
    """As `check`, for a file already read whole into `data`."""
    name = self.name(path)
    if name in self._checksums:
      return self._checksums[name]
    return self._verified(name, bytes_checksum(data))

  def check_folder(self, folder: PathLike) -> dict[str, str]:
    """`check` of every file below `folder` (a zarr array's folder);
    returns {name: checksum}. With a manifest, a file it lists below
    `folder` that is missing is refused first, naming it."""
    folder = pathlib.Path(folder)
    files = folder_files(folder)
    if self.manifest is not None:
      prefix = self.name(folder) + "/"
      present = {self.name(f) for f in files}
      missing = sorted(n for n in self.manifest
                       if n.startswith(prefix) and n not in present)
      if missing:
        more = (f" (and {len(missing) - 1} more files of {folder})"
                if len(missing) > 1 else "")
        raise DamagedCheckpointError(
            f"{self.directory / missing[0]} is missing{more}: "
            f"{self.manifest_path} lists it. {RESTORE_FIX}")
    return {self.name(f): self.check(f) for f in files}

  def start_folder(self, folder: PathLike) -> None:
    """Starts `check_folder(folder)` on a background thread, so that the
    hashing overlaps the read of the array that follows (zlib releases the
    GIL); `wait(folder)` gives its error, if any, before the array is
    used."""
    if self._executor is None:
      self._executor = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix="checksums")
    key = os.fspath(folder)
    if key not in self._pending:
      self._pending[key] = self._executor.submit(self.check_folder, folder)

  def wait(self, folder: Optional[PathLike] = None) -> None:
    """Waits for `folder`'s `start_folder` (every one's by default);
    raises its error (a ChecksumMismatchError naming the file), again at
    every later wait: a damaged array is never taken on a second read."""
    keys = list(self._pending) if folder is None else [os.fspath(folder)]
    for key in keys:
      pending = self._pending.get(key)
      if pending is not None:
        pending.result()
        del self._pending[key]

  def close(self) -> None:
    """Waits for the background checks (dropping their errors: nothing
    read is used after this) and stops their thread."""
    for pending in self._pending.values():
      pending.exception()
    self._pending.clear()
    if self._executor is not None:
      self._executor.shutdown()
      self._executor = None

  def fingerprint(self, paths: Iterable[PathLike]) -> str:
    """`fingerprint` of {name: checksum} of `paths` (files hashed already
    are not read again)."""
    self.wait()
    return fingerprint({self.name(p): self.check(p) for p in paths})
