"""Loading pre-trained T5 weights (Hugging Face safetensors, T5X native)."""

from prompt_tuning.checkpoints.hf import hf_config_to_t5_config
from prompt_tuning.checkpoints.hf import load_hf_t5
from prompt_tuning.checkpoints.param_tree import flatten_params
from prompt_tuning.checkpoints.param_tree import t5_param_shapes
from prompt_tuning.checkpoints.param_tree import unflatten_params
from prompt_tuning.checkpoints.pretrained import CheckpointFormat
from prompt_tuning.checkpoints.pretrained import detect_checkpoint_format
from prompt_tuning.checkpoints.pretrained import load_pretrained_params
from prompt_tuning.checkpoints.sharded import CheckpointRecord
from prompt_tuning.checkpoints.sharded import open_checkpoint
from prompt_tuning.checkpoints.t5x import load_t5x_checkpoint
from prompt_tuning.checkpoints.t5x import T5XCheckpoint
from prompt_tuning.checkpoints.validation import check_params
from prompt_tuning.checkpoints.validation import ParamMismatchError
