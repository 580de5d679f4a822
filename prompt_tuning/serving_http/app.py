"""The HTTP JSON API (starlette) and its server (uvicorn, graceful drain).

  POST   /v1/predict          {"task", "fields" | "inputs", "mode"?,
                               "num_beams"?, "timeout_ms"?, "truncate"?}
  GET    /v1/tasks            the served tasks, their fields and labels
  PUT    /v1/prompts/{task}   {"source": path} or {"prompt": [[...]]}
  DELETE /v1/prompts/{task}
  GET    /healthz             200, or 503 while draining
  GET    /metrics             Prometheus text format

Statuses: 200; 400 malformed request (named); 404 unknown task; 413 inputs
longer than the feature length; 422 a prompt that does not fit; 503 queue
full or shutting down (with `Retry-After`); 504 the request's deadline
passed; 500 an internal error.

On SIGTERM (or SIGINT) the server stops accepting (new requests on open
connections get 503; the listening socket closes), answers every accepted
request, then exits (`Server.handle_exit`, `batcher.Batcher.drain`).
"""

import asyncio
import contextlib
import json
import logging
import math
import socket
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from starlette import applications
from starlette import requests as requests_lib
from starlette import responses
from starlette import routing
import uvicorn

from prompt_tuning.analysis import prompt_io
from prompt_tuning.serving_http import batcher as batcher_lib
from prompt_tuning.serving_http import codec as codec_lib
from prompt_tuning.serving_http import engine as engine_lib
from prompt_tuning.serving_http import metrics as metrics_lib

_LOG = logging.getLogger(__name__)
ApiError = codec_lib.ApiError
MODES = (engine_lib.GREEDY, engine_lib.BEAM, engine_lib.RANK)
PREDICT_KEYS = ("task", "fields", "inputs", "mode", "num_beams",
                "timeout_ms", "truncate")
RETRY_AFTER_S = 1
# Bodies beyond this are refused (413): a request is a few fields of text,
# a prompt at most [length, embed] numbers.
MAX_BODY_BYTES = 64 << 20


def _error(e: ApiError) -> responses.JSONResponse:
  headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
  return responses.JSONResponse({"error": e.message}, e.status,
                                headers=headers)


async def _json_body(request: requests_lib.Request) -> Mapping[str, Any]:
  chunks, size = [], 0
  async for chunk in request.stream():
    chunks.append(chunk)
    size += len(chunk)
    if size > MAX_BODY_BYTES:
      raise ApiError(413, f"The request body is over {MAX_BODY_BYTES} bytes.")
  try:
    value = json.loads(b"".join(chunks))
  except (ValueError, UnicodeDecodeError) as e:
    raise ApiError(400, f"The request body is not valid JSON ({e}); send a "
                   "JSON object.") from e
  if not isinstance(value, dict):
    raise ApiError(400, f"The request body must be a JSON object, got "
                   f"{type(value).__name__}.")
  return value


class PromptServer:
  """One frozen model, one prompt bank, the batcher and the API.

  Attributes:
    engine: the model runner (its bank holds the served prompts).
    codecs: `{task: TaskCodec}` of the served tasks.
    batcher: the queue and batcher.
    metrics: the Prometheus metrics.
    app: the ASGI application.
  """

  def __init__(self, engine: engine_lib.Engine,
               prompts: Mapping[str, np.ndarray], *, max_queue: int = 256,
               max_wait_ms: float = 5.0, timeout_ms: float = 30_000.0,
               max_beams: int = 4, batching: str = batcher_lib.MIXED):
    """Loads the tasks and prompts and compiles every warm program.

    Raises:
      prompt_io.PromptShapeError: naming a prompt that does not fit.
      ValueError: for an unknown task.
    """
    if not prompts:
      raise ValueError("Serve at least one prompt (--prompt=TASK=SOURCE).")
    lengths = {np.shape(p)[0] for p in prompts.values()}
    for task, prompt in prompts.items():  # Refused before any compilation.
      engine.check_prompt(prompt, f"the prompt of {task}")
      if len(lengths) > 1:
        raise prompt_io.PromptShapeError(
            f"The prompt of {task} has shape {list(np.shape(prompt))}, but "
            f"the prompts have lengths {sorted(lengths)}: one bank holds "
            "prompts of one length.")
    self.metrics = metrics_lib.Metrics()
    self.engine = engine
    engine.on_compile = lambda key: self.metrics.compilations.inc()
    self.codecs = {task: codec_lib.TaskCodec(task) for task in prompts}
    for codec in self.codecs.values():
      codec.warm(engine.feature_lengths["inputs"])
    choices = [len(c.labels) for c in self.codecs.values() if c.labels]
    engine.warm_choices = (engine_lib.capacity_for(max(choices)) if choices
                           else None)
    engine.set_prompts(prompts)
    self.timeout_s = timeout_ms / 1000
    self.max_beams = max_beams
    self.batcher = batcher_lib.Batcher(engine, self.metrics, max_queue,
                                       max_wait_ms / 1000, batching)
    self.app = applications.Starlette(routes=[
        routing.Route("/v1/predict", self.predict, methods=["POST"]),
        routing.Route("/v1/tasks", self.tasks, methods=["GET"]),
        routing.Route("/v1/prompts/{task}", self.put_prompt, methods=["PUT"]),
        routing.Route("/v1/prompts/{task}", self.delete_prompt,
                      methods=["DELETE"]),
        routing.Route("/healthz", self.healthz, methods=["GET"]),
        routing.Route("/metrics", self.metrics_page, methods=["GET"]),
    ], lifespan=self._lifespan)

  @contextlib.asynccontextmanager
  async def _lifespan(self, app):  # pylint: disable=unused-argument
    self.batcher.start()
    yield
    await self.batcher.drain()

  # Requests.

  def _parse(self, body: Mapping[str, Any]) -> dict[str, Any]:
    """A predict body, checked; ApiError naming the problem."""
    unknown = sorted(set(body) - set(PREDICT_KEYS))
    if unknown:
      raise ApiError(400, f"Unknown key(s) {unknown}; a predict request has "
                     f"{list(PREDICT_KEYS)}.")
    task = body.get("task")
    if not isinstance(task, str):
      raise ApiError(400, "\"task\" (a string) is required; GET /v1/tasks "
                     "lists the served tasks.")
    if task not in self.codecs or task not in self.engine.bank.slots:
      raise ApiError(404, f"Unknown task {task!r}: no prompt is served for "
                     f"it. Served: {sorted(self.engine.bank.slots)}; add one "
                     f"with PUT /v1/prompts/{task}.")
    if ("fields" in body) == ("inputs" in body):
      raise ApiError(400, "Give exactly one of \"fields\" (the task's raw "
                     f"fields {self.codecs[task].fields}) or \"inputs\" "
                     "(text).")
    if "inputs" in body and not isinstance(body["inputs"], str):
      raise ApiError(400, "\"inputs\" must be a string.")
    num_beams = body.get("num_beams", 1)
    if (not isinstance(num_beams, int) or isinstance(num_beams, bool) or
        not 1 <= num_beams <= self.max_beams):
      raise ApiError(400, f"\"num_beams\" must be an integer from 1 to "
                     f"{self.max_beams} (--max_beams), got {num_beams!r}.")
    mode = body.get("mode", engine_lib.BEAM if num_beams > 1
                    else engine_lib.GREEDY)
    if mode not in MODES:
      raise ApiError(400, f"\"mode\" must be one of {list(MODES)}, got "
                     f"{mode!r}.")
    if mode != engine_lib.BEAM:
      if "num_beams" in body and num_beams != 1:
        raise ApiError(400, f"\"num_beams\" is for mode 'beam', not "
                       f"{mode!r}.")
    elif num_beams < 2:
      raise ApiError(400, "mode 'beam' needs \"num_beams\" >= 2.")
    if mode == engine_lib.RANK and not self.codecs[task].labels:
      raise ApiError(400, f"{task} has no fixed label set, so mode 'rank' "
                     "cannot score it; use 'greedy' or 'beam'.")
    timeout = body.get("timeout_ms", self.timeout_s * 1000)
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or
        not math.isfinite(timeout) or timeout <= 0):
      raise ApiError(400, f"\"timeout_ms\" must be a positive number, got "
                     f"{timeout!r}.")
    truncate = body.get("truncate", False)
    if not isinstance(truncate, bool):
      raise ApiError(400, "\"truncate\" must be true or false.")
    return {"codec": self.codecs[task], "mode": mode, "num_beams": num_beams,
            "timeout_s": timeout / 1000, "truncate": truncate,
            "fields": body.get("fields"), "inputs": body.get("inputs")}

  def _encode(self, parsed: Mapping[str, Any]) -> codec_lib.Encoded:
    codec = parsed["codec"]
    length = self.engine.feature_lengths["inputs"]
    if parsed["inputs"] is not None:
      return codec.encode_inputs(parsed["inputs"], length)
    return codec.encode_fields(parsed["fields"], length, parsed["truncate"])

  async def predict(self, request: requests_lib.Request) -> responses.Response:
    loop = asyncio.get_running_loop()
    arrival = loop.time()
    status, mode, future = 500, "none", None
    try:
      if self.batcher.draining:
        raise ApiError(503, "The server is shutting down; send the request "
                       "to another replica.")
      parsed = self._parse(await _json_body(request))
      mode = parsed["mode"]
      encoded = await asyncio.to_thread(self._encode, parsed)
      future = loop.create_future()
      self.batcher.submit(batcher_lib.Work(
          parsed["codec"], encoded, mode, parsed["num_beams"], future,
          loop.time()))
      remaining = parsed["timeout_s"] - (loop.time() - arrival)
      try:
        answer = await asyncio.wait_for(asyncio.shield(future),
                                        max(remaining, 0))
      except asyncio.TimeoutError:
        raise ApiError(504, f"The request's deadline of "
                       f"{1000 * parsed['timeout_s']:g} ms passed before it "
                       "was answered; raise \"timeout_ms\" or retry when the "
                       "server is less busy.") from None
      status = 200
      return responses.JSONResponse({"task": parsed["codec"].name,
                                     "mode": mode, **answer})
    except ApiError as e:
      status = e.status
      return _error(e)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.exception("predict failed")
      return responses.JSONResponse(
          {"error": f"Internal error: {type(e).__name__}: {e}"}, 500)
    finally:
      if future is not None and not future.done():
        future.cancel()  # Skipped by the batcher: answered here already.
      self.metrics.requests.labels(str(status)).inc()
      if status == 200:
        self.metrics.latency.labels(mode).observe(loop.time() - arrival)

  async def tasks(self, request: requests_lib.Request) -> responses.Response:
    del request
    bank = self.engine.bank
    served = []
    for task, slot in sorted(bank.slots.items(), key=lambda kv: kv[1]):
      codec = self.codecs[task]
      served.append({
          "name": task, "slot": slot,
          "prompt_shape": list(bank.prompts[task].shape),
          "fields": codec.fields, "labels": list(codec.labels),
          "modes": [m for m in MODES
                    if m != engine_lib.RANK or codec.labels]})
    return responses.JSONResponse({
        "tasks": served,
        "bank": {"prompts": len(bank.slots), "capacity": bank.capacity},
        "feature_lengths": self.engine.feature_lengths,
        "batch_size": self.engine.batch_size, "max_beams": self.max_beams,
        "input_buckets": list(self.engine.buckets)})

  async def put_prompt(self, request: requests_lib.Request
                       ) -> responses.Response:
    task = request.path_params["task"]
    try:
      body = await _json_body(request)
      if ("source" in body) == ("prompt" in body) or set(body) - {"source",
                                                                   "prompt"}:
        raise ApiError(400, "Send exactly one of {\"source\": PATH} (a .npy "
                       "file or a training run's MODEL_DIR on the server) or "
                       "{\"prompt\": [[...], ...]} ([length, embed]).")
      prompt, source = await asyncio.to_thread(_load_prompt, body)
      try:
        codec = self.codecs.get(task) or await asyncio.to_thread(
            _warm_codec, task, self.engine.feature_lengths["inputs"])
      except ValueError as e:
        raise ApiError(404, str(e)) from e
      try:
        prompt = self.engine.check_prompt(prompt, source)
      except prompt_io.PromptShapeError as e:
        raise ApiError(422, str(e)) from e
      replaced = task in self.engine.bank.slots
      before = self.engine.compilations
      bank = await asyncio.to_thread(self.engine.set_prompts, {task: prompt})
      self.codecs[task] = codec
      return responses.JSONResponse({
          "task": task, "slot": bank.slots[task], "replaced": replaced,
          "bank": {"prompts": len(bank.slots), "capacity": bank.capacity},
          "compilations": self.engine.compilations - before},
                                    200 if replaced else 201)
    except ApiError as e:
      return _error(e)

  async def delete_prompt(self, request: requests_lib.Request
                          ) -> responses.Response:
    task = request.path_params["task"]
    bank = self.engine.bank
    if task not in bank.slots:
      return _error(ApiError(404, f"No prompt is served for {task!r}; "
                             f"served: {sorted(bank.slots)}."))
    if len(bank.slots) == 1:
      return _error(ApiError(409, f"{task} holds the last prompt; the bank "
                             "cannot be empty (add another first)."))
    bank = await asyncio.to_thread(self.engine.remove_prompt, task)
    return responses.JSONResponse({
        "task": task, "removed": True,
        "bank": {"prompts": len(bank.slots), "capacity": bank.capacity}})

  async def healthz(self, request: requests_lib.Request) -> responses.Response:
    del request
    if self.batcher.draining:
      return _error(ApiError(503, "draining"))
    return responses.JSONResponse({"status": "ok",
                                   "tasks": len(self.engine.bank.slots),
                                   "queue_depth": self.batcher.queue_depth})

  async def metrics_page(self, request: requests_lib.Request
                         ) -> responses.Response:
    del request
    body, content_type = self.metrics.render()
    return responses.Response(body, media_type=content_type)


def _warm_codec(task: str, max_length: int) -> codec_lib.TaskCodec:
  codec = codec_lib.TaskCodec(task)
  codec.warm(max_length)
  return codec


def _load_prompt(body: Mapping[str, Any]) -> tuple[np.ndarray, str]:
  """(prompt, how to name it) of a PUT body; ApiError if unreadable."""
  if "source" in body:
    source = body["source"]
    if not isinstance(source, str):
      raise ApiError(400, "\"source\" must be a path string.")
    try:
      return prompt_io.resolve_prompt(source), source
    except prompt_io.PromptShapeError as e:
      raise ApiError(422, str(e)) from e
    except (OSError, KeyError, ValueError) as e:
      raise ApiError(400, f"Cannot read a prompt from {source!r}: {e}") from e
  try:
    prompt = np.asarray(body["prompt"], np.float32)
  except (TypeError, ValueError) as e:
    raise ApiError(400, f"\"prompt\" must be a [length, embed] array of "
                   f"numbers: {e}") from e
  return prompt, "the request's prompt"


class Server(uvicorn.Server):
  """uvicorn's server whose exit signal also starts the drain: new requests
  are refused (503) at once, accepted ones are answered, then it exits
  (cleanly, without re-raising the signal)."""

  def __init__(self, config: uvicorn.Config, prompt_server: PromptServer):
    super().__init__(config)
    self.prompt_server = prompt_server

  def handle_exit(self, sig, frame) -> None:
    del sig, frame
    self.prompt_server.batcher.draining = True
    if self.should_exit:
      self.force_exit = True
    self.should_exit = True


def make_server(prompt_server: PromptServer, host: str = "127.0.0.1",
                port: int = 0, drain_timeout_s: float = 30.0,
                log_level: str = "warning") -> Server:
  """A uvicorn server for `prompt_server` (run it with `.run(sockets)`)."""
  config = uvicorn.Config(prompt_server.app, host=host, port=port,
                          log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=drain_timeout_s)
  return Server(config, prompt_server)


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
  """A listening TCP socket (port 0: a free one, `getsockname()[1]`)."""
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  sock.listen(128)
  return sock


def run(prompt_server: PromptServer, sockets: Optional[Sequence[
    socket.socket]] = None, **kwargs) -> None:
  """Serves until SIGTERM/SIGINT, then drains (blocks)."""
  make_server(prompt_server, **kwargs).run(sockets=list(sockets or []) or
                                           None)
