r"""Restoring a pre-trained T5X checkpoint into the sharded prompt-tuning state.

    # Write random T5 1.1-base weights in the real T5X layout (once):
    python benchmarks/restore_state.py --model_dir=/tmp/t5_1_1_base_random
    # Build the state from it on meshes of 8 CPU devices, one process each:
    python benchmarks/restore_state.py --model_dir=/tmp/t5_1_1_base_random \
        --measure --meshes=1x1,2x4,1x8 [--hashing=on,off]

`--measure` runs `training.state.build_train_state` (prompt length 100,
Adafactor) in a fresh process per mesh and prints a markdown table: wall
time; peak RSS above the process's baseline (CPU "devices" live in host
memory, so it is split into what the devices hold at the end and the
transient host overhead above that); bytes per device against 1/model of
each split parameter; the reads: bytes read over the checkpoint's bytes
(1.00 = every byte read once) and the largest number of reads of one array;
and the cost of verifying the checkpoint's files. The reads hash each
array's files once (`integrity.file_checksum`, on a background thread while
the array is read) and check them against the checkpoint's manifest; the
table gives the seconds spent hashing and, with `--hashing=on,off`, each
mesh measured again with hashing off (the checksums taken unread from the
manifest: everything else the same), side by side.

`write_random_t5x_checkpoint` writes random weights of a T5 1.1 size in the
real T5X layout, to restore from: `checkpoint_<step>/checkpoint` (msgpack,
format version 3, `{version, optimizer: {target, state: {step}}}`, no
Adafactor slots) with every matrix as a zarr v2 folder (gzip) beside it,
named by the flattened path (`target.encoder.layers_0.mlp.wo.kernel`), and
the rank-1 layer-norm scales inline, as `checkpoints.t5x` writes them.

Chunking follows T5X: a chunk shape that evenly divides the array's shape
and holds at most 64 MiB, obtained by splitting the largest dimension first
(T5 1.1 base: the [32128, 768] float32 embedding, 94 MiB, is stored as two
[16064, 768] chunks; every other array is one chunk).

Parameters are generated and written one at a time, so the writer holds at
most one array (the 94 MiB embedding for base) in memory.
"""

import argparse
import math
import os
import pathlib
import re
import sys
from typing import Sequence

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # Run as a script from anywhere.
  sys.path.insert(0, str(_ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models import config as config_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

MAX_CHUNK_BYTES = 64 << 20  # T5X's desired chunk size.
_MODEL_CONFIGS = _ROOT / "configs" / "models"
_INT_BINDING = re.compile(r"^\s+(\w+)\s*=\s*(\d+)\s*$")


def t5_1_1_config(config_name: str = "t5_1_1_base") -> config_lib.T5Config:
  """The T5Config of a T5 1.1 size, with the dims of its gin file.

  Reads the integer bindings of `configs/models/<config_name>.gin` (e.g.
  `emb_dim = 768`); the architecture is T5 1.1's (`t5_1_1.gin`): vocabulary
  32128, gated GELU, untied logits.

  Args:
    config_name: 't5_1_1_tiny', 't5_1_1_small', 't5_1_1_base',
      't5_1_1_large', 't5_1_1_xl' or 't5_1_1_xxl'.

  Raises:
    ValueError: for a name that is not a T5 1.1 size file.
  """
  path = _MODEL_CONFIGS / f"{config_name}.gin"
  if not config_name.startswith("t5_1_1_") or not path.is_file():
    sizes = sorted(p.stem for p in _MODEL_CONFIGS.glob("t5_1_1_*.gin"))
    raise ValueError(f"Unknown T5 1.1 size {config_name!r}; one of {sizes}.")
  fields = {}
  for line in path.read_text().splitlines():
    if m := _INT_BINDING.match(line):
      fields[m.group(1)] = int(m.group(2))
  return config_lib.T5Config(vocab_size=32128,
                             mlp_activations=config_lib.GATED_GELU,
                             logits_via_embedding=False, **fields)


def t5x_chunk_shape(shape: Sequence[int], itemsize: int,
                    max_bytes: int = MAX_CHUNK_BYTES) -> list[int]:
  """A chunk shape dividing `shape` evenly with at most `max_bytes`.

  The largest dimension is divided by its smallest prime factor until the
  chunk fits (or every dimension is 1).

  Args:
    shape: the array's shape, e.g. [32128, 768].
    itemsize: bytes per element.
    max_bytes: the chunk limit.

  Returns:
    e.g. [16064, 768] for a float32 [32128, 768].
  """
  chunk = [int(d) for d in shape]
  target = max(1, max_bytes // itemsize)
  while math.prod(chunk) > target:
    splittable = [i for i, d in enumerate(chunk) if d > 1]
    if not splittable:
      break
    i = max(splittable, key=lambda j: chunk[j])
    factor = next(f for f in range(2, chunk[i] + 1) if chunk[i] % f == 0)
    chunk[i] //= factor
  return chunk


def _random_param(name: str, shape: tuple[int, ...],
                  rng: np.random.Generator) -> np.ndarray:
  """Random float32 weights: scales near 1, matrices ~ N(0, 1 / fan_in)."""
  if name.endswith("/scale"):
    return 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
  std = 1.0 / math.sqrt(shape[0]) if len(shape) > 1 else 1.0
  return (std * rng.standard_normal(shape, dtype=np.float32)).astype(
      np.float32, copy=False)


def write_random_t5x_checkpoint(model_dir: str | os.PathLike[str],
                                config_name: str = "t5_1_1_base",
                                seed: int = 0,
                                step: int = 0) -> pathlib.Path:
  """Writes random T5 1.1 weights as `model_dir/checkpoint_<step>/`.

  Args:
    model_dir: where the checkpoint folder goes (created if absent).
    config_name: the size; see `t5_1_1_config`.
    seed: random seed (each parameter draws from its own stream, so the
      values do not depend on the write order).
    step: the step recorded in `optimizer/state/step`.

  Returns:
    The `checkpoint_<step>` directory; `sharded.open_checkpoint` reads
    it, with the shapes of
    `param_tree.t5_param_shapes(t5_1_1_config(config_name))`.
  """
  config = t5_1_1_config(config_name)
  shapes = param_tree.flatten_params(param_tree.t5_param_shapes(config))
  streams = np.random.SeedSequence(seed).spawn(len(shapes))
  generated = ((name, _random_param(name, tuple(struct.shape),
                                    np.random.default_rng(stream)))
               for (name, struct), stream in zip(shapes.items(), streams))
  return t5x.save_t5x_checkpoint(model_dir, generated, step,
                                 chunks=t5x_chunk_shape)


def measure_one(checkpoint: str, config_name: str, mesh: str,
                prompt_length: int = 100,
                hashing: bool = True) -> dict[str, float]:
  """Builds the prompt-tuning state from `checkpoint` on `mesh` ('2x4') of
  this process's devices; returns the measurements (see the module doc).
  `hashing=False`: the files' checksums are taken from the checkpoint's
  manifest instead of being computed (the baseline)."""
  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS, in the child)
  import collections
  import time
  import flax.linen as nn
  import jax
  import memory as memory_lib  # benchmarks/memory.py (this directory)
  from prompt_tuning import partitioning
  from prompt_tuning.checkpoints import integrity
  from prompt_tuning.checkpoints import sharded
  from prompt_tuning.models.model import EncoderDecoderModel
  from prompt_tuning.prompts import freezing
  from prompt_tuning.prompts.models import PromptTransformer
  from prompt_tuning.training import optimizers
  from prompt_tuning.training import state as state_lib
  # pylint: enable=g-import-not-at-top
  data, model_ways = (int(x) for x in mesh.split("x"))
  model = EncoderDecoderModel(PromptTransformer(
      t5_1_1_config(config_name), prompt_length=prompt_length))
  boxed = state_lib.model_shapes(model, {"inputs": 1, "targets": 1})
  split = freezing.compute_split(boxed, model.trainable_patterns)
  mesh_obj = partitioning.create_mesh(
      mesh_shape=(data, model_ways), devices=jax.devices()[:data * model_ways])
  reads = collections.Counter()
  read_bytes = [0]
  real = sharded._read_slice  # pylint: disable=protected-access

  def counting(source, handle, index):
    out = real(source, handle, index)
    reads[source.name] += 1
    read_bytes[0] += out.size * 4  # As float32, like the checkpoint.
    return out

  sharded._read_slice = counting  # pylint: disable=protected-access
  hashed = {"seconds": 0.0, "bytes": 0}
  real_checksum = integrity.file_checksum
  manifest = integrity.read_manifest(checkpoint)
  if not hashing and manifest is None:
    raise ValueError(f"{checkpoint} has no manifest: hashing cannot be off.")

  def timed_checksum(path):
    if not hashing:
      return manifest[pathlib.Path(path).relative_to(checkpoint).as_posix()]
    begin = time.perf_counter()
    out = real_checksum(path)
    hashed["seconds"] += time.perf_counter() - begin
    hashed["bytes"] += os.path.getsize(path)
    return out

  integrity.file_checksum = timed_checksum
  baseline = memory_lib.current_rss_bytes()
  start = time.time()
  with memory_lib.RssSampler() as sampler:
    built = state_lib.build_train_state(model, mesh_obj,
                                        optimizers.adafactor(), checkpoint,
                                        split, boxed_params=boxed)
    jax.block_until_ready(built.state)
  seconds = time.time() - start
  per_device = collections.Counter()
  for leaf in jax.tree_util.tree_leaves((built.state.frozen,
                                         built.state.trainable)):
    for shard in leaf.addressable_shards:
      per_device[shard.device.id] += shard.data.nbytes
  specs = param_tree.flatten_params(partitioning.mesh_specs(boxed, mesh_obj))
  shapes = param_tree.flatten_params(nn.unbox(boxed))
  expected = 0
  for name, spec in specs.items():
    ways = math.prod(mesh_obj.shape[a] for a in
                     jax.tree_util.tree_leaves(tuple(spec)))
    expected += 4 * math.prod(shapes[name].shape) // ways
  one_copy = sum(4 * math.prod(v.shape) for v in shapes.values())
  held = sum(per_device.values())
  peak = sampler.peak - baseline
  checkpoint_bytes = sum(4 * math.prod(v.shape) for n, v in shapes.items()
                         if n in reads)
  return {"mesh": mesh, "seconds": seconds, "one_copy_gib": one_copy / 2**30,
          "peak_above_baseline_gib": peak / 2**30,
          "held_by_devices_gib": held / 2**30,
          "transient_host_gib": (peak - held) / 2**30,
          "per_device_gib": max(per_device.values()) / 2**30,
          "expected_per_device_gib": expected / 2**30,
          "bytes_read_ratio": read_bytes[0] / max(checkpoint_bytes, 1),
          "max_reads_per_array": max(reads.values()),
          "arrays": len(reads),
          "hashing": "on" if hashing else "off",
          "checksum_seconds": hashed["seconds"],
          "hashed_gib": hashed["bytes"] / 2**30}


def _measure(model_dir: str, config_name: str, meshes: Sequence[str],
             hashing: Sequence[str] = ("on",)) -> str:
  """Runs `measure_one` per mesh (and hashing 'on'/'off') in a fresh
  8-device process; a table."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  checkpoint = str(t5x.find_checkpoint_dir(model_dir))
  rows = []
  load_before = os.getloadavg()[0]
  for mesh in meshes:
    for mode in hashing:
      env = dict(os.environ, JAX_PLATFORMS="cpu",
                 XLA_FLAGS="--xla_force_host_platform_device_count=8",
                 PYTHONPATH=str(_ROOT))
      out = subprocess.run(
          [sys.executable, __file__, "--model_dir", model_dir,
           "--config_name", config_name, "--_measure_one", mesh,
           "--hashing", mode], env=env, check=True, capture_output=True,
          text=True).stdout
      rows.append(json.loads(out.strip().splitlines()[-1]))
  load = os.getloadavg()
  lines = [f"Build of the prompt-tuning state from {checkpoint} "
           f"({config_name}, prompt 100), 8 CPU devices; load average "
           f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1-minute "
           f"{load_before:.2f} before), {os.cpu_count()} cores.", "",
           "| mesh (data x model) | hashing | wall s | peak RSS above "
           "baseline GiB | "
           "held by devices GiB | transient host GiB | per device GiB "
           "(expected) | bytes read / checkpoint | max reads of one array | "
           "hashing s (GiB hashed) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['mesh']} | {r['hashing']} | {r['seconds']:.1f} | "
        f"{r['peak_above_baseline_gib']:.2f} | {r['held_by_devices_gib']:.2f}"
        f" | {r['transient_host_gib']:.2f} | {r['per_device_gib']:.3f} "
        f"({r['expected_per_device_gib']:.3f}) | {r['bytes_read_ratio']:.2f} "
        f"| {r['max_reads_per_array']} | {r['checksum_seconds']:.2f} "
        f"({r['hashed_gib']:.2f}) |")
  lines.append("")
  lines.append(f"One copy of the parameters: {rows[0]['one_copy_gib']:.2f} "
               "GiB (float32).")
  for mesh in dict.fromkeys(meshes):  # Medians of repeated meshes.
    wall = {mode: float(np.median([r["seconds"] for r in rows
                                   if r["mesh"] == mesh and
                                   r["hashing"] == mode]))
            for mode in ("on", "off")
            if any(r["mesh"] == mesh and r["hashing"] == mode for r in rows)}
    if len(wall) == 2:
      lines.append(f"Mesh {mesh}: checksum verification adds "
                   f"{100 * (wall['on'] / wall['off'] - 1):+.1f}% to the "
                   f"build (median {wall['on']:.1f} s vs {wall['off']:.1f} "
                   "s).")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model_dir", required=True,
                      help="where checkpoint_<step>/ is written")
  parser.add_argument("--config_name", default="t5_1_1_base")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--step", type=int, default=0)
  parser.add_argument("--measure", action="store_true",
                      help="build the state from the checkpoint; a table")
  parser.add_argument("--meshes", default="1x1,2x4,1x8")
  parser.add_argument("--hashing", default="on",
                      help="'on', 'off' or 'on,off': measure each mesh with "
                      "the files' checksums computed, taken from the "
                      "manifest unread, or both")
  parser.add_argument("--_measure_one", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._measure_one:  # pylint: disable=protected-access
    import json  # pylint: disable=g-import-not-at-top
    print(json.dumps(measure_one(
        str(t5x.find_checkpoint_dir(args.model_dir)), args.config_name,
        args._measure_one,  # pylint: disable=protected-access
        hashing=args.hashing == "on")))
    return 0
  if args.measure:
    print(_measure(args.model_dir, args.config_name, args.meshes.split(","),
                   args.hashing.split(",")))
    return 0
  path = write_random_t5x_checkpoint(args.model_dir, args.config_name,
                                     args.seed, args.step)
  size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
  print(f"Wrote {path} ({size / 2**20:.1f} MiB).")
  return 0


if __name__ == "__main__":
  sys.exit(main())
