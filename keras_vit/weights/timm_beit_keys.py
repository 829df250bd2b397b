"""keras_vit `BEiT` variable paths <-> timm `Beit` state-dict keys, and loading a timm-keyed BEiT state.

timm's BEiT keys are its ViT keys (`timm_keys`) plus the attention's
`q_bias`/`v_bias`, the relative position tables (per block and the shared
`rel_pos_bias`) and the blocks' `gamma_1`/`gamma_2` layer scales. Tables of
another grid are resized as timm's checkpoint filter does.
"""

from __future__ import annotations

import math

import numpy as np

from keras_vit.weights import timm_keys
from keras_vit.weights.errors import CheckpointError

TABLE = "relative_position_bias_table"
_OWN_VARIABLES = ("q_bias", "v_bias", TABLE, "gamma_1", "gamma_2")
# Keys that only timm's own BEiT (or HF's) has: how a file tells it holds a BEiT.
BEIT_MARKERS = ("attn.q_bias", "attn.relative_position_bias_table", "gamma_1", "rel_pos_bias.")


def beit_timm_key(path: str) -> tuple[str, str]:
    """`(timm key, layout)` of a keras_vit BEiT variable path such as `block_0/attn/q_bias`."""
    *layers, var = path.split("/")
    if var in _OWN_VARIABLES and layers:
        names = [f"blocks.{layers[0][len('block_') :]}" if layers[0].startswith("block_") else layers[0]]
        return ".".join(names + layers[1:] + [var]), timm_keys.SAME
    return timm_keys.timm_key(path)


def model_targets(model) -> dict[str, tuple[object, str]]:
    """timm key -> (Keras variable, layout) for every weight of a BEiT."""
    return {beit_timm_key(variable.path)[0]: (variable, beit_timm_key(variable.path)[1]) for variable in model.weights}


def model_state_dict(model) -> dict[str, np.ndarray]:
    """A BEiT's weights as a timm `Beit` state dict (PyTorch layouts), float32 NumPy arrays."""
    return {
        key: np.ascontiguousarray(timm_keys.to_timm(np.asarray(variable.numpy()), layout))
        for key, (variable, layout) in model_targets(model).items()
    }


def _square_grid(entries: int) -> tuple[int, int] | None:
    """The square patch grid whose table has `entries` rows, if any (timm assumes square checkpoints)."""
    side = math.isqrt(max(entries - 3, 0))
    if side * side != entries - 3 or side % 2 == 0:
        return None
    return ((side + 1) // 2,) * 2


def fit_tables_to_model(state: dict[str, np.ndarray], model) -> tuple[dict[str, np.ndarray], tuple | None]:
    """Drops the buffers timm no longer saves and resizes relative position tables to the model's grid.

    Returns:
        The new state and `(old_grid, new_grid)` when tables were resized, else None.
    """
    from keras_vit.layers.beit_blocks import relative_position_table_size, resize_relative_position_table

    grid = tuple(model.config.grid_size)
    wanted = relative_position_table_size(grid)
    fitted, resized = {}, None
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue  # a buffer computed from the grid, saved by older timm versions
        if key.endswith(TABLE) and np.ndim(value) == 2 and value.shape[0] != wanted:
            old = _square_grid(value.shape[0])
            if old is not None:
                value, resized = resize_relative_position_table(np.asarray(value), old, grid), (old, grid)
        fitted[key] = value
    return fitted, resized


def describe_beit_state(state: dict[str, np.ndarray]) -> str:
    """What a timm-keyed state holds, in words: family, width, depth, heads, patch, classes."""
    family = "BEiT" if any(marker in key for key in state for marker in BEIT_MARKERS) else "non-BEiT (ViT-like)"
    parts = [family]
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and np.ndim(proj) == 4:
        parts.append(f"width {proj.shape[0]}, patch {proj.shape[2]}x{proj.shape[3]}")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        parts.append(f"depth {max(blocks) + 1}")
    table = state.get(f"blocks.0.attn.{TABLE}", state.get(f"rel_pos_bias.{TABLE}"))
    if table is not None and np.ndim(table) == 2:
        parts.append(f"{table.shape[1]} heads")
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and np.ndim(fc1) == 2:
        parts.append(f"MLP {fc1.shape[0]}")
    head = state.get("head.weight")
    parts.append(f"{head.shape[0]} classes" if head is not None and np.ndim(head) == 2 else "no head")
    return ", ".join(parts)


def describe_model(model) -> str:
    c = model.config
    return (
        f"BEiT, width {c.hidden_dim}, patch {c.patch_size[0]}x{c.patch_size[1]}, depth {c.depth}, "
        f"{c.num_heads} heads, MLP {c.mlp_dim}, " + (f"{c.num_classes} classes" if c.num_classes else "no head")
    )


def load_timm_beit_state(model, state: dict[str, np.ndarray], *, path: str, format: str, flavor: str):
    """Loads a timm-keyed BEiT state into `model`, all or nothing; names expected vs found when it does not fit."""
    from keras_vit.weights import loading

    state, resized = fit_tables_to_model(timm_keys.strip_wrapper_prefix(state), model)
    report = loading.LoadReport(path=path, format=format, flavor=flavor)
    try:
        plan = loading.plan_assignments(model, state, report, targets=model_targets(model))
    except CheckpointError as error:
        raise CheckpointError(
            f"Expected a checkpoint of {describe_model(model)}; the file holds a {describe_beit_state(state)}.\n{error}"
        ) from None
    for variable, value in plan:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    report.loaded = len(plan)
    report.resampled = report.resampled or resized
    return report
