r"""Serve many tasks' prompts from one frozen model over HTTP, mixed batches.

  python -m prompt_tuning.serve \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'" \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" \
    --prompt=taskless_super_glue_rte_v102=/runs/rte \
    --prompt=taskless_super_glue_cb_v102=/prompts/cb.npy \
    --port=8000

The gin files and flags are `prompt_tuning.infer`'s: with
`runs/prompt_infer.gin` (MODEL_DIR, MIXTURE_OR_TASK_NAME, ...) the run's
prompt is served for its task, and each `--prompt=TASK=SOURCE` adds one
(SOURCE: a `.npy` file, a training run's MODEL_DIR or its `best/`, a T5X or
PEFT prompt: `analysis.prompt_io.resolve_prompt`). All prompts share one
length and must fit the model's embedding width; one that does not is
refused before anything is compiled.

Every program (greedy decoding, and rank scoring when a task has labels, at
each input length bucket) is compiled before the port opens. The API is in
`prompt_tuning/serving_http/app.py` and README.md's "Serving" section.
SIGTERM stops accepting, answers every accepted request, then exits 0.
"""

from typing import Any, Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning import paper_defaults

# Macros read here rather than through a configurable.
MACROS = ("MODEL", "INITIAL_CHECKPOINT_PATH", "TASK_FEATURE_LENGTHS",
          "LENGTH_BUCKETS", "BATCH_SIZE", "MODEL_DIR", "MIXTURE_OR_TASK_NAME",
          "CHECKPOINT_STEP")


def _flags() -> flags.FlagValues:
  fv = cli.new_flags()
  flags.DEFINE_multi_string(
      "prompt", [], "TASK=SOURCE (repeatable): serve TASK with the prompt "
      "at SOURCE (a .npy file, a MODEL_DIR, its best/).", flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.",
                      flag_values=fv)
  flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free one).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "Rows per forward pass (default "
                       "BATCH_SIZE).", lower_bound=1, flag_values=fv)
  flags.DEFINE_float("max_wait_ms", 5.0, "Longest a request waits for others "
                     "to share its batch.", lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("max_queue", 256, "Requests that may wait; more are "
                       "answered 503 with Retry-After.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("timeout_ms", 30_000, "Default per-request deadline "
                     "(504 past it); a request's \"timeout_ms\" overrides.",
                     lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_beams", 4, "Most beams a request may ask for.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("batching", "mixed", ["mixed", "per_task"], "mixed: "
                    "tasks share batches; per_task: one task per batch.",
                    flag_values=fv)
  flags.DEFINE_integer("bank_capacity", 1, "Bank slots to reserve, so that "
                       "prompts can be added up to it without a "
                       "compilation.", lower_bound=1, flag_values=fv)
  flags.DEFINE_bool("batch_buckets", False, "Pad a batch to the smallest of "
                    "the doubling batch sizes up to --batch_size that holds "
                    "it (a lone request runs a small batch; more programs "
                    "are compiled at start-up).", flag_values=fv)
  flags.DEFINE_integer("num_partitions", 1, "Size of the mesh's model axis.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("drain_timeout_s", 30.0, "At shutdown, the longest to "
                     "wait for accepted requests.", lower_bound=0,
                     flag_values=fv)
  return fv


def prompt_specs(specs: Sequence[str]) -> dict[str, str]:
  """`['TASK=SOURCE', ...]` -> `{task: source}`; UsageError if malformed."""
  out = {}
  for spec in specs:
    task, sep, source = spec.partition("=")
    if not sep or not task or not source:
      raise cli.UsageError(f"--prompt {spec!r} must be TASK=SOURCE, e.g. "
                           "--prompt=taskless_super_glue_rte_v102=/runs/rte.")
    if task in out:
      raise cli.UsageError(f"--prompt gives {task} twice.")
    out[task] = source
  return out


def _macro(name: str, default: Any) -> Any:
  value = gin_utils.query_macro(name, default)
  return default if value is None else value


def main(argv: Sequence[str]) -> int:
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=MACROS)
  # pylint: disable=g-import-not-at-top  (JAX after the quiet start-up)
  from prompt_tuning import partitioning
  from prompt_tuning.analysis import bank
  from prompt_tuning.analysis import prompt_io
  from prompt_tuning.serving_http import app as app_lib
  from prompt_tuning.serving_http import engine as engine_lib
  from prompt_tuning.training import length_buckets as buckets_lib
  # pylint: enable=g-import-not-at-top
  sources = prompt_specs(args.prompt)
  run_dir = gin_utils.query_macro("MODEL_DIR")
  run_task = gin_utils.query_macro("MIXTURE_OR_TASK_NAME")
  if run_dir and run_task and run_task not in sources:
    sources[run_task] = run_dir
  if not sources:
    raise cli.UsageError("Nothing to serve: give --prompt=TASK=SOURCE "
                         "(repeatable), or runs/prompt_infer.gin's MODEL_DIR "
                         "and MIXTURE_OR_TASK_NAME.")
  checkpoint = gin_utils.query_macro("INITIAL_CHECKPOINT_PATH")
  if not checkpoint:
    raise cli.UsageError(
        "Serving needs the frozen model: pass "
        "--gin.INITIAL_CHECKPOINT_PATH=\"'/path/checkpoint'\".")
  lengths = dict(_macro("TASK_FEATURE_LENGTHS", {
      "inputs": paper_defaults.INPUTS_LENGTH,
      "targets": paper_defaults.TARGETS_LENGTH}))
  spec = gin_utils.query_macro("LENGTH_BUCKETS", buckets_lib.DEFAULT_SPEC)
  if not (spec is None or isinstance(spec, (int, dict))):
    spec = buckets_lib.DEFAULT_SPEC  # An unevaluated reference to it.
  buckets_lib.check_spec(spec, lengths)
  batch_size = args.batch_size or _macro("BATCH_SIZE",
                                         paper_defaults.BATCH_SIZE)
  model = gin_utils.configured_model()
  step = gin_utils.query_macro("CHECKPOINT_STEP")
  prompts = {}
  try:
    for task, source in sources.items():
      prompts[task] = prompt_io.resolve_prompt(
          source, step if source == run_dir else None)
      prompt_io.check_portable(prompts[task], model.module.config.emb_dim,
                               source=f"--prompt {task}={source}")
      if prompts[task].ndim != 2:
        raise prompt_io.PromptShapeError(
            f"--prompt {task}={source} is a bank of shape "
            f"{list(prompts[task].shape)}; serve one [length, embed] prompt "
            "per task.")
  except prompt_io.PromptShapeError as e:
    raise cli.UsageError(str(e)) from e
  except (OSError, KeyError) as e:
    raise cli.UsageError(f"Cannot read the prompt of {task} from {source} "
                         f"({e}); give a .npy file or a training run's "
                         "MODEL_DIR.") from e
  if args.validate_only:
    print(f"Configuration valid: {len(prompts)} prompt(s) fit the model; "
          "nothing compiled.")
    return 0
  engine = engine_lib.Engine(
      model, bank.load_base_params(model, checkpoint), lengths, batch_size,
      partitioning.create_mesh(args.num_partitions), spec,
      min_capacity=args.bank_capacity, batch_buckets=args.batch_buckets)
  server = app_lib.PromptServer(
      engine, prompts, max_queue=args.max_queue, max_wait_ms=args.max_wait_ms,
      timeout_ms=args.timeout_ms, max_beams=args.max_beams,
      batching=args.batching)
  sock = app_lib.bound_socket(args.host, args.port)
  host, port = sock.getsockname()[:2]
  print(f"Serving {len(prompts)} task(s) on http://{host}:{port} "
        f"({engine.compilations} programs compiled): "
        + ", ".join(sorted(prompts)), flush=True)
  app_lib.run(server, [sock], drain_timeout_s=args.drain_timeout_s)
  print("Drained and stopped.", flush=True)
  return 0


if __name__ == "__main__":
  cli.run(main)
