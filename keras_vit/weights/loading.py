"""Loading a checkpoint into a keras_vit model: all or nothing, with clear reports.

The loader plans every assignment first (key map, layouts, position-embedding
resampling, classifier-head decisions), checks the whole plan, and only then
writes variables, so a checkpoint that does not fit leaves the model untouched.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings

import numpy as np

from keras_vit.layers import resample_position_embeddings
from keras_vit.weights import formats, hf_config, hf_towers, timm_keys
from keras_vit.weights.checksum import verify_sha256
from keras_vit.weights.errors import CheckpointError, listing, shape_str
from keras_vit.weights.safetensors_io import write_safetensors


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained` did.

    Attributes:
        path: the file read.
        format: "safetensors", "npz" or "keras_h5"; flavor: "timm", "hf", "jax" or "keras".
        loaded: number of variables written.
        resampled: `(old_grid, new_grid)` when the position embedding was resampled.
        head: what happened to the classifier: "loaded", "replaced" (it does
            not fit, e.g. another class count: the model keeps its new head),
            "dropped" (the model has no head) or "absent" (the file has none).
        skipped: checkpoint keys not loaded (pre-logits and classifier keys only).
        config: the Hugging Face `config.json` read beside the file, if any.
        layer_norm_epsilon: the epsilon adopted from that config when it
            differed from the model's, else None.
    """

    path: str
    format: str
    flavor: str
    loaded: int = 0
    resampled: tuple | None = None
    head: str = "loaded"
    skipped: list[str] = dataclasses.field(default_factory=list)
    config: str | None = None
    layer_norm_epsilon: float | None = None


def _checkpoint_grid(length: int, prefix: int, model_grid: tuple[int, int]) -> tuple[int, int] | None:
    n = length - prefix
    if n <= 0:
        return None
    side = math.isqrt(n)
    if side * side == n:
        return (side, side)
    # Non-square: try the model's aspect ratio.
    ratio = model_grid[1] / model_grid[0]
    rows = round(math.sqrt(n / ratio))
    if rows > 0 and n % rows == 0 and abs(n // rows / rows - ratio) < 1e-6:
        return (rows, n // rows)
    return None


def _plan_position_embedding(model, array: np.ndarray, variable, report: LoadReport) -> np.ndarray:
    """Resamples the checkpoint's position table to the model's grid when the grids differ."""
    if tuple(array.shape) == tuple(variable.shape):
        return array
    layer = model.get_layer("pos_embed")
    grid, prefix = tuple(layer.grid_size), int(layer.num_prefix_tokens)
    if array.ndim != 3 or array.shape[0] != 1 or array.shape[-1] != variable.shape[-1]:
        return array  # not a resampling case: reported with the other shape mismatches
    old = _checkpoint_grid(array.shape[1], prefix, grid)
    if old is None:
        raise CheckpointError(
            f"Position embedding of shape {shape_str(array.shape)} does not hold {prefix} prefix entries plus a "
            f"patch grid, so it cannot be resampled to the model's {grid[0]}x{grid[1]} grid "
            f"{shape_str(variable.shape)}. Check that the model's tokens (class/distillation/register, "
            "pos_embed_prefix) match the checkpoint's. Nothing was loaded."
        )
    if old == grid:
        return array
    report.resampled = (old, grid)
    warnings.warn(
        f"Resampling the position embedding from a {old[0]}x{old[1]} to a {grid[0]}x{grid[1]} patch grid "
        "(bicubic, antialiased, as timm does).",
        stacklevel=4,
    )
    return resample_position_embeddings(array, old, grid, prefix)


def _timm_shape(variable, layout: str) -> str:
    return shape_str(timm_keys.to_timm(np.zeros(variable.shape, "float32"), layout).shape)


def _fits(state, targets, key: str) -> bool:
    value = timm_keys.to_keras(np.asarray(state[key]), targets[key][1])
    return tuple(value.shape) == tuple(targets[key][0].shape)


def _family_of_state(state: dict) -> str:
    """The timm model class a state dict's keys point to (by keys only EVA's or BEiT's attention has)."""
    if any(".attn.relative_position_bias_table" in key or key.startswith("rel_pos_bias.") for key in state):
        return "BEiT"
    if any(key.endswith(".attn.q_bias") or ".attn.q_proj." in key or key.startswith("rope.") for key in state):
        return "EVA"
    return "ViT"


def describe_state(state: dict) -> str:
    """`an EVA checkpoint: width 192, depth 2, patch 14x14` from a timm-keyed state dict's shapes."""
    depths = {int(key.split(".")[1]) for key in state if key.startswith("blocks.") and key.split(".")[1].isdigit()}
    family = _family_of_state(state)
    text = f"{'an' if family == 'EVA' else 'a'} {family} checkpoint"
    kernel = state.get("patch_embed.proj.weight")
    if kernel is not None and np.ndim(kernel) == 4:
        text += f": width {np.shape(kernel)[0]}, depth {len(depths)}, patch {np.shape(kernel)[2]}x{np.shape(kernel)[3]}"
    return text


def describe_model(model) -> str:
    """`a ViT: width 384, depth 12, patch 14x14` from a keras_vit model's config."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    if config is None or not hasattr(config, "hidden_dim"):
        return f"a {name}"
    patch = "x".join(str(p) for p in config.patch_size)
    article = "an" if name[0] in "AEIOU" else "a"
    return f"{article} {name}: width {config.hidden_dim}, depth {config.depth}, patch {patch}"


def plan_assignments(
    model, state: dict[str, np.ndarray], report: LoadReport, targets: dict | None = None
) -> list[tuple[object, np.ndarray]]:
    """Checks `state` (timm keys) against `model` and returns `(variable, value)` pairs; assigns nothing.

    `targets` (timm key -> (variable, layout)) defaults to the ViT key map; families with their own pass theirs.

    Raises:
        CheckpointError: listing every missing key, unexpected key and shape mismatch.
    """
    targets = getattr(model, "checkpoint_keys", timm_keys).model_targets(model) if targets is None else targets
    model_head = {k for k in targets if timm_keys.is_classifier_key(k)}
    file_head = {k for k in state if timm_keys.is_classifier_key(k)}
    missing = sorted(k for k in targets if k not in state and k not in model_head)
    unexpected = sorted(k for k in state if k not in targets and k not in file_head)
    plan, mismatched = [], []
    for key in sorted(set(targets) & set(state) - model_head):
        variable, layout = targets[key]
        value = timm_keys.to_keras(np.asarray(state[key]), layout)
        if key == "pos_embed":
            value = _plan_position_embedding(model, value, variable, report)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(
                f"{key}: file {shape_str(state[key].shape)} (as Keras {shape_str(value.shape)}) "
                f"vs model {shape_str(variable.shape)}"
            )
            continue
        plan.append((variable, value))
    if missing or unexpected or mismatched:
        parts = [
            f"The checkpoint '{report.path}' does not fit model '{model.name}'; nothing was loaded.",
            f"  the model is {describe_model(model)}; the file holds {describe_state(state)}.",
        ]
        if missing:
            parts.append(
                listing(
                    "missing from the file (model key, model shape in timm layout)",
                    [f"{k} {_timm_shape(*targets[k])}" for k in missing],
                )
            )
        if unexpected:
            parts.append(
                listing(
                    "unexpected in the file (file key, shape)",
                    [f"{k} {shape_str(np.shape(state[k]))}" for k in unexpected],
                )
            )
        if mismatched:
            parts.append(listing("shape mismatches", mismatched))
        parts.append("Build the model with the checkpoint's architecture (variant, tokens, pooling, depth, widths).")
        raise CheckpointError("\n".join(parts))
    plan.extend(_plan_head(targets, state, model_head, file_head, report))
    return plan


_HEAD_GROUPS = ((("pre_logits.",), "pre-logits layer"), (("head.", "head_dist."), "classifier head"))


def _plan_head(targets, state, model_head, file_head, report: LoadReport) -> list[tuple[object, np.ndarray]]:
    """Loads the pre-logits layer and the classifier when they fit; otherwise keeps the model's own, saying so."""
    plan: list[tuple[object, np.ndarray]] = []
    for prefixes, label in _HEAD_GROUPS:
        model_keys = sorted(k for k in model_head if k.startswith(prefixes))
        file_keys = sorted(k for k in file_head if k.startswith(prefixes))
        if not model_keys and not file_keys:
            continue
        if model_keys and all(k in state and _fits(state, targets, k) for k in model_keys):
            plan += [(targets[k][0], timm_keys.to_keras(np.asarray(state[k]), targets[k][1])) for k in model_keys]
            action, extra = "loaded", sorted(set(file_keys) - set(model_keys))
            if extra:
                warnings.warn(f"Dropping checkpoint keys the model has no layer for: {extra}.", stacklevel=5)
        elif not model_keys:
            action, extra = "dropped", file_keys
            classes = f" ({state['head.bias'].shape[0]} classes)" if "head.bias" in file_keys else ""
            warnings.warn(f"The model has no {label}; dropping the checkpoint's {file_keys}{classes}.", stacklevel=5)
        elif not file_keys:
            action, extra = "absent", []
            warnings.warn(
                f"The checkpoint has no {label}; the model keeps its freshly initialised {model_keys}. "
                "Train it before use.",
                stacklevel=5,
            )
        else:
            action, extra = "replaced", file_keys
            shapes = ", ".join(
                f"{k} {shape_str(np.shape(state[k]))} vs {_timm_shape(*targets[k])}" for k in model_keys if k in state
            )
            warnings.warn(
                f"{label.capitalize()} not loaded: it does not fit the model (file vs model: {shapes}); "
                f"the model keeps its new, freshly initialised {model_keys} (fine-tune it).",
                stacklevel=5,
            )
        report.skipped += extra
        if label == "classifier head" or report.head == "loaded":
            report.head = action
    return plan


def load_state_dict(
    model, state: dict[str, np.ndarray], *, path: str = "<state>", format: str = "state", flavor: str = "timm"
) -> LoadReport:
    """Loads a timm-keyed state dict into `model`, all or nothing.

    Args:
        model: a keras_vit ViT (any Keras model with keras_vit layer names).
        state: timm key -> array (PyTorch layouts).

    Returns:
        A `LoadReport`.
    """
    report = LoadReport(path=path, format=format, flavor=flavor)
    plan = plan_assignments(model, state, report)
    for variable, value in plan:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    report.loaded = len(plan)
    return report


def _keras_error_summary(error: Exception) -> str:
    """The useful part of a Keras loading error (its messages embed whole tensors)."""
    text = str(error)
    parts = [f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"]
    where = re.search(r"Variable path=([^,\s]+)", text)
    shapes = re.search(r"variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)", text)
    if where:
        parts.append(f"first bad variable {where.group(1)}")
    if shapes:
        parts.append(shapes.group(0))
    return "; ".join(parts)


def _load_keras_weights(model, path: str) -> LoadReport:
    """`.weights.h5`: loads into a copy first, so a mismatch leaves `model` untouched."""
    scratch = model.__class__.from_config(model.get_config())
    try:
        scratch.load_weights(path)
    except Exception as error:  # noqa: BLE001  (Keras raises several types for mismatches and damaged files)
        raise CheckpointError(
            f"'{path}' does not fit model '{model.name}' or is damaged "
            f"({_keras_error_summary(error)}). Build the model with the architecture that saved it. Nothing was loaded."
        ) from None
    for target, source in zip(model.weights, scratch.weights):
        target.assign(source)
    return LoadReport(path=path, format=formats.KERAS_H5, flavor="keras", loaded=len(model.weights))


def load_pretrained(model, path: str, sha256: str | None = None) -> LoadReport:
    """Loads any supported checkpoint file, or a catalogued checkpoint name, into `model`.

    Detects the format (timm or Hugging Face safetensors, including the CLIP,
    SigLIP and DINOv2 vision towers of `transformers`, original JAX `.npz`,
    keras_vit `.weights.h5`), maps every key, resamples the position embedding
    to the model's grid, and keeps the model's own classifier when the class
    count differs (with a warning). A Hugging Face checkpoint's `config.json`
    beside it is honoured: the model must agree with its architecture, and
    adopts its LayerNorm epsilon. Nothing is written unless everything fits.

    Args:
        model: a keras_vit `ViT`/`DeiT` (or any model with their layer names).
        path: str. A file, a folder written by Hugging Face's `save_pretrained`,
            or a name from `keras_vit.weights.list_checkpoints()` (downloaded
            once into the Keras cache).
        sha256: optional hex digest the file must have.

    Returns:
        A `LoadReport`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        from keras_vit.weights import catalog

        if path in catalog.CHECKPOINTS:
            entry = catalog.CHECKPOINTS[path]
            path = catalog.download_checkpoint(path)
            sha256 = sha256 or entry.sha256
        else:
            raise CheckpointError(
                f"Checkpoint file '{path}' does not exist, and it is not a catalogued name "
                f"(see keras_vit.weights.list_checkpoints()). Check the path."
            )
    if sha256 is not None:
        verify_sha256(path, sha256)
    path = checkpoint_in_folder(path)
    if hasattr(model, "load_checkpoint_file"):  # a family with its own key map (BEiT) reads the file itself
        return model.load_checkpoint_file(path)
    from keras_vit.weights import mae_hf  # an MAE checkpoint (.keras, HF or paper keys): load its encoder

    mae_state = mae_hf.encoder_state(path, model)
    if mae_state is not None:
        return load_state_dict(model, mae_state, path=path, format="mae", flavor="mae")
    if formats.detect_format(path) == formats.KERAS_H5:
        return _load_keras_weights(model, path)
    tower = hf_towers.read_tower(path)  # a CLIP/SigLIP/DINOv2 vision tower from transformers
    if tower is not None:
        return _load_tower(model, tower)
    checkpoint = formats.read_checkpoint(path)
    config_path = hf_config.config_beside(path) if checkpoint.flavor == "hf" else None
    if config_path is None:
        return load_state_dict(model, checkpoint.state, path=path, format=checkpoint.format, flavor=checkpoint.flavor)
    arch = hf_config.config_arch(hf_config.read_hf_config(config_path), config_path)
    hf_config.check_state(arch, checkpoint.state, config_path, path)
    hf_config.check_model(model, arch, config_path)
    report = load_state_dict(model, checkpoint.state, path=path, format=checkpoint.format, flavor=checkpoint.flavor)
    report.config = config_path
    report.layer_norm_epsilon = hf_config.adopt_layer_norm_epsilon(model, arch["layer_norm_epsilon"], config_path)
    return report


def _load_tower(model, tower: hf_towers.Tower) -> LoadReport:
    """A Hugging Face vision tower, checked against its config.json (when beside it) like a ViT checkpoint."""
    hf_towers.check_model(model, tower)
    resampled = hf_towers.resample_position_table(model, tower)
    report = load_state_dict(model, tower.state, path=tower.path, format=formats.SAFETENSORS, flavor="hf")
    report.skipped, report.resampled = report.skipped + tower.skipped, resampled
    if tower.arch is not None:
        report.config = tower.config_path
        epsilon = tower.arch["layer_norm_epsilon"]
        report.layer_norm_epsilon = hf_config.adopt_layer_norm_epsilon(model, epsilon, tower.config_path)
    return report


def checkpoint_in_folder(path: str) -> str:
    """A folder written by Hugging Face's `save_pretrained` stands for its `model.safetensors`; a file for itself."""
    if not os.path.isdir(path):
        return path
    weights = os.path.join(path, "model.safetensors")
    if os.path.isfile(weights):
        return weights
    if os.path.isfile(os.path.join(path, "model.safetensors.index.json")):
        raise CheckpointError(
            f"'{path}' holds a sharded checkpoint (model.safetensors.index.json), which keras_vit does not read. "
            "Save it as one file: model.save_pretrained(folder, max_shard_size='100GB')."
        )
    if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        raise formats.pickle_refusal(os.path.join(path, "pytorch_model.bin"))
    raise CheckpointError(
        f"Folder '{path}' holds no model.safetensors (the file Hugging Face's save_pretrained writes). "
        "Pass the checkpoint file itself."
    )


def save_weights(model, path: str) -> str:
    """Saves `model`'s weights to `.weights.h5` (Keras) or `.safetensors` (timm keys), atomically.

    The safetensors file loads into timm's `VisionTransformer` of the same
    architecture with `load_state_dict` and back into keras_vit.

    Args:
        model: a keras_vit model.
        path: str. Ends in `.weights.h5` or `.safetensors`.

    Returns:
        The path written.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        metadata = {"format": "pt", "keys": "timm", "producer": "keras_vit"}
        keys = getattr(model, "checkpoint_keys", timm_keys)  # families with their own key map (EVA, BEiT) name it
        write_safetensors(path, keys.model_state_dict(model), metadata)
        return path
    if path.endswith(".weights.h5"):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
        try:
            model.save_weights(temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return path
    raise ValueError(f"Weights can be saved as '.weights.h5' or '.safetensors'. Received: path={path!r}")


__all__ = ["LoadReport", "load_pretrained", "load_state_dict", "plan_assignments", "save_weights"]
