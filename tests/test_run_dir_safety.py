"""Nothing outside MODEL_DIR, and caches written atomically (issue 28).

* A symbolic link where a run keeps a file of its own (`.lock`, `config.gin`,
  `eval_metrics.jsonl`) is refused before anything is loaded or written, and
  its target is left byte for byte as it was.
* `~` and `$VARS` in the paths a user gives are expanded where the entry
  points read them (an unset variable is refused); no folder named `~`
  appears in the working directory.
* An atomic write that fails (a full disk) leaves no temporary file.
* The main job killed while copying the frozen model into its cache: the
  re-run removes the partial copy and succeeds.
* TensorFlow's autograph leaves no `__autograph_generated_file*.py` in the
  temporary folder after a command.
"""

import errno
import os
import pathlib
import signal
import subprocess
import sys

import gin
import pytest

from helpers import prompt_run_flags, shared_dir, shared_path
from prompt_tuning import cli
from prompt_tuning import main_job
from prompt_tuning import paths
from prompt_tuning import train
from prompt_tuning.data import locations
from prompt_tuning.recipes import frozen_model
from prompt_tuning.training import run_dir
from test_front_door import refused

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _local_data_and_clean_gin(local_super_glue):
  yield
  gin.clear_config()


def _env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
  """A subprocess's environment: CPU JAX, no compilation cache, local data,
  its own TMPDIR."""
  tmp = tmp_path / "tmp"
  tmp.mkdir(exist_ok=True)
  return {**os.environ, "TMPDIR": str(tmp), "JAX_PLATFORMS": "cpu",
          cli.COMPILATION_CACHE_ENV: "0", "PYTHONPATH": str(REPO), **extra}


# G3 -------------------------------------------------------------------------


def test_symlinked_run_files_are_refused_and_their_targets_untouched(
    tmp_path):
  outside = tmp_path / "outside"
  outside.mkdir()
  targets = {name: outside / f"precious_{i}" for i, name in
             enumerate(run_dir.RUN_FILES)}
  for i, target in enumerate(targets.values()):
    target.write_bytes(f"precious {i}\n".encode())
  before = {t: t.read_bytes() for t in targets.values()}
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  for name in (run_dir.LOCK_FILE, run_dir.EVAL_RECORD_FILE):
    (model_dir / name).symlink_to(targets[name])

  # The command is refused before anything is loaded, naming the file and
  # the fix.
  error = refused(prompt_run_flags(model_dir), run_dir.RunFileLinkError,
                  "is a symbolic link", model_dir)
  assert str(model_dir / run_dir.LOCK_FILE) in str(error)
  assert "Remove the link" in str(error)

  # Each file on its own, at every place the run writes it.
  os.unlink(model_dir / run_dir.LOCK_FILE)
  with pytest.raises(run_dir.RunFileLinkError,
                     match=run_dir.EVAL_RECORD_FILE):
    run_dir.check_unlocked(str(model_dir))
  with pytest.raises(run_dir.RunFileLinkError,
                     match=run_dir.EVAL_RECORD_FILE):
    run_dir.record_eval(str(model_dir), 4, {"task/accuracy": 1.0})
  with pytest.raises(run_dir.RunFileLinkError,
                     match=run_dir.EVAL_RECORD_FILE):
    with run_dir.RunLock(str(model_dir)):
      pass
  os.unlink(model_dir / run_dir.EVAL_RECORD_FILE)
  (model_dir / run_dir.LOCK_FILE).symlink_to(targets[run_dir.LOCK_FILE])
  with pytest.raises(run_dir.RunFileLinkError, match=run_dir.LOCK_FILE):
    with run_dir.RunLock(str(model_dir)):
      pass
  os.unlink(model_dir / run_dir.LOCK_FILE)
  (model_dir / run_dir.CONFIG_FILE).symlink_to(targets[run_dir.CONFIG_FILE])
  with pytest.raises(run_dir.RunFileLinkError, match=run_dir.CONFIG_FILE):
    run_dir.check_unlocked(str(model_dir))
  with pytest.raises(run_dir.RunFileLinkError, match=run_dir.CONFIG_FILE):
    run_dir.record_config(str(model_dir), "A = 1\n", has_checkpoint=False)
  assert (model_dir / run_dir.CONFIG_FILE).is_symlink()  # Not replaced.
  assert {t: t.read_bytes() for t in targets.values()} == before
  assert sorted(os.listdir(model_dir)) == [run_dir.CONFIG_FILE]


# G14 ------------------------------------------------------------------------


def test_home_and_variables_in_paths_are_expanded(tmp_path, monkeypatch,
                                                  capsys):
  home, cwd = tmp_path / "home", tmp_path / "cwd"
  home.mkdir()
  cwd.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.chdir(cwd)
  checkpoint = shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")
  monkeypatch.setenv("PT_CKPTS", str(checkpoint.parent))
  monkeypatch.setenv("PT_RUNS", str(tmp_path / "runs"))
  args = prompt_run_flags(
      "~/run", "--validate_only",
      f"--gin.INITIAL_CHECKPOINT_PATH='${{PT_CKPTS}}/{checkpoint.name}'")
  assert train.main(args) == 0  # The checkpoint path was found.
  assert "Configuration valid" in capsys.readouterr().out
  assert gin.query_parameter("%MODEL_DIR") == str(home / "run")
  assert gin.query_parameter("%INITIAL_CHECKPOINT_PATH") == str(checkpoint)
  assert "'~/run'" not in gin.config_str()  # What config.gin records.
  gin.clear_config()

  # An unset variable is refused, naming it; nothing is created.
  monkeypatch.delenv("PT_RUNS")
  refused(prompt_run_flags("$PT_RUNS/run"), paths.UnsetVariableError,
          r"MODEL_DIR '\$PT_RUNS/run' names the environment variable "
          r"\$PT_RUNS, which is not set", cwd)
  assert not os.listdir(cwd)  # No '~' (or '$PT_RUNS') folder here.

  # Flags too: the main job's --cache_dir, and gin files.
  flag_values = cli.parse_flags(
      ["--cache_dir=~/cache", "--work_dir=$HOME/work", "--nocompilation_cache"],
      main_job._flags(), "doc")  # pylint: disable=protected-access
  assert flag_values["cache_dir"].value == str(home / "cache")
  assert flag_values["work_dir"].value == str(home / "work")
  with pytest.raises(paths.UnsetVariableError, match=r"--shared_dir"):
    cli.parse_flags(["--shared_dir=$PT_RUNS/shared", "--nocompilation_cache"],
                    main_job._flags(), "doc")  # pylint: disable=protected-access
  with pytest.raises(paths.UnsetVariableError, match="names no user"):
    paths.expand("~nosuchuser_pt/x", "MODEL_DIR")
  assert not os.listdir(cwd)


# G15 ------------------------------------------------------------------------


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                        fail):
  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(run_dir.os, fail, full_disk)
  with pytest.raises(OSError, match="No space left"):
    run_dir.record_config(str(tmp_path), "A = 1\n", has_checkpoint=False)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []
  # An earlier record is kept as it was.
  run_dir.write_atomically(str(tmp_path / run_dir.CONFIG_FILE), "A = 1\n")
  monkeypatch.setattr(run_dir.os, fail, full_disk)
  with pytest.raises(OSError):
    run_dir.write_atomically(str(tmp_path / run_dir.CONFIG_FILE), "A = 2\n")
  monkeypatch.undo()
  assert os.listdir(tmp_path) == [run_dir.CONFIG_FILE]
  assert (tmp_path / run_dir.CONFIG_FILE).read_text() == "A = 1\n"


# G5 -------------------------------------------------------------------------


def _fake_exports(build_dir: pathlib.Path) -> pathlib.Path:
  """Every stage of the recipe finished, as T5X exports (small files): the
  state a build is in when it copies the last one to `frozen/`."""
  step = 0
  for stage in frozen_model.STAGES:
    step += stage.train_steps
    checkpoint = build_dir / stage.name / f"checkpoint_{step}"
    for i in range(6):
      (checkpoint / f"target.layer_{i}").mkdir(parents=True)
      (checkpoint / f"target.layer_{i}" / "0.0").write_bytes(
          os.urandom(4096))
    (checkpoint / "checkpoint").write_bytes(os.urandom(512))
  return checkpoint


def test_a_killed_copy_into_the_cache_is_redone(tmp_path):
  """`python -m prompt_tuning.main_job --build` killed while it copies the
  frozen model: the re-run removes the partial copy and makes a whole one."""
  shared = shared_dir()
  frozen_model.register_tasks(str(shared))
  config = main_job.model_config(frozen_model.MODEL_GIN)
  recipe = frozen_model.fingerprint(config, frozen_model.STAGES, 0)
  cache = tmp_path / "cache"
  build_dir = cache / f"recipe_{recipe[:12]}"
  exported = _fake_exports(build_dir)
  command = ["-m", "prompt_tuning.main_job", "--build_only", "--build",
             f"--cache_dir={cache}", f"--shared_dir={shared}",
             "--nocompilation_cache"]
  env = _env(tmp_path, PROMPT_TUNING_VOCAB=str(
      shared_path(*locations.VOCAB_IN_SHARED)))

  # Killed (SIGKILL) after copying 3 files of the frozen model.
  kill = ("import os, shutil, signal, sys\n"
          "copied, real = [0], shutil.copyfile\n"
          "def copyfile(*a, **k):\n"
          "  copied[0] += 1\n"
          "  if copied[0] > 3:\n"
          "    os.kill(os.getpid(), signal.SIGKILL)\n"
          "  return real(*a, **k)\n"
          "shutil.copyfile = copyfile\n"
          "from prompt_tuning import cli, main_job\n"
          "sys.argv = ['main_job'] + sys.argv[1:]\n"
          "cli.run(main_job.main)\n")
  killed = subprocess.run([sys.executable, "-c", kill, *command[2:]],
                          env=env, capture_output=True, text=True,
                          timeout=120, check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  partial = [p for p in os.listdir(build_dir) if p.startswith(".frozen.")]
  assert partial and not (build_dir / frozen_model.FROZEN_DIR).exists()
  # What earlier code left when killed: its temporary folder and a partial
  # target.
  (build_dir / ".frozen.partial" / exported.name).mkdir(parents=True)
  half = build_dir / frozen_model.FROZEN_DIR / exported.name
  half.mkdir(parents=True)
  (half / "checkpoint").write_bytes(b"cut short")

  again = subprocess.run([sys.executable, *command], env=env,
                         capture_output=True, text=True, timeout=120,
                         check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.splitlines()[-1] == str(half)
  assert frozen_model.checkpoint_digest(str(half)) == (
      frozen_model.checkpoint_digest(str(exported)))
  assert frozen_model.verified_checkpoint(str(build_dir), recipe)[0] == str(
      half)
  assert not [p for p in os.listdir(build_dir) if p.startswith(".")]


# Autograph's temporary files -------------------------------------------------


def test_commands_leave_no_autograph_files_in_tmpdir(tmp_path):
  env = _env(tmp_path)
  result = subprocess.run(
      [sys.executable, "-m", "prompt_tuning.train",
       *prompt_run_flags(tmp_path / "run", "--validate_only")],
      env=env, capture_output=True, text=True, timeout=120, check=False,
      cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Configuration valid" in result.stdout
  assert list((tmp_path / "tmp").iterdir()) == []  # Nothing at all left.
