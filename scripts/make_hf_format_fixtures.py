r"""Writes tiny Hugging Face T5 checkpoints in every weights format.

Read by tests/test_checkpoints_hf_formats.py: each format must load to
exactly what the model's own `model.safetensors` loads to. For a T5 1.0
(ReLU MLP, tied and scaled logits) and a T5 1.1 (gated GELU, separate
lm_head) configuration this builds a random `T5ForConditionalGeneration`
(torch seed 0) and saves it with transformers' own writers into

  tests/testdata/hf_formats/t5_1_0/   tests/testdata/hf_formats/t5_1_1/

  config.json, model.safetensors      save_pretrained(safe_serialization=True)
  pytorch_model.bin                   save_pretrained(safe_serialization=False)
  pytorch_model.bin.index.json +      the same with max_shard_size="12KB"
    pytorch_model-0000k-of-0000n.bin    (T5 1.1 only)
  flax_model.msgpack                  FlaxT5ForConditionalGeneration
                                      .from_pretrained(dir, from_pt=True)
                                      .save_pretrained (skipped without flax)
  tf_model.h5                         T5 1.1 only, with --tf (below):
                                      TFT5ForConditionalGeneration(config)
                                      given model.safetensors' tensors by
                                      transformers' own
                                      load_pytorch_state_dict_in_tf2_model,
                                      then save_pretrained

(the generation_config.json transformers adds is removed) and, with plain
`torch.save` of the T5 1.1 state dict, one config.json plus
`pytorch_model.bin` in each of

  t5_1_1_float16/, t5_1_1_bfloat16/   the model in float16 / bfloat16
  t5_1_1_views/                       every tensor a view into ONE storage at
                                      its own offset, the 2-D ones
                                      transposed views (non-contiguous
                                      strides), the embedding stored once and
                                      shared by shared.weight and its copies
  malicious/                          a state dict whose pickle also holds an
                                      object whose __reduce__ calls
                                      os.system('touch pwned_by_checkpoint')
                                      (the reader must refuse it unrun)

Sizes: vocab 32, d_model 16, 2 heads of 4 (heads*d_kv != d_model), d_ff 24
(1.0) / 20 (1.1), 1 encoder and 2 decoder layers, 8 relative buckets, max
distance 16: all files together about 480 KB (tf_model.h5 alone 140 KB,
hence T5 1.1 only).

Environments (kept apart from the project's venv, which must never get
torch or transformers); transformers 5 dropped Flax and TensorFlow, so this
needs 4.x. These files were made with transformers 4.57.6, torch 2.14.1,
safetensors 0.8.0, numpy 2.4.6, flax 0.10.2 with jax 0.4.38 (4.x's Flax T5
needs jax < 0.5), and, in a second venv (torch and tensorflow in one process
crash there), tensorflow-cpu 2.21.0, tf-keras 2.21.0, safetensors 0.5.3:

  python3 -m venv /tmp/hf4
  /tmp/hf4/bin/pip install 'transformers<5' torch
  /tmp/hf4/bin/pip install 'jax==0.4.38' 'jaxlib==0.4.38' 'flax==0.10.2'
  python3 -m venv /tmp/hf4tf
  /tmp/hf4tf/bin/pip install 'transformers<5' tensorflow-cpu tf-keras \
      'safetensors==0.5.3'

then, from the repository root (the second adds tf_model.h5 to what the
first wrote; USE_TF=1 keeps transformers from importing torch):

  /tmp/hf4/bin/python scripts/make_hf_format_fixtures.py [--out DIR]
  USE_TF=1 /tmp/hf4tf/bin/python scripts/make_hf_format_fixtures.py --tf
"""

import argparse
import os
import pathlib
import shutil
from typing import Any

import transformers

OUT = (pathlib.Path(__file__).resolve().parent.parent / "tests" / "testdata"
       / "hf_formats")
_SIZES = dict(vocab_size=32, d_model=16, d_kv=4, num_heads=2, num_layers=1,
              num_decoder_layers=2, relative_attention_num_buckets=8,
              relative_attention_max_distance=16)
CONFIGS = {
    "t5_1_0": dict(_SIZES, d_ff=24, feed_forward_proj="relu",
                   tie_word_embeddings=True),
    "t5_1_1": dict(_SIZES, d_ff=20, feed_forward_proj="gated-gelu",
                   tie_word_embeddings=False),
}
MARKER = "pwned_by_checkpoint"


class Evil:
  """Unpickling this runs a shell command: the reader must never do it."""

  def __reduce__(self):
    return (os.system, (f"touch {MARKER}",))


def _build(name: str) -> Any:
  """The random PyTorch T5ForConditionalGeneration `name` (seed 0)."""
  import torch  # pylint: disable=g-import-not-at-top  # Not in --tf runs.
  torch.manual_seed(0)
  config = transformers.T5Config(**CONFIGS[name])
  return transformers.T5ForConditionalGeneration(config).eval()


def _save_flax(model_dir: pathlib.Path) -> None:
  """flax_model.msgpack of the PyTorch model in `model_dir`."""
  try:
    flax_model = transformers.FlaxT5ForConditionalGeneration.from_pretrained(
        model_dir, from_pt=True)
  except (ImportError, AttributeError) as e:
    print(f"skipping flax_model.msgpack: {e}")
    return
  tmp = model_dir.parent / f"{model_dir.name}.flax.tmp"
  flax_model.save_pretrained(tmp)
  shutil.copy(tmp / "flax_model.msgpack", model_dir)
  shutil.rmtree(tmp)


def _add_tf(out: pathlib.Path) -> None:
  """tf_model.h5 beside t5_1_1's model.safetensors (no torch involved)."""
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  from transformers import modeling_tf_pytorch_utils as tf_pt  # pylint: disable=g-import-not-at-top
  model_dir = out / "t5_1_1"
  config = transformers.T5Config.from_pretrained(model_dir)
  tf_model = transformers.TFT5ForConditionalGeneration(config)
  tf_model.build_in_name_scope()
  tf_pt.load_pytorch_state_dict_in_tf2_model(
      tf_model, st_numpy.load_file(model_dir / "model.safetensors"))
  tmp = out / "tf.tmp"
  tf_model.save_pretrained(tmp)
  shutil.copy(tmp / "tf_model.h5", model_dir)
  shutil.rmtree(tmp)


def _views_state_dict(state: dict[str, Any]) -> dict[str, Any]:
  """The same values as views (offsets, transposed strides) of ONE storage."""
  import torch  # pylint: disable=g-import-not-at-top
  total = sum(t.numel() for t in state.values()) + 7 * len(state)
  base = torch.zeros(total, dtype=torch.float32)
  out, offset, shared = {}, 3, None
  for name, tensor in state.items():
    if name.endswith("embed_tokens.weight") and shared is not None:
      out[name] = shared  # Tied copies: the same view.
      continue
    n = tensor.numel()
    flat = base[offset:offset + n]
    if tensor.dim() == 2:
      view = flat.view(tensor.shape[1], tensor.shape[0]).t()
    else:
      view = flat.view(tensor.shape)
    view.copy_(tensor)
    out[name] = view
    if name == "shared.weight":
      shared = view
    offset += n + 7
  return out


def _write_pytorch(out: pathlib.Path) -> None:
  """Everything but tf_model.h5 (see the module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  for name in CONFIGS:
    model = _build(name)
    model_dir = out / name
    model.save_pretrained(model_dir, safe_serialization=True)
    model.save_pretrained(model_dir, safe_serialization=False)
    if name == "t5_1_1":
      sharded = out / "sharded.tmp"
      model.save_pretrained(sharded, safe_serialization=False,
                            max_shard_size="12KB")
      for f in sharded.glob("pytorch_model*"):
        shutil.copy(f, model_dir / f.name)
      shutil.rmtree(sharded)
    _save_flax(model_dir)
    (model_dir / "generation_config.json").unlink(missing_ok=True)

  model = _build("t5_1_1")
  state = {k: v.detach().clone() for k, v in model.state_dict().items()}
  variants = {
      "t5_1_1_float16": {k: v.half() for k, v in state.items()},
      "t5_1_1_bfloat16": {k: v.bfloat16() for k, v in state.items()},
      "t5_1_1_views": _views_state_dict(state),
      "malicious": {"shared.weight": state["shared.weight"],
                    "evil": Evil()},
  }
  for name, tensors in variants.items():
    (out / name).mkdir()
    shutil.copy(out / "t5_1_1" / "config.json", out / name)
    torch.save(tensors, out / name / "pytorch_model.bin")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  parser.add_argument("--tf", action="store_true",
                      help="add tf_model.h5 to what a run without --tf "
                      "wrote (run with tensorflow, USE_TF=1)")
  args = parser.parse_args()
  if args.tf:
    _add_tf(args.out)
  else:
    _write_pytorch(args.out)
  total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
  print(f"{args.out}: {total / 1024:.0f} KB")


if __name__ == "__main__":
  main()
