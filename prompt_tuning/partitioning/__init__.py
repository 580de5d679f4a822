"""Mesh construction and logical-axis sharding (pjit semantics via jax.jit)."""

from prompt_tuning.partitioning.mesh import (batch_sharding,
                                             check_logical_axes, create_mesh,
                                             fit_spec, mesh_specs,
                                             logical_specs, mesh_context,
                                             opt_state_spec,
                                             param_shardings,
                                             replicated)
from prompt_tuning.partitioning.rules import LOGICAL_AXIS_RULES, MESH_AXES
