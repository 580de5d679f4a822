#!/usr/bin/env bash
# Ready-for-an-accelerator check (issue 13 item 5): run from the repository
# root on a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh                  # .venv/bin/python
#   PYTHON=python3 bash benchmarks/gpu_check.sh   # another interpreter
#   bash benchmarks/gpu_check.sh --install_cuda   # first swap in CUDA jax
#
# 1. the GPU (nvidia-smi -L) and JAX's backend, which must be the GPU;
# 2. TensorFlow sees no GPU once prompt_tuning.data is imported, while JAX does;
# 3. two step_time.py rows (JSON under $OUT, default /tmp/gpu_check): T5
#    1.1-base bfloat16 and T5 1.1-small float32, prompt tuning, batch 32,
#    inputs 512, prompt 100, targets 8, 20 timed steps;
# 4. the tests that run jitted model / training code (TESTS_* below) on the
#    GPU, under a time limit;
# then one summary line per row: steps/s, tokens/s, MFU. About 5 minutes on an
# H100-class GPU, 8 at most (TEST_TIMEOUT_S caps the tests). It installs
# nothing unless asked.
#
# Install: README.md's `python3 -m venv .venv && . .venv/bin/activate &&
# pip install -e '.[test]'` installs jax[cpu]; on a GPU machine JAX also needs
# its CUDA plugin: `--install_cuda` runs `pip install 'jax[cuda12]==V'` with V
# the jax pin of setup.py (setup.py says to swap at the same version). An
# interpreter that already has CUDA jax (e.g. an image's python3) needs only
# PYTHON=...; the repository root is put on PYTHONPATH, so prompt_tuning need
# not be installed there. Without TensorFlow/seqio (e.g. such an image), step
# 2 reports that TF is absent and the tests that need the data pipeline
# (TESTS_TF) are skipped; without gin-config, TESTS_GIN are skipped too.
set -euo pipefail

# --- The tests run on the GPU (files), and the ones deselected (-k). ---------
# Plain JAX/Flax: the model, decoding, prompts, logical axes.
TESTS_CORE="tests/test_model.py tests/test_prompts.py tests/test_partitioning.py tests/test_attention_layout.py"
# Also need gin-config: train steps of prompts, deep prompts (P-Tuning v2).
TESTS_GIN="tests/test_prompts_training.py tests/test_deep_prompts.py"
# Also need TensorFlow + seqio and ../shared: the trainer, state, predict.
# test_fidelity: the fast defaults against T5X's literal forms (tolerances).
TESTS_TF="tests/test_training.py tests/test_state.py tests/test_predict.py tests/test_fidelity.py"
# Deselected: meshes of 8 devices (conftest's fake CPU devices; one GPU here),
# the 8-way batch check, the kill-and-resume test (it pins JAX_PLATFORMS=cpu)
# and multihost.
TESTS_K="not mesh and not sharded and not only_missing_parameters and not must_split and not killed_run and not multihost"
PYTEST_ARGS="${PYTEST_ARGS:--q -x}"
TEST_TIMEOUT_S="${TEST_TIMEOUT_S:-240}"
# The tests were written against CPU float32; on Ampere and newer GPUs JAX's
# default precision runs float32 matmuls as TF32 (~1e-3 relative), which their
# tight tolerances would flag. Set TEST_MATMUL_PRECISION=default to see that.
TEST_MATMUL_PRECISION="${TEST_MATMUL_PRECISION:-highest}"

OUT_DIR="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-.venv/bin/python}"
INSTALL_CUDA=0
for arg in "$@"; do
  case "$arg" in
    --install_cuda) INSTALL_CUDA=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (only --install_cuda)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu_check: no interpreter at $PY; create .venv (README.md) or set PYTHON=..." >&2
  exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/step_*.json "$OUT_DIR"/pytest.log
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

if [ "$INSTALL_CUDA" = 1 ]; then
  jax_version=$(sed -n 's/.*"jax\[cpu\]==\([0-9][0-9.]*\)".*/\1/p' setup.py)
  [ -n "$jax_version" ] || { echo "gpu_check: no jax[cpu] pin in setup.py" >&2; exit 1; }
  echo "== pip install jax[cuda12]==$jax_version"
  "$PY" -m pip install -q "jax[cuda12]==$jax_version"
fi

# --- 1. The GPU. -------------------------------------------------------------
echo "== GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L
else
  echo "(no nvidia-smi on PATH)"
fi
backend=$("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo "none")
if [ "$backend" != "gpu" ] && [ "$backend" != "cuda" ]; then
  echo "gpu_check: no GPU for JAX (jax.default_backend() is '$backend')." >&2
  echo "  This check needs an NVIDIA GPU and CUDA jax: on a GPU machine run with" >&2
  echo "  --install_cuda, or PYTHON=<an interpreter with jax[cuda12]>." >&2
  exit 1
fi
# Tests: conftest.py hides GPUs (CUDA_VISIBLE_DEVICES='', JAX_PLATFORMS=cpu)
# unless these are set; show it the GPUs and keep CPU for explicit requests.
if [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
  CUDA_VISIBLE_DEVICES=$( (nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true) | paste -sd, -)
  CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
fi
export CUDA_VISIBLE_DEVICES

# --- 2. TensorFlow off the GPU, JAX on it. -----------------------------------
echo "== TensorFlow vs JAX devices"
"$PY" - <<'EOF'
import importlib.util
if importlib.util.find_spec("tensorflow") is None:
  print("TensorFlow is not installed here: nothing but JAX can take the GPU.")
else:
  import prompt_tuning.data  # Hides GPUs from TF (prompt_tuning/data/__init__.py).
  import tensorflow as tf
  gpus = tf.config.get_visible_devices("GPU")
  assert gpus == [], f"TensorFlow sees {gpus}"
  print(f"TensorFlow {tf.__version__} sees no GPU after importing prompt_tuning.data.")
import jax
devices = jax.devices()
assert devices[0].platform == "gpu", devices
print(f"JAX {jax.__version__} sees {devices} ({devices[0].device_kind}).")
EOF

# --- 3. Step time on the GPU. ------------------------------------------------
bench() {  # bench NAME ARGS...
  local name=$1; shift
  echo "== step_time $name ($(elapsed))"
  JAX_PLATFORMS=cuda "$PY" benchmarks/step_time.py --configs=prompt \
      --no_checkpoint --batch_size=32 --input_length=512 --steps=20 \
      --json_out="$OUT_DIR/$name.json" "$@"
}
bench_rc=0
bench step_base_bf16 --shape=base --dtype=bfloat16 || bench_rc=1
bench step_small_f32 --shape=small --dtype=float32 || bench_rc=1

# --- 4. Tests on the GPU. ----------------------------------------------------
tests="$TESTS_CORE"
if "$PY" -c 'import gin' 2>/dev/null; then
  tests="$tests $TESTS_GIN"
else
  echo "gpu_check: gin-config missing: skipping $TESTS_GIN"
fi
if "$PY" -c 'import tensorflow, seqio' 2>/dev/null; then
  tests="$tests $TESTS_TF"
else
  echo "gpu_check: TensorFlow/seqio missing: skipping $TESTS_TF"
fi
echo "== pytest on the GPU ($(elapsed)): $tests"
test_rc=0
# shellcheck disable=SC2086  # word splitting of the file lists is intended
JAX_PLATFORMS=cuda,cpu JAX_DEFAULT_MATMUL_PRECISION="$TEST_MATMUL_PRECISION" \
  timeout "$TEST_TIMEOUT_S" "$PY" -m pytest $tests $PYTEST_ARGS -k "$TESTS_K" \
  -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.log" || test_rc=$?
if [ "$test_rc" = 124 ]; then
  echo "gpu_check: tests stopped after TEST_TIMEOUT_S=${TEST_TIMEOUT_S}s"
fi

# --- Summary. ----------------------------------------------------------------
echo "== summary ($(elapsed)); JSON in $OUT_DIR"
"$PY" - "$OUT_DIR"/step_*.json <<'EOF'
import json, sys
for path in sys.argv[1:]:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    print(f"{path}: no result")
    continue
  for r in data["rows"]:
    mfu = ("-" if r.get("mfu") is None else
           f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:g} TFLOP/s")
    print(f"{data.get('shape_name')} {data.get('dtype')} {r['framework']}/"
          f"{r['config']} on {r.get('device_kind')}: {r['steps_per_s']:.2f} "
          f"steps/s, {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu}")
EOF
echo "tests: $([ "$test_rc" = 0 ] && echo passed || echo "FAILED (exit $test_rc, log $OUT_DIR/pytest.log)")"
[ "$bench_rc" = 0 ] && [ "$test_rc" = 0 ]
