"""Pre-trained T5 weights (Hugging Face: safetensors, PyTorch .bin without
torch, Flax msgpack, TF h5 (`hf_formats`); T5X native): one reader,
`sharded` (into shardings, or to the host); writing T5X checkpoints (`t5x`);
the '/'-named parameter tree (`param_tree`); a training run's checkpoints on
disk (`run_checkpoints`)."""

from prompt_tuning.checkpoints.hf import hf_config_to_t5_config
from prompt_tuning.checkpoints.param_tree import flatten_params
from prompt_tuning.checkpoints.param_tree import t5_param_shapes
from prompt_tuning.checkpoints.param_tree import unflatten_params
from prompt_tuning.checkpoints.pretrained import CheckpointFormat
from prompt_tuning.checkpoints.pretrained import detect_checkpoint_format
from prompt_tuning.checkpoints.sharded import CheckpointRecord
from prompt_tuning.checkpoints.sharded import open_checkpoint
from prompt_tuning.checkpoints.sharded import read_params
from prompt_tuning.checkpoints.validation import check_params
from prompt_tuning.checkpoints.validation import ParamMismatchError
