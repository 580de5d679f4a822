r"""Train-step time and peak memory: our prompt tuning vs full fine-tuning vs PEFT.

Measures, for the T5 1.1-small shape (vocab 32128, d_model 512, 6 heads x 64,
d_ff 1024, 8 + 8 layers, gated GELU, untied logits), batch 8, inputs 128,
prompt 100, targets 8, float32, random weights:

  jax/prompt   our real compiled train step
               (`training.partitioned.compile_train_step` on a 1-device mesh,
               state from `train_state.create_train_state` with trainable
               patterns `('prompt/prompt',)`, Adafactor from
               `training.optimizers.adafactor()`), PromptTransformer with a
               100-token prompt;
  jax/full     the same step for full fine-tuning: plain T5 `Transformer`
               (no prompt, 128 encoder positions), patterns `('.*',)` with
               `allow_all_trainable=True`;
  jax/full_p   (with --configs=...,full_p) full fine-tuning of the prompt
               model: same 228 encoder positions as jax/prompt, everything
               trainable; isolates the cost of the weight gradients and
               optimizer from the cost of the longer sequence;
  peft/prompt  (with --peer_python) Hugging Face PEFT prompt tuning
               (`PromptTuningConfig(num_virtual_tokens=100)`) of a randomly
               initialised `T5ForConditionalGeneration` of the same shape,
               `transformers.optimization.Adafactor` with the same
               hyper-parameters, torch threads = number of cores; run by
               `benchmarks/peft_step.py` in the peer venv.

Each configuration runs in its own subprocess, so that peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, i.e. imports + init + compile
+ steps) does not bleed between them; the worker also samples RSS during the
timed steps only (`/proc/self/statm`) and, for JAX, reports
`compiled.memory_analysis()` and the compiled step's FLOP count
(`compiled.cost_analysis()`). Timing: `--warmup` untimed steps (the first
one includes tracing and compilation and is reported separately), then the
median of `--steps` steps, each ended by `jax.block_until_ready`.

It also writes a prompt-only training checkpoint (`TrainCheckpointer`) and a
full fine-tuning checkpoint into a temporary directory and reports `du`.

Other shapes and accelerators: `--shape=base` (T5 1.1-base), `--dtype=bfloat16`
(activations; parameters stay float32), `--batch_size`, `--input_length`,
`--target_length`, `--prompt_length`. JAX runs on its default backend (a GPU
when the CUDA plugin is installed); this script never imports TensorFlow.
After the table it prints tokens/s and MFU for every row (see
`print_throughput`).

Usage (from the repository root, main venv active):

  python benchmarks/step_time.py \
      --peer_python=.venv-peer/bin/python
  python benchmarks/step_time.py --shape=base --dtype=bfloat16 \
      --configs=prompt --no_checkpoint --batch_size=32 --input_length=512

See benchmarks/README.md.
"""

import argparse
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import memory  # benchmarks/memory.py (this script's directory is on sys.path)

# Model shapes (T5 1.1, configs/models/t5_1_1_{small,base}.gin): vocab
# 32128, gated GELU, untied logits.
MODEL_SHAPES = {
    "small": {"vocab_size": 32128, "d_model": 512, "num_heads": 6,
              "head_dim": 64, "d_ff": 1024, "num_encoder_layers": 8,
              "num_decoder_layers": 8},
    "base": {"vocab_size": 32128, "d_model": 768, "num_heads": 12,
             "head_dim": 64, "d_ff": 2048, "num_encoder_layers": 12,
             "num_decoder_layers": 12},
}
BATCH_DEFAULTS = {"batch_size": 8, "inputs_length": 128,
                  "prompt_length": 100, "targets_length": 8}

# Shape of the model and of the benchmark batch (shared with the peer); T5
# 1.1-small with the defaults above unless `configure()` changes it.
SHAPE = {**MODEL_SHAPES["small"], **BATCH_DEFAULTS}
SHAPE_NAME = "small"
DTYPE = "float32"  # T5Config.dtype: activations; parameters stay float32.
REMAT = "none"  # T5Config.remat_policy (--remat_policy).
# T5Config.attention_layout (--attention_layout); None: the library's
# default (head_major).
LAYOUT = None
# trainer.train's dropout_rng_impl (--dropout_rng_impl); None: the library's
# default (steps.DEFAULT_DROPOUT_RNG_IMPL, unsafe_rbg).
RNG_IMPL = None

# Dense peak TFLOP/s of one chip, by `jax.devices()[0].device_kind`, for
# MFU's denominator (NVIDIA datasheets; the "with sparsity" figures halved).
# bfloat16: tensor-core BF16. float32: the TF32 tensor-core figure, because
# JAX's default matmul precision computes float32 dots as TF32 on Ampere and
# newer GPUs (the non-tensor float32 peak, e.g. 67 on H100 SXM / H200, would
# put MFU above 1); pass --peak_tflops to use another figure. Patterns are
# tried in order; an unknown kind (or CPU) gives no MFU.
PEAK_TFLOPS = (
    # (regex on device_kind, {dtype: dense TFLOP/s})
    (r"H200.*NVL", None),  # Not in this table: pass --peak_tflops.
    (r"H200", {"bfloat16": 989.0, "float32": 494.7}),
    (r"H100.*PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    (r"H100.*NVL", None),  # Not in this table: pass --peak_tflops.
    (r"H100", {"bfloat16": 989.0, "float32": 494.7}),  # SXM (HBM3).
    (r"A100", {"bfloat16": 312.0, "float32": 156.0}),
    (r"\bL4\b", {"bfloat16": 121.0, "float32": 60.0}),
)

_HERE = os.path.dirname(os.path.abspath(__file__))
_MIB = 1024.0 * 1024.0
JAX_CONFIGS = ("prompt", "full", "full_p")


def num_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def summarize_times(times_s: Sequence[float]) -> dict[str, float]:
  """Median / min / max step time in milliseconds."""
  ms = [t * 1e3 for t in times_s]
  return {"median_ms": statistics.median(ms), "min_ms": min(ms),
          "max_ms": max(ms), "steps_per_s": 1e3 / statistics.median(ms)}


def configure(shape: str = "small", dtype: str = "float32",
              batch_size: Optional[int] = None,
              input_length: Optional[int] = None,
              target_length: Optional[int] = None,
              prompt_length: Optional[int] = None) -> None:
  """Sets the module-level SHAPE / SHAPE_NAME / DTYPE (None: the default)."""
  global SHAPE_NAME, DTYPE
  if shape not in MODEL_SHAPES:
    raise ValueError(f"Unknown shape {shape!r}; use {tuple(MODEL_SHAPES)}.")
  SHAPE.clear()
  SHAPE.update(MODEL_SHAPES[shape])
  SHAPE.update(BATCH_DEFAULTS)
  for key, value in (("batch_size", batch_size),
                     ("inputs_length", input_length),
                     ("targets_length", target_length),
                     ("prompt_length", prompt_length)):
    if value is not None:
      SHAPE[key] = value
  SHAPE_NAME, DTYPE = shape, dtype


def peak_tflops_for(device_kind: str, dtype: str) -> Optional[float]:
  """Dense peak TFLOP/s from PEAK_TFLOPS, or None (unknown kind, CPU)."""
  for pattern, peaks in PEAK_TFLOPS:
    if re.search(pattern, device_kind):
      return None if peaks is None else peaks.get(dtype)
  return None


def encoder_length(config_name: str) -> int:
  """Encoder positions of a row: inputs, plus the prompt if it has one."""
  prompt = 0 if config_name == "full" else SHAPE["prompt_length"]
  return SHAPE["inputs_length"] + prompt


def tokens_per_step(config_name: str) -> int:
  """Tokens one step processes: batch x (encoder positions incl. the prompt
  + decoder positions)."""
  return SHAPE["batch_size"] * (encoder_length(config_name) +
                                SHAPE["targets_length"])


# --------------------------------------------------------------------------
# JAX worker (runs in a subprocess of the main venv).
# --------------------------------------------------------------------------


def _jax_model(config_name: str, dropout_rate: float):
  """(EncoderDecoderModel, trainable patterns, allow_all_trainable)."""
  from prompt_tuning.models import config as t5_config  # pylint: disable=g-import-not-at-top
  from prompt_tuning.models import model as models  # pylint: disable=g-import-not-at-top
  from prompt_tuning.models import t5  # pylint: disable=g-import-not-at-top
  from prompt_tuning.prompts import models as prompt_models  # pylint: disable=g-import-not-at-top

  cfg = t5_config.T5Config(
      vocab_size=SHAPE["vocab_size"], emb_dim=SHAPE["d_model"],
      num_heads=SHAPE["num_heads"], head_dim=SHAPE["head_dim"],
      mlp_dim=SHAPE["d_ff"], num_encoder_layers=SHAPE["num_encoder_layers"],
      num_decoder_layers=SHAPE["num_decoder_layers"],
      mlp_activations=t5_config.GATED_GELU, dropout_rate=dropout_rate,
      logits_via_embedding=False, dtype=DTYPE, remat_policy=REMAT,
      **({} if LAYOUT is None else {"attention_layout": LAYOUT}))
  if config_name == "prompt":
    module = prompt_models.PromptTransformer(
        cfg, prompt_length=SHAPE["prompt_length"])
    return models.EncoderDecoderModel(module), ("prompt/prompt",), False
  if config_name == "full":
    return models.EncoderDecoderModel(t5.Transformer(cfg)), (".*",), True
  if config_name == "full_p":
    module = prompt_models.PromptTransformer(
        cfg, prompt_length=SHAPE["prompt_length"])
    return models.EncoderDecoderModel(module), (".*",), True
  raise ValueError(f"Unknown config {config_name!r}; use one of "
                   f"{JAX_CONFIGS}.")


def _jax_batch(seed: int):
  """A random batch of int32 features (no padding)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  b, l, t = (SHAPE["batch_size"], SHAPE["inputs_length"],
             SHAPE["targets_length"])
  targets = rng.integers(2, SHAPE["vocab_size"], (b, t), dtype=np.int32)
  decoder_inputs = np.concatenate(
      [np.zeros((b, 1), np.int32), targets[:, :-1]], axis=1)
  return {
      "encoder_input_tokens": rng.integers(
          2, SHAPE["vocab_size"], (b, l), dtype=np.int32),
      "decoder_input_tokens": decoder_inputs,
      "decoder_target_tokens": targets,
  }


def build_jax_state(config_name: str, dropout_rate: float, seed: int = 0):
  """Random-weight train state on a 1-device mesh, as the trainer builds it.

  Returns:
    (model, tx, mesh, shardings, state, patterns).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning import partitioning  # pylint: disable=g-import-not-at-top
  from prompt_tuning.prompts import freezing  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import optimizers  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import state as state_lib  # pylint: disable=g-import-not-at-top

  model, patterns, allow_all = _jax_model(config_name, dropout_rate)
  tx = optimizers.adafactor()
  mesh = partitioning.create_mesh(devices=jax.devices()[:1])
  boxed = state_lib.model_shapes(model, {"inputs": SHAPE["inputs_length"],
                                         "targets": SHAPE["targets_length"]})
  split = freezing.compute_split(boxed, patterns,
                                 allow_all_trainable=allow_all)
  # The trainer's own path: random init straight to the shardings, then the
  # state built with the initial parameters donated.
  built = state_lib.build_train_state(model, mesh, tx, None, split,
                                      boxed_params=boxed,
                                      rng=jax.random.PRNGKey(seed))
  return model, tx, mesh, built.shardings, built.state, patterns


def dropout_key(seed: int):
  """The trainer's dropout key for `seed` under RNG_IMPL."""
  from prompt_tuning.training import steps  # pylint: disable=g-import-not-at-top
  return steps.run_keys(seed, RNG_IMPL or steps.DEFAULT_DROPOUT_RNG_IMPL)[1]


def time_calls(fn, steps: int) -> list[float]:
  """Seconds per call of `fn()` (which must block), after one warm-up call."""
  fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def jax_breakdown(model, mesh, state, batch, rng, steps: int
                  ) -> dict[str, float]:
  """Median ms of the loss forward alone, of forward + backward, of the step.

  Jits `model.loss_fn` and `jax.grad` of it w.r.t. `state.trainable` (as
  `steps.trainable_gradients` takes it), with the same mesh and axis rules;
  the difference to the full step is the optimizer update and bookkeeping.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning import partitioning  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import steps as steps_lib  # pylint: disable=g-import-not-at-top

  with partitioning.mesh_context(mesh):
    forward = jax.jit(lambda s, b, r: model.loss_fn(s.params, b, r)[0])
    grads = jax.jit(lambda s, b, r: steps_lib.trainable_gradients(
        model.loss_fn, s, b, r, 1))
    out = {}
    for name, fn in (("forward", forward), ("forward_backward", grads)):
      times = time_calls(
          lambda fn=fn: jax.block_until_ready(fn(state, batch, rng)), steps)
      out[f"{name}_median_ms"] = statistics.median(times) * 1e3
  return out


def run_jax_worker(config_name: str, steps: int, warmup: int,
                   dropout_rate: float, xla_analysis: bool,
                   breakdown: bool = False,
                   peak_tflops: Optional[float] = None) -> dict[str, Any]:
  """Times our compiled train step for one configuration.

  `peak_tflops`: MFU's denominator; None looks the device up in
  PEAK_TFLOPS (no MFU when it is not there).
  """
  load_start = os.getloadavg()
  rss_start = memory.current_rss_bytes()
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning import partitioning  # pylint: disable=g-import-not-at-top
  from prompt_tuning.prompts import freezing  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import partitioned  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  # build_jax_state's module too, so that its imports count as imports.
  importlib.import_module("prompt_tuning.training.state")
  rss_imported = memory.current_rss_bytes()

  model, tx, mesh, shardings, state, _ = build_jax_state(config_name,
                                                         dropout_rate)
  rss_state = memory.current_rss_bytes()
  step_fn = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings)
  batch = jax.device_put(_jax_batch(0), partitioning.batch_sharding(mesh))
  rng = (jax.device_put(dropout_key(1), partitioning.replicated(mesh))
         if dropout_rate > 0 else None)

  result: dict[str, Any] = {
      "framework": "jax", "config": config_name,
      "trainable_params": freezing.count_params(state.trainable),
      "total_params": (freezing.count_params(state.trainable) +
                       freezing.count_params(state.frozen)),
      "dropout_rate": dropout_rate,
      "devices": str(jax.devices()[0]),
      "jax_version": jax.__version__,
      "shape_name": SHAPE_NAME, "dtype": DTYPE, "remat_policy": REMAT,
      "attention_layout": model.module.config.attention_layout,
      "dropout_rng_impl": RNG_IMPL or steps_lib.DEFAULT_DROPOUT_RNG_IMPL,
      "platform": jax.devices()[0].platform,
      "device_kind": jax.devices()[0].device_kind,
      "encoder_length": encoder_length(config_name),
      "tokens_per_step": tokens_per_step(config_name),
  }

  if xla_analysis:
    # Same jit object as `step_fn`; lowered under the mesh and axis rules as
    # `step_fn` traces it.
    with partitioning.mesh_context(mesh):
      lowered = step_fn.__wrapped__.lower(state, batch, rng)
      t0 = time.perf_counter()
      compiled = lowered.compile()
      result["aot_compile_s"] = time.perf_counter() - t0
    # The same count on the HLO before XLA's optimisations, as a cross-check
    # of the compiled count (which some GPU releases got wrong for dots
    # turned into library calls).
    try:
      lowered_cost = lowered.cost_analysis()
    except Exception:  # pylint: disable=broad-except
      lowered_cost = None
    if isinstance(lowered_cost, (list, tuple)):
      lowered_cost = lowered_cost[0] if lowered_cost else None
    if lowered_cost and lowered_cost.get("flops"):
      result["lowered_flops"] = float(lowered_cost["flops"])
    del lowered
    mem = compiled.memory_analysis()
    if mem is not None:
      result["xla_memory"] = {
          k: int(getattr(mem, k)) for k in (
              "argument_size_in_bytes", "output_size_in_bytes",
              "alias_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes")
          if hasattr(mem, k)}
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost:
      result["xla_flops"] = float(cost.get("flops", 0.0))
      result["xla_bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
    del compiled

  t0 = time.perf_counter()
  state, metrics = step_fn(state, batch, rng)
  jax.block_until_ready((state, metrics))
  result["first_step_s"] = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready((state, metrics))
  rss_before_steps = memory.current_rss_bytes()

  times = []
  with memory.RssSampler() as sampler:
    for _ in range(steps):
      t0 = time.perf_counter()
      state, metrics = step_fn(state, batch, rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  result.update(summarize_times(times))
  result["times_ms"] = [t * 1e3 for t in times]
  result["loss"] = float(metrics["loss"])
  result["rss_mib"] = {
      "start": rss_start / _MIB, "after_imports": rss_imported / _MIB,
      "after_state": rss_state / _MIB, "before_steps": rss_before_steps / _MIB,
      "peak_during_steps": sampler.peak / _MIB,
      "peak_process": memory.peak_rss_bytes() / _MIB}
  result["loadavg_start"], result["loadavg_end"] = load_start, os.getloadavg()
  if breakdown:
    result["breakdown"] = jax_breakdown(model, mesh, state, batch, rng,
                                        max(steps // 2, 3))
  if result.get("xla_flops"):
    result["achieved_gflop_s"] = (result["xla_flops"] /
                                  (result["median_ms"] * 1e-3) / 1e9)
  result["tokens_per_s"] = result["tokens_per_step"] * result["steps_per_s"]
  if peak_tflops is not None:
    result["peak_tflops"], result["peak_source"] = peak_tflops, "--peak_tflops"
  else:
    result["peak_tflops"] = peak_tflops_for(result["device_kind"], DTYPE)
    result["peak_source"] = (f"PEAK_TFLOPS[{result['device_kind']!r}, {DTYPE}]"
                             if result["peak_tflops"] else None)
  if result.get("achieved_gflop_s") and result["peak_tflops"]:
    result["mfu"] = result["achieved_gflop_s"] / (result["peak_tflops"] * 1e3)
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  if stats and "peak_bytes_in_use" in stats:
    result["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  # TensorFlow would grab the GPU; nothing on this path may import it.
  result["tensorflow_imported"] = "tensorflow" in sys.modules
  return result


def _du_bytes(path: str) -> int:
  """Disk usage of `path` in bytes (`du -sb`, else a walk of file sizes)."""
  du = shutil.which("du")
  if du:
    out = subprocess.run([du, "-sb", path], check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[0])
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def run_checkpoint_worker() -> dict[str, Any]:
  """Sizes of a prompt-only and of full-model training checkpoints."""
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import checkpointer as train_ckpt  # pylint: disable=g-import-not-at-top
  from prompt_tuning.prompts import freezing  # pylint: disable=g-import-not-at-top

  rows = []
  cases = (
      # (label, jax config, save_frozen)
      ("prompt-only (prompt + Adafactor state)", "prompt", False),
      ("prompt model incl. frozen base (save_frozen=True)", "prompt", True),
      ("full fine-tuning (all params + Adafactor state)", "full", False),
  )
  with tempfile.TemporaryDirectory() as tmp:
    for i, (label, config_name, save_frozen) in enumerate(cases):
      _, _, _, _, state, patterns = build_jax_state(config_name, 0.0)
      model_dir = os.path.join(tmp, f"run_{i}")
      ckpt = train_ckpt.TrainCheckpointer(model_dir, save_frozen=save_frozen)
      ckpt.save(state, data_position=0,
                frozen_record=train_ckpt.frozen_base_record(state.frozen,
                                                            None),
                trainable_patterns=patterns)
      ckpt.close()
      rows.append({
          "label": label,
          "saved_params": (freezing.count_params(state.trainable) +
                           (freezing.count_params(state.frozen)
                            if save_frozen else 0)),
          "bytes": _du_bytes(ckpt.directory),
      })
      del state
      jax.clear_caches()
  return {"checkpoints": rows}


# --------------------------------------------------------------------------
# Orchestration (runs each configuration in its own subprocess).
# --------------------------------------------------------------------------


def _run_subprocess(cmd: list[str], label: str,
                    env: Optional[dict[str, str]] = None) -> Optional[dict]:
  """Runs a worker; returns the JSON it wrote, or None (stderr echoed)."""
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out_path = f.name
  try:
    print(f"[step_time] running {label}: {' '.join(cmd)}", file=sys.stderr,
          flush=True)
    proc = subprocess.run(cmd + ["--json_out", out_path], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      print(f"[step_time] {label} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}", file=sys.stderr)
      return None
    with open(out_path) as f:
      return json.load(f)
  finally:
    os.unlink(out_path)


def _fmt(x: Optional[float], spec: str = ".1f") -> str:
  return "-" if x is None else format(x, spec)


def print_table(rows: list[dict], ckpt: Optional[dict], ncores: int) -> None:
  """Prints the step-time table, the ratio and the checkpoint sizes."""
  jax_rows = [r for r in rows if r.get("framework") == "jax"]
  device = "CPU"
  if jax_rows and jax_rows[0].get("platform", "cpu") != "cpu":
    device = (f"{jax_rows[0]['platform'].upper()} "
              f"({jax_rows[0].get('device_kind', '?')})")
  print(f"\nT5 1.1-{SHAPE_NAME} shape, batch {SHAPE['batch_size']}, inputs "
        f"{SHAPE['inputs_length']}, prompt {SHAPE['prompt_length']}, targets "
        f"{SHAPE['targets_length']}, {DTYPE}, {device}, {ncores} cores\n")
  header = ("config", "trainable", "ms/step", "min..max", "steps/s",
            "1st step s", "peak RSS", "RSS steps", "XLA temp", "XLA args",
            "GFLOP/s", "load")
  widths = (13, 11, 9, 15, 8, 10, 10, 10, 9, 9, 8, 9)
  print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
  for r in rows:
    mem = r.get("xla_memory", {})
    rss = r.get("rss_mib", {})
    cells = (
        f"{r['framework']}/{r['config']}",
        f"{r['trainable_params']:,}",
        _fmt(r["median_ms"]),
        f"{r['min_ms']:.0f}..{r['max_ms']:.0f}",
        _fmt(r["steps_per_s"], ".3f"),
        _fmt(r.get("first_step_s"), ".1f"),
        _fmt(rss.get("peak_process"), ".0f") + "M",
        _fmt(rss.get("peak_during_steps"), ".0f") + "M",
        (_fmt(mem["temp_size_in_bytes"] / _MIB, ".0f") + "M"
         if "temp_size_in_bytes" in mem else "-"),
        (_fmt(mem["argument_size_in_bytes"] / _MIB, ".0f") + "M"
         if "argument_size_in_bytes" in mem else "-"),
        _fmt(r.get("achieved_gflop_s"), ".1f"),
        (f"{r['loadavg_start'][0]:.1f}/{r['loadavg_end'][0]:.1f}"
         if "loadavg_start" in r else "-"))
    print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
  print("\npeak RSS: whole worker process (imports + init + compile + steps);"
        " RSS steps: max RSS sampled during the timed steps;\nXLA temp/args:"
        " compiled.memory_analysis(); GFLOP/s: XLA cost_analysis flops / "
        "median step time;\nload: 1-minute load average at the worker's start"
        f"/end (other processes share the {ncores} cores when it exceeds 0"
        " before the start).")
  for r in rows:
    if "breakdown" in r:
      b = r["breakdown"]
      print(f"{r['framework']}/{r['config']} breakdown (median ms): forward "
            f"{b['forward_median_ms']:.0f}, forward+backward "
            f"{b['forward_backward_median_ms']:.0f}, full step "
            f"{r['median_ms']:.0f}")

  print_throughput(rows)

  by_key = {f"{r['framework']}/{r['config']}": r for r in rows}
  ours, peer = by_key.get("jax/prompt"), by_key.get("peft/prompt")
  if ours and peer:
    ratio = ours["steps_per_s"] / peer["steps_per_s"]
    # Issue 13's targets: 1.3x PEFT with dropout, PEFT's speed without.
    target = 1.3 if ours.get("dropout_rate") else 1.0
    verdict = "meets" if ratio >= target else "BELOW"
    print(f"\nratio ours/PEFT (prompt tuning, steps/s): {ratio:.2f}x "
          f"({verdict} the {target}x target at dropout "
          f"{ours.get('dropout_rate')}); peak RSS ours/PEFT "
          f"{ours['rss_mib']['peak_process'] / peer['rss_mib']['peak_process']:.2f}")
  full = by_key.get("jax/full")
  if ours and full:
    print(f"ratio prompt/full fine-tuning (ours, steps/s): "
          f"{ours['steps_per_s'] / full['steps_per_s']:.2f}x")
  if ckpt:
    print("\ncheckpoint sizes on disk (TrainCheckpointer, du -sb):")
    for c in ckpt["checkpoints"]:
      print(f"  {c['label']:<52} {c['saved_params']:>12,} params  "
            f"{c['bytes'] / _MIB:>9.2f} MiB ({c['bytes']:,} bytes)")


def print_throughput(rows: list[dict]) -> None:
  """Tokens/s and MFU of every row, below the main table."""
  if not rows:
    return
  print("\nthroughput: tokens/step = batch x (encoder positions incl. the "
        "prompt + decoder positions);\nMFU = XLA cost_analysis flops of the "
        "compiled step / median step time / peak TFLOP/s of the device;\n"
        "lowered: the same count before XLA's optimisations (cross-check).")
  header = ("config", "tokens/step", "tokens/s", "TFLOP/step", "lowered",
            "TFLOP/s", "peak", "MFU", "dev peak")
  widths = (13, 11, 10, 10, 10, 9, 7, 7, 9)
  print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
  for r in rows:
    peak_dev = r.get("device_peak_bytes")
    cells = (
        f"{r['framework']}/{r['config']}",
        f"{r['tokens_per_step']:,}",
        _fmt(r.get("tokens_per_s"), ",.0f"),
        _fmt(r["xla_flops"] / 1e12 if r.get("xla_flops") else None, ".3f"),
        _fmt(r["lowered_flops"] / 1e12 if r.get("lowered_flops") else None,
             ".3f"),
        _fmt(r["achieved_gflop_s"] / 1e3 if r.get("achieved_gflop_s")
             else None, ".2f"),
        _fmt(r.get("peak_tflops"), ".0f"),
        _fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, ".1f") +
        ("%" if r.get("mfu") is not None else ""),
        _fmt(peak_dev / _MIB if peak_dev else None, ".0f") +
        ("M" if peak_dev else ""))
    print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
  sources = sorted({r["peak_source"] for r in rows if r.get("peak_source")})
  if sources:
    print(f"peak from {', '.join(sources)}")
  if any(r.get("tensorflow_imported") for r in rows):
    print("WARNING: a worker imported TensorFlow (it may hold GPU memory).")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="prompt,full",
                      help=f"comma-separated JAX configs from {JAX_CONFIGS}.")
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per configuration (median reported).")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps first (the first one compiles).")
  parser.add_argument("--dropout_rate", type=float, default=0.1,
                      help="dropout in both models (training configs: 0.1).")
  parser.add_argument("--peer_python", default=None,
                      help="python of a venv with benchmarks/"
                      "requirements-peer.txt; runs the PEFT peer.")
  parser.add_argument("--no_checkpoint", action="store_true",
                      help="skip the checkpoint-size measurement.")
  parser.add_argument("--no_xla_analysis", action="store_true",
                      help="skip compiled.memory_analysis()/cost_analysis() "
                      "(saves one compilation per config).")
  parser.add_argument("--breakdown", action="store_true",
                      help="also time the jitted forward alone and forward +"
                      " backward (no optimizer) of each JAX config.")
  parser.add_argument("--peer_configs", default="1",
                      help="PEFT num_transformer_submodules values to run, "
                      "comma-separated: 1 (matched: one 100-row prompt) "
                      "and/or 2 (PEFT's SEQ_2_SEQ_LM default).")
  parser.add_argument("--shape", choices=tuple(MODEL_SHAPES),
                      default="small",
                      help="T5 1.1 model shape: small (d_model 512, 8+8 "
                      "layers) or base (d_model 768, 12 heads, d_ff 2048, "
                      "12+12 layers).")
  parser.add_argument("--remat_policy", default="none",
                      help="T5Config.remat_policy of our rows (none, full, "
                      "dots, dots_all); the peer keeps every activation.")
  parser.add_argument("--attention_layout", default=None,
                      help="T5Config.attention_layout of our rows: "
                      "head_major or t5x (bit-for-bit T5X); default the "
                      "library's (head_major).")
  parser.add_argument("--dropout_rng_impl", default=None,
                      help="dropout key implementation of our rows "
                      "(training.steps.DROPOUT_RNG_IMPLS: unsafe_rbg, rbg, "
                      "threefry2x32 = T5X's masks); default the library's "
                      "(unsafe_rbg).")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                      default="float32",
                      help="T5Config.dtype (activations and compute); "
                      "parameters stay float32, as in T5X.")
  parser.add_argument("--batch_size", type=int, default=None,
                      help=f"default {BATCH_DEFAULTS['batch_size']}.")
  parser.add_argument("--input_length", type=int, default=None,
                      help=f"default {BATCH_DEFAULTS['inputs_length']}.")
  parser.add_argument("--target_length", type=int, default=None,
                      help=f"default {BATCH_DEFAULTS['targets_length']}.")
  parser.add_argument("--prompt_length", type=int, default=None,
                      help=f"default {BATCH_DEFAULTS['prompt_length']}.")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="peak TFLOP/s of one device for MFU; default: "
                      "looked up from jax.devices()[0].device_kind and "
                      "--dtype in PEAK_TFLOPS (none on CPU: MFU '-').")
  parser.add_argument("--json_out", default=None,
                      help="write all results as JSON here.")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ("batch_size", "input_length", "target_length"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      parser.error(f"--{name} must be at least 1")
  if args.prompt_length is not None and args.prompt_length < 0:
    parser.error("--prompt_length must be at least 0")
  if args.peer_python and args.dtype != "float32":
    print(f"[step_time] ours in {args.dtype}, the PEFT peer in float32 (its "
          "only mode here): a ratio across precisions.", flush=True)
  configure(args.shape, args.dtype, args.batch_size, args.input_length,
            args.target_length, args.prompt_length)
  global REMAT, LAYOUT, RNG_IMPL
  REMAT, LAYOUT = args.remat_policy, args.attention_layout
  RNG_IMPL = args.dropout_rng_impl

  if args.worker:  # Internal: one configuration in this process.
    if args.worker == "checkpoint":
      result = run_checkpoint_worker()
    else:
      result = run_jax_worker(args.worker, args.steps, args.warmup,
                              args.dropout_rate, not args.no_xla_analysis,
                              args.breakdown, args.peak_tflops)
    with open(args.json_out, "w") as f:
      json.dump(result, f)
    return 0

  ncores = num_cores()
  rows = []
  common = ["--steps", str(args.steps), "--warmup", str(args.warmup),
            "--dropout_rate", str(args.dropout_rate)]
  # The resolved shape, for our workers (the peer takes SHAPE's keys).
  shape_flags = ["--shape", SHAPE_NAME, "--dtype", DTYPE,
                 "--remat_policy", REMAT,
                 *(["--attention_layout", LAYOUT] if LAYOUT else []),
                 *(["--dropout_rng_impl", RNG_IMPL] if RNG_IMPL else []),
                 "--batch_size", str(SHAPE["batch_size"]),
                 "--input_length", str(SHAPE["inputs_length"]),
                 "--target_length", str(SHAPE["targets_length"]),
                 "--prompt_length", str(SHAPE["prompt_length"])]
  for name in [c for c in args.configs.split(",") if c]:
    if name not in JAX_CONFIGS:
      parser.error(f"unknown config {name!r}; use {JAX_CONFIGS}")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name]
    cmd += common + shape_flags
    cmd += ["--no_xla_analysis"] if args.no_xla_analysis else []
    if args.peak_tflops is not None:
      cmd += ["--peak_tflops", str(args.peak_tflops)]
    cmd += ["--breakdown"] if args.breakdown else []
    res = _run_subprocess(cmd, f"jax/{name}")
    if res:
      rows.append(res)
  for submodules in ([c for c in args.peer_configs.split(",") if c]
                     if args.peer_python else []):
    cmd = [args.peer_python, os.path.join(_HERE, "peft_step.py"),
           "--threads", str(ncores), "--num_transformer_submodules",
           submodules] + common
    cmd += [f"--{k}={v}" for k, v in SHAPE.items()]
    res = _run_subprocess(cmd, f"peft/prompt (submodules={submodules})")
    if res:
      res.setdefault("tokens_per_step", tokens_per_step("prompt"))
      res.setdefault("tokens_per_s",
                     res["tokens_per_step"] * res["steps_per_s"])
      rows.append(res)
  ckpt = None
  if not args.no_checkpoint:
    ckpt = _run_subprocess([sys.executable, os.path.abspath(__file__),
                            "--worker", "checkpoint"] + shape_flags,
                           "checkpoints")
  print_table(rows, ckpt, ncores)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"shape": SHAPE, "shape_name": SHAPE_NAME, "dtype": DTYPE,
                 "cores": ncores, "rows": rows,
                 "checkpoints": ckpt}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
