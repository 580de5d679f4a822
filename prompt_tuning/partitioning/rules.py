"""The one table mapping logical axis names to mesh axes.

Every parameter and main activation in `prompt_tuning.models` names its axes
with the logical names below; a `jax.sharding.Mesh` with axes `('data',
'model')` shards them by this table (1-D data parallelism over `data`,
Megatron-style model parallelism over `model`, as T5X's standard rules).
"""

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

# (logical name, mesh axis or None = replicated). Order is precedence.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("joined_kv", MODEL_AXIS),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("relpos_buckets", None),
    ("prompt", None),
    ("prompts", None),
    ("layers", None),
    ("classes", None),
)

KNOWN_LOGICAL_AXES = frozenset(name for name, _ in LOGICAL_AXIS_RULES)
