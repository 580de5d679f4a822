"""The HTTP server (`python -m prompt_tuning.serve`) over a real socket.

One server (a random tiny T5, RTE and CB prompts from `.npy` files, bank
capacity 4) runs on a thread on 127.0.0.1 for the module; real HTTP clients
(httpx) check that mixed, concurrent requests answer exactly what serving
each task alone offline answers, the errors, overload, deadlines, prompts
added and removed at run time, and the metrics. The SIGTERM drain runs the
command line as a subprocess (the T5X-written tiny checkpoint).
"""

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time

import flax.linen as nn
import httpx
import jax
import numpy as np
import pytest

from helpers import REPO_ROOT, T5_VOCAB_SIZE, T5X_TINY, shared_path, tiny_model
from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import prompt_io
from prompt_tuning.analysis import task_examples as task_lib
from prompt_tuning.data import locations
from prompt_tuning.serving_http import app as app_lib
from prompt_tuning.serving_http import codec as codec_lib
from prompt_tuning.serving_http import engine as engine_lib
from prompt_tuning.training import data
from prompt_tuning.training import inference
from prompt_tuning.training import partitioned

RTE = "taskless_super_glue_rte_v102"
CB = "taskless_super_glue_cb_v102"
COPA = "taskless_super_glue_copa_v102"
LENGTHS = {"inputs": 48, "targets": 8}
BATCH = 8
NUM = 6  # Validation examples per task.
TIMEOUT = httpx.Timeout(120.0)


def _env() -> dict[str, str]:
  return {"PROMPT_TUNING_SUPER_GLUE_DIR": str(shared_path("data",
                                                          "super_glue")),
          "PROMPT_TUNING_VOCAB": str(shared_path(*locations.VOCAB_IN_SHARED))}


def _fields(example) -> dict:
  """A raw source example as JSON request fields."""
  return {k: (v.decode() if isinstance(v, bytes) else int(v))
          for k, v in example.items()}


def _raw_examples(task_name: str, n: int) -> list[dict]:
  ds = data.get_task(task_name).source.get_dataset("validation",
                                                   shuffle=False)
  return [_fields(e) for e in ds.take(n).as_numpy_iterator()]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """The running server and what the offline reference needs."""
  with pytest.MonkeyPatch.context() as mp:
    for key, value in _env().items():
      mp.setenv(key, value)
    model = tiny_model("prompt", prompt_length=3, vocab_size=T5_VOCAB_SIZE,
                       num_encoder_layers=1, num_decoder_layers=1)
    base = jax.device_get(jax.jit(
        lambda rng: nn.unbox(model.init(rng, 1, 1))["params"])(
            jax.random.PRNGKey(0)))
    rng = np.random.RandomState(3)
    folder = tmp_path_factory.mktemp("prompts")
    paths = {}
    for task in (RTE, CB, COPA):
      paths[task] = prompt_io.save_prompt(
          folder / f"{task}.npy", rng.uniform(-2, 2, (3, 8)))
    prompts = {t: prompt_io.resolve_prompt(paths[t]) for t in (RTE, CB)}
    mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                    devices=jax.devices()[:1])
    engine = engine_lib.Engine(model, base, LENGTHS, BATCH, mesh,
                               min_capacity=4)
    server = app_lib.PromptServer(engine, prompts, max_queue=64,
                                  max_wait_ms=20)
    sock = app_lib.bound_socket()
    uv = app_lib.make_server(server)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]},
                              daemon=True)
    thread.start()
    while not uv.started:
      time.sleep(0.02)
    predict = partitioned.compile_model_fn(
        model.predict_batch, mesh,
        partitioning.param_shardings(model.init_shapes()["params"], mesh))
    yield {"url": f"http://127.0.0.1:{sock.getsockname()[1]}",
           "server": server, "model": model, "base": base, "paths": paths,
           "predict": predict}
    uv.should_exit = True
    thread.join(timeout=30)


def _offline(served, task_name: str, n: int = NUM) -> list[dict]:
  """`prompt_tuning.infer`'s records for the task served alone."""
  prompt = prompt_io.resolve_prompt(served["paths"][task_name])
  return list(itertools.islice(inference.predict_task(
      data.get_task(task_name), served["predict"],
      bank.with_prompt(served["base"], prompt), LENGTHS, BATCH,
      "validation"), n))


async def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
  async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
    return await asyncio.gather(*[client.post("/v1/predict", json=b)
                                  for b in bodies])


def _metric(text: str, name: str) -> float:
  found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
  assert found, name
  return float(found.group(1))


def test_mixed_concurrent_requests_equal_each_task_alone(served):
  raw = {t: _raw_examples(t, NUM) for t in (RTE, CB)}
  bodies = [{"task": t, "fields": raw[t][i], "truncate": True}
            for i in range(NUM) for t in (RTE, CB)]
  metrics = httpx.get(served["url"] + "/metrics").text
  batches_before = _metric(metrics, "serve_batch_size_count")
  answers = asyncio.run(_post_all(served["url"], bodies))
  assert [r.status_code for r in answers] == [200] * len(bodies)
  by_task = {t: [a.json() for a, b in zip(answers, bodies) if b["task"] == t]
             for t in (RTE, CB)}
  for task_name in (RTE, CB):
    alone = _offline(served, task_name)
    assert [(a["prediction"], a["postprocessed"]) for a in by_task[
        task_name]] == [(r["prediction"], r["postprocessed"]) for r in alone]
    # The formatted text as "inputs" answers the same.
    text = alone[0]["inputs"]
    if len(data.get_task(task_name).output_features["inputs"].vocabulary
           .encode(text)) < LENGTHS["inputs"]:
      again = httpx.post(served["url"] + "/v1/predict", timeout=TIMEOUT,
                         json={"task": task_name, "inputs": text}).json()
      assert again["prediction"] == alone[0]["prediction"]
  # Tasks shared forward passes: fewer batches than requests.
  metrics = httpx.get(served["url"] + "/metrics").text
  assert _metric(metrics, "serve_batch_size_count") - batches_before < len(
      bodies)


def test_one_task_per_batch_answers_the_same(served):
  bodies = [{"task": (RTE, CB)[i % 2], "inputs": f"the sentence {i}"}
            for i in range(8)]
  mixed = asyncio.run(_post_all(served["url"], bodies))
  batcher = served["server"].batcher
  batcher.batching = "per_task"
  try:
    per_task = asyncio.run(_post_all(served["url"], bodies))
  finally:
    batcher.batching = "mixed"
  assert [a.json() for a in per_task] == [a.json() for a in mixed]


def test_rank_scores_every_label_and_beam_decodes(served):
  fields = _raw_examples(CB, 1)[0]
  answer = httpx.post(served["url"] + "/v1/predict", timeout=TIMEOUT, json={
      "task": CB, "fields": fields, "mode": "rank", "truncate": True}).json()
  scores = answer["scores"]
  assert list(scores) == ["entailment", "contradiction", "neutral"]
  assert answer["prediction"] == max(scores, key=scores.get)
  assert answer["postprocessed"] == list(scores).index(answer["prediction"])
  # The scores of CB's rank variant, one row per label, CB's prompt alone.
  rows = task_lib.load_task_examples(f"{CB}_rank", LENGTHS, "validation", 3)
  alone = jax.jit(served["model"].score_batch)(bank.with_prompt(
      served["base"], prompt_io.resolve_prompt(served["paths"][CB])),
                                               rows.features)
  np.testing.assert_allclose(list(scores.values()), alone, rtol=1e-5)
  beam = httpx.post(served["url"] + "/v1/predict", timeout=TIMEOUT, json={
      "task": CB, "fields": fields, "num_beams": 2, "truncate": True})
  assert beam.status_code == 200 and beam.json()["mode"] == "beam"
  assert isinstance(beam.json()["prediction"], str)


@pytest.mark.parametrize("body,status,says", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"task": "taskless_super_glue_nope", "inputs": "x"}, 404,
     "Unknown task 'taskless_super_glue_nope'"),
    ({"task": RTE, "fields": {"premise": "A cat."}}, 400,
     "missing field(s) ['hypothesis']"),
    ({"task": RTE, "fields": {"premise": "A", "hypothesis": "B", "x": "C"}},
     400, "unknown field(s) ['x']"),
    ({"task": RTE, "fields": {"premise": 3, "hypothesis": "B"}}, 400,
     "field 'premise'"),
    ({"task": RTE, "inputs": "a", "fields": {}}, 400, "exactly one"),
    ({"task": RTE}, 400, "exactly one"),
    ({"inputs": "a"}, 400, "\"task\""),
    ({"task": RTE, "inputs": "a " * 60}, 413,
     "longer than the feature length"),
    ({"task": RTE, "fields": {"premise": "a " * 60, "hypothesis": "b"}}, 413,
     "\"truncate\": true"),
    ({"task": RTE, "inputs": "a", "mode": "sample"}, 400, "\"mode\""),
    ({"task": RTE, "inputs": "a", "num_beams": 99}, 400, "\"num_beams\""),
    ({"task": RTE, "inputs": "a", "timeout_ms": -1}, 400, "\"timeout_ms\""),
    ({"task": RTE, "inputs": "a", "temperature": 1}, 400, "['temperature']"),
])
def test_bad_requests_answer_4xx_naming_the_problem(served, body, status,
                                                    says):
  kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
  answer = httpx.post(served["url"] + "/v1/predict", timeout=TIMEOUT,
                      **kwargs)
  assert answer.status_code == status, answer.text
  assert says in answer.json()["error"]


def test_deadline_passed_answers_504(served):
  # A lone request waits up to max_wait_ms (20) for company: 1 ms passes.
  answer = httpx.post(served["url"] + "/v1/predict", timeout=TIMEOUT, json={
      "task": RTE, "inputs": "a b c", "timeout_ms": 1})
  assert answer.status_code == 504
  assert "deadline of 1 ms" in answer.json()["error"]


def test_full_queue_answers_503_with_retry_after(served):
  batcher = served["server"].batcher
  saved = batcher.max_queue, batcher.max_wait_s
  batcher.max_queue, batcher.max_wait_s = 2, 0.5
  try:
    answers = asyncio.run(_post_all(served["url"], [
        {"task": (RTE, CB)[i % 2], "inputs": f"sentence {i}"}
        for i in range(12)]))
  finally:
    batcher.max_queue, batcher.max_wait_s = saved
  statuses = [a.status_code for a in answers]
  assert set(statuses) == {200, 503}, statuses  # Each answered, once.
  refused = next(a for a in answers if a.status_code == 503)
  assert refused.headers["Retry-After"] == "1"
  assert "queue is full" in refused.json()["error"]


def test_prompts_added_and_removed_at_run_time(served):
  url = served["url"]
  before = served["server"].engine.compilations
  added = httpx.put(f"{url}/v1/prompts/{COPA}", timeout=TIMEOUT,
                    json={"source": str(served["paths"][COPA])})
  assert added.status_code == 201, added.text
  assert added.json()["bank"] == {"prompts": 3, "capacity": 4}
  assert served["server"].engine.compilations == before  # A free slot.
  names = [t["name"] for t in httpx.get(f"{url}/v1/tasks").json()["tasks"]]
  assert names == [RTE, CB, COPA]
  raw = _raw_examples(COPA, 2)
  answers = asyncio.run(_post_all(url, [
      {"task": COPA, "fields": f, "truncate": True} for f in raw]))
  assert [a.json()["prediction"] for a in answers] == [
      r["prediction"] for r in _offline(served, COPA, 2)]

  wide = httpx.put(f"{url}/v1/prompts/{COPA}", json={
      "prompt": np.zeros((3, 5)).tolist()})
  assert wide.status_code == 422 and "embedding width 5" in wide.json()[
      "error"]
  long = httpx.put(f"{url}/v1/prompts/{COPA}", json={
      "prompt": np.zeros((4, 8)).tolist()})
  assert long.status_code == 422 and "4 positions" in long.json()["error"]
  unknown = httpx.put(f"{url}/v1/prompts/taskless_nope", json={
      "prompt": np.zeros((3, 8)).tolist()})
  assert unknown.status_code == 404 and "taskless_nope" in unknown.json()[
      "error"]

  removed = httpx.delete(f"{url}/v1/prompts/{COPA}")
  assert removed.status_code == 200
  gone = httpx.post(f"{url}/v1/predict", json={"task": COPA, "inputs": "a"})
  assert gone.status_code == 404 and "PUT /v1/prompts" in gone.json()["error"]
  assert httpx.delete(f"{url}/v1/prompts/{COPA}").status_code == 404


def test_a_prompt_that_does_not_fit_is_refused_at_load(served):
  engine = engine_lib.Engine(served["model"], served["base"], LENGTHS, BATCH,
                             served["server"].engine.mesh)
  with pytest.raises(prompt_io.PromptShapeError, match="embedding width 5"):
    app_lib.PromptServer(engine, {RTE: np.zeros((3, 5), np.float32)})
  with pytest.raises(prompt_io.PromptShapeError, match="one length"):
    app_lib.PromptServer(engine, {RTE: np.zeros((3, 8), np.float32),
                                  CB: np.zeros((4, 8), np.float32)})
  assert engine.compilations == 0 and engine.bank is None


def test_batch_buckets_double_up_to_the_batch_size(served):
  mesh = served["server"].engine.mesh
  sizes = lambda batch, **kw: engine_lib.Engine(
      served["model"], served["base"], LENGTHS, batch, mesh, **kw).batch_sizes
  assert sizes(8) == (8,)
  assert sizes(8, batch_buckets=True) == (1, 2, 4, 8)
  assert sizes(24, batch_buckets=True) == (3, 6, 12, 24)
  assert engine_lib.capacity_for(3) == 4 and engine_lib.capacity_for(1) == 1


def test_health_and_metrics(served):
  health = httpx.get(served["url"] + "/healthz")
  assert health.status_code == 200 and health.json()["status"] == "ok"
  text = httpx.get(served["url"] + "/metrics").text
  assert _metric(text, 'serve_requests_total{status="200"}') >= 1
  assert _metric(text, "serve_compilations_total") >= 2  # Greedy, rank.
  assert _metric(text, "serve_queue_depth") == 0
  for name in ("serve_batch_size_bucket", "serve_request_latency_seconds_"
               "bucket", 'serve_requests_total{status="400"}'):
    assert name in text


@pytest.mark.slow
def test_sigterm_drains_accepted_requests_then_exits(tmp_path):
  rng = np.random.RandomState(0)
  prompts = {t: prompt_io.save_prompt(tmp_path / f"{t}.npy",
                                      rng.uniform(-1, 1, (3, 4)))
             for t in (RTE, CB)}
  env = {**os.environ, **_env()}
  proc = subprocess.Popen([
      sys.executable, "-m", "prompt_tuning.serve",
      "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=prompts/prompt.gin",
      f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path(*T5X_TINY)}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
      *[f"--prompt={t}={p}" for t, p in prompts.items()],
      "--port=0", "--batch_size=16", "--max_wait_ms=3000"],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  try:
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert found, line + proc.stderr.read()
    url = f"http://127.0.0.1:{found.group(1)}"
    answers = []

    def ask(i):
      answers.append(httpx.post(url + "/v1/predict", timeout=TIMEOUT, json={
          "task": (RTE, CB)[i % 2], "inputs": f"premise {i}"}))
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
      t.start()
    # Accepted: all six wait for company (max_wait_ms 3000, batch 16).
    deadline = time.time() + 30
    while httpx.get(url + "/healthz").json()["queue_depth"] < 6:
      assert time.time() < deadline
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:  # New requests are refused: 503, or the socket is closed already.
      late = httpx.post(url + "/v1/predict", timeout=TIMEOUT,
                        json={"task": RTE, "inputs": "late"})
      assert late.status_code == 503 and late.headers["Retry-After"]
    except httpx.TransportError:
      pass
    for t in threads:
      t.join(timeout=60)
    assert [a.status_code for a in answers] == [200] * 6
    assert proc.wait(timeout=60) == 0
    assert "Drained and stopped." in proc.stdout.read()
  finally:
    if proc.poll() is None:
      proc.kill()


def test_raw_fields_of_a_tfds_only_task_come_from_its_builder(monkeypatch):
  for key, value in _env().items():
    monkeypatch.setenv(key, value)
  qqp = codec_lib.TaskCodec("domain_shift_qqp_v200")  # No local files.
  assert qqp.fields == ["question1", "question2"]
  got = qqp.encode_fields({"question1": "Is it red?",
                           "question2": "Was it red?"}, 64)
  text = got.example["inputs_pretokenized"].decode()
  assert "Is it red?" in text and "Was it red?" in text
  vocab = qqp.vocabulary("inputs")
  assert list(got.tokens) == list(vocab.encode(text)) + [vocab.eos_id]
  # Ragged features (MRQA's spans): `inputs` text only, and said so.
  squad = codec_lib.TaskCodec("mrqa_squad_v100")
  assert squad.spec is None and squad.fields == []
  with pytest.raises(codec_lib.ApiError, match='send "inputs" text'):
    squad.encode_fields({"question": "Who?"}, 64)
