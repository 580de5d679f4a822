r"""Serving load: mixed-task batching against one request per pass and one
task per batch, over HTTP on 127.0.0.1.

    python benchmarks/serve_load.py [--prompt=TASK=SOURCE ...] [--checkpoint=PATH] \
        [--clients=1,8,32] [--requests=256] [--seconds=60] \
        [--configs=mixed,one_per_pass,per_task]

The frozen mini T5 (`models/t5_1_1_mini.gin`, the recipe's shipped
checkpoint under `../shared`) serves one prompt per recipe task (SST-2,
length, negation: `TASKS`). Give the prompts the project trained with
`--prompt=TASK=SOURCE` (a `.npy` file or a run's MODEL_DIR); without them,
seeded random prompts of `--prompt_length` are served, which measures
throughput only (the accuracy column is then meaningless).

Each configuration is a `serving_http.app.PromptServer` on its own port of
127.0.0.1, on a thread of this process:

  mixed          --batch_size rows, tasks share batches (the server's default);
  one_per_pass   batch size 1: one request per forward pass        (a);
  per_task       --batch_size rows, one task per batch              (b).

The load generator is bounded and runs in a process of its own (as real
clients would: its Python does not share the server's interpreter lock; on
this machine it shares the CPU cores): at each client count, `clients`
asyncio workers (httpx, one connection each) send the validation sentences
of the tasks round-robin, each worker its next request as soon as the last
is answered, until `--requests` are answered or `--seconds` pass. Printed per
(configuration, clients): answered requests, throughput (requests/s), p50
and p99 latency (ms), the mean batch size (from the server's metrics), the
CPU time per answered request of the server process (all its threads, XLA's
included) and of the client process, and the 1-minute load average before
and after. Then each task's accuracy of the
served answers next to the offline evaluation of the same examples
(`analysis.serving.serve_mixed`), and the ratios the issue asks for.
"""

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import threading
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TASKS = ("taskless_glue_sst2_v200", "taskless_sst2_length_v001",
         "taskless_sst2_negation_v001")
CONFIGS = ("mixed", "one_per_pass", "per_task")


def _args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--prompt", action="append", default=[],
                 help="TASK=SOURCE (repeatable); default random prompts for "
                 "TASKS.")
  p.add_argument("--prompt_length", type=int, default=20)
  p.add_argument("--checkpoint", default=None,
                 help="The frozen model the prompts were trained on (default "
                 "the shipped mini T5; the main job's is what "
                 "`python -m prompt_tuning.main_job --build_only` prints).")
  p.add_argument("--clients", default="1,8,32")
  p.add_argument("--requests", type=int, default=256,
                 help="Answered requests per (configuration, clients).")
  p.add_argument("--seconds", type=float, default=60.0,
                 help="Time cap per (configuration, clients).")
  p.add_argument("--configs", default=",".join(CONFIGS))
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--max_wait_ms", type=float, default=5.0)
  p.add_argument("--batch_buckets", action="store_true",
                 help="Pad batches to doubling sizes (the server's flag).")
  p.add_argument("--inputs_length", type=int, default=64)
  p.add_argument("--targets_length", type=int, default=8)
  p.add_argument("--examples", type=int, default=64,
                 help="Validation examples per task (sent in turn).")
  args = p.parse_args(argv)
  unknown = set(args.configs.split(",")) - set(CONFIGS)
  if unknown:
    p.error(f"unknown --configs {sorted(unknown)}; choose from {CONFIGS}.")
  return args


def _fields(example: dict) -> dict:
  return {k: (v.decode() if isinstance(v, bytes) else int(v))
          for k, v in example.items()}


async def _load(url: str, bodies: list[dict], clients: int, limit: int,
                seconds: float) -> tuple[list[float], int, float]:
  """(latencies in s of the 200 answers, other answers, wall seconds)."""
  import httpx  # pylint: disable=g-import-not-at-top
  latencies: list[float] = []
  failed = 0
  counter = iter(range(limit))
  stop = time.perf_counter() + seconds

  async def worker():
    nonlocal failed
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
      for i in counter:
        if time.perf_counter() > stop:
          return
        start = time.perf_counter()
        answer = await client.post("/v1/predict",
                                   json=bodies[i % len(bodies)])
        if answer.status_code == 200:
          latencies.append(time.perf_counter() - start)
        else:
          failed += 1

  start = time.perf_counter()
  await asyncio.gather(*[worker() for _ in range(clients)])
  return latencies, failed, time.perf_counter() - start


def _load_in_process(url: str, bodies: list[dict], clients: int, limit: int,
                     seconds: float) -> tuple[list[float], int, float, float]:
  """`_load` in the client process, and the CPU seconds it used there."""
  cpu = time.process_time()
  latencies, failed, wall = asyncio.run(_load(url, bodies, clients, limit,
                                              seconds))
  return latencies, failed, wall, time.process_time() - cpu


def _percentile(values: list[float], q: float) -> float:
  values = sorted(values)
  return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _serve(server) -> tuple[Any, str]:
  # pylint: disable-next=g-import-not-at-top
  from prompt_tuning.serving_http import app as app_lib
  sock = app_lib.bound_socket("127.0.0.1", 0)
  uv = app_lib.make_server(server)
  threading.Thread(target=uv.run, kwargs={"sockets": [sock]},
                   daemon=True).start()
  while not uv.started:
    time.sleep(0.02)
  return uv, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _batches(server) -> tuple[float, float]:
  """(forward passes, requests in them) so far, from the metrics."""
  hist = server.metrics.batch_size
  samples = {s.name: s.value for m in hist.collect() for s in m.samples}
  return samples["serve_batch_size_count"], samples["serve_batch_size_sum"]


def main(argv: Sequence[str]) -> int:
  args = _args(argv)
  # pylint: disable=g-import-not-at-top  (quiet TensorFlow first)
  from prompt_tuning import cli
  cli.quiet_startup()
  import jax
  import numpy as np
  from prompt_tuning import main_job
  from prompt_tuning import partitioning
  from prompt_tuning.analysis import bank
  from prompt_tuning.analysis import prompt_io
  from prompt_tuning.analysis import serving
  from prompt_tuning.analysis import task_examples as task_lib
  from prompt_tuning.data import locations
  from prompt_tuning.models.model import EncoderDecoderModel
  from prompt_tuning.prompts.models import PromptTransformer
  from prompt_tuning.recipes import frozen_model
  from prompt_tuning.serving_http import app as app_lib
  from prompt_tuning.serving_http import engine as engine_lib
  from prompt_tuning.training import data
  # pylint: enable=g-import-not-at-top
  for env, path in (("PROMPT_TUNING_GLUE_DIR", ("data", "glue")),
                    ("PROMPT_TUNING_VOCAB", locations.VOCAB_IN_SHARED)):
    os.environ.setdefault(env, str(locations.shared_path(*path)))
  checkpoint = args.checkpoint or sorted(locations.shared_path(
      *frozen_model.SHIPPED_DIR.split("/")).glob("checkpoint_*"))[-1]
  config = main_job.model_config(frozen_model.MODEL_GIN)
  rng = np.random.RandomState(0)
  given = dict(spec.split("=", 1) for spec in args.prompt)
  prompts = {t: (prompt_io.resolve_prompt(given[t]) if t in given else
                 rng.uniform(-0.5, 0.5, (args.prompt_length, config.emb_dim)
                             ).astype(np.float32))
             for t in (list(given) or TASKS)}
  length = next(iter(prompts.values())).shape[0]
  model = EncoderDecoderModel(PromptTransformer(config, prompt_length=length))
  base = bank.load_base_params(model, str(checkpoint))
  lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
  mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.devices()[:1])
  tasks = list(prompts)
  raw = {t: [_fields(e) for e in data.get_task(t).source.get_dataset(
      "validation", shuffle=False).take(args.examples).as_numpy_iterator()]
         for t in tasks}
  bodies = [{"task": t, "fields": raw[t][i], "truncate": True}
            for i in range(args.examples) for t in tasks if i < len(raw[t])]
  print(f"# Serving load: frozen mini T5 ({checkpoint}), tasks {tasks}, "
        f"{'given' if given else 'RANDOM'} prompts [{length}, "
        f"{config.emb_dim}], lengths {lengths}, batch {args.batch_size}, "
        f"max_wait {args.max_wait_ms} ms, batch buckets "
        f"{args.batch_buckets}, {jax.devices()[0].platform}.")
  print("\n| config | clients | answered | req/s | p50 ms | p99 ms | "
        "mean batch | CPU ms/request server / clients | load before/after |"
        "\n|---|---|---|---|---|---|---|---|---|")
  client = multiprocessing.get_context("spawn").Pool(1)
  engines: dict[int, Any] = {}
  results: dict[tuple[str, int], float] = {}
  served_answers: dict[str, list] = {}
  for name in args.configs.split(","):
    size = 1 if name == "one_per_pass" else args.batch_size
    if size not in engines:
      engines[size] = engine_lib.Engine(model, base, lengths, size, mesh,
                                        batch_buckets=args.batch_buckets)
    server = app_lib.PromptServer(
        engines[size], prompts, max_queue=4 * max(map(int, args.clients.split(
            ","))) + 64, max_wait_ms=args.max_wait_ms,
        batching="per_task" if name == "per_task" else "mixed")
    uv, url = _serve(server)
    if name == "mixed":  # Answers for the accuracy check, one each.
      answers = asyncio.run(_answers(url, bodies))
      for body, answer in zip(bodies, answers):
        served_answers.setdefault(body["task"], []).append(answer)
    for clients in map(int, args.clients.split(",")):
      load = os.getloadavg()[0]
      passes, rows = _batches(server)
      server_cpu = time.process_time()
      latencies, failed, wall, client_cpu = client.apply(_load_in_process, (
          url, bodies, clients, args.requests, args.seconds))
      server_cpu = time.process_time() - server_cpu
      passes2, rows2 = _batches(server)
      rate = len(latencies) / wall
      results[(name, clients)] = rate
      print(f"| {name} | {clients} | {len(latencies)}"
            f"{f' (+{failed} failed)' if failed else ''} | {rate:.1f} | "
            f"{1000 * statistics.median(latencies):.0f} | "
            f"{1000 * _percentile(latencies, 0.99):.0f} | "
            f"{(rows2 - rows) / max(passes2 - passes, 1):.1f} | "
            f"{1000 * server_cpu / len(latencies):.1f} / "
            f"{1000 * client_cpu / len(latencies):.1f} | "
            f"{load:.2f}/{os.getloadavg()[0]:.2f} |", flush=True)
    uv.should_exit = True
  client.close()
  _model_alone(engine_lib, model, base, lengths, mesh, prompts, bodies,
               server.codecs, args)
  if served_answers:
    offline = serving.serve_mixed(model, base, prompts, lengths,
                                  args.batch_size, "validation",
                                  args.examples, mesh)
    print("\n| task | served accuracy | offline accuracy | answers equal |"
          "\n|---|---|---|---|")
    for t in tasks:
      targets = [r["target"] for r in offline[t]]
      got = [a["postprocessed"] for a in served_answers[t]]
      served_acc = task_lib.predict_metrics(data.get_task(t), targets, got)
      offline_acc = serving.task_metrics({t: offline[t]})[t]
      same = got == [r["postprocessed"] for r in offline[t]]
      print(f"| {t} | {served_acc.get('accuracy', float('nan')):.1f} | "
            f"{offline_acc.get('accuracy', float('nan')):.1f} | {same} |")
  top = max(map(int, args.clients.split(",")))
  for other in ("one_per_pass", "per_task"):
    if ("mixed", top) in results and (other, top) in results:
      print(f"At {top} clients, mixed / {other}: "
            f"{results[('mixed', top)] / results[(other, top)]:.2f}x")
  return 0


def _model_alone(engine_lib, model, base, lengths, mesh, prompts, bodies,
                 codecs, args) -> None:
  """Greedy decoding of every body's rows without HTTP: one row per pass
  against `--batch_size` rows of mixed tasks per pass, ms per row (median of
  5 sweeps); the ceiling batching could reach if requests cost nothing
  else."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = [codecs[b["task"]].encode_fields(b["fields"], lengths["inputs"],
                                          True).tokens for b in bodies]
  load = os.getloadavg()[0]
  per_row = {}
  for size in (1, args.batch_size):
    engine = engine_lib.Engine(model, base, lengths, size, mesh,
                               batch_buckets=args.batch_buckets)
    engine.set_prompts(prompts)
    slots = [engine.bank.slots[b["task"]] for b in bodies]
    times = []
    for _ in range(6):  # The first sweep compiles every shape.
      start = time.perf_counter()
      for i in range(0, len(rows), size):
        engine.decode(engine.bank, rows[i:i + size], slots[i:i + size])
      times.append(time.perf_counter() - start)
    per_row[size] = 1000 * statistics.median(times[1:]) / len(rows)
  print(f"\nModel alone (no HTTP), {len(rows)} rows, greedy: "
        f"{per_row[1]:.2f} ms/row one per pass, "
        f"{per_row[args.batch_size]:.2f} ms/row in mixed passes of "
        f"{args.batch_size}: {per_row[1] / per_row[args.batch_size]:.2f}x "
        f"(load {load:.2f}/{os.getloadavg()[0]:.2f}).")


async def _answers(url: str, bodies: list[dict]) -> list[dict]:
  import httpx  # pylint: disable=g-import-not-at-top
  async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
    out = []
    for start in range(0, len(bodies), 32):
      chunk = await asyncio.gather(*[client.post("/v1/predict", json=b)
                                     for b in bodies[start:start + 32]])
      out.extend(a.json() for a in chunk)
    return out


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
