"""Shared helpers of the parity tests: random reference models, saving them, running both sides."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file

TOLERANCE = 1e-4  # max abs difference, float32


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fills every parameter with seeded noise (norm scales around 1), so no weight is trivially 0 or 1.

    Reference initialisations leave class tokens, biases and LayerScale at
    constants; parity on such weights would not catch a transposed or swapped tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            is_norm_scale = parameter.ndim == 1 and ("norm" in name) and name.endswith("weight")
            parameter.copy_(noise + (1.0 if is_norm_scale else 0.0))
    return module.eval()


def save_state(module: torch.nn.Module, path) -> str:
    """Saves a module's state dict as safetensors, the way timm/HF publish it."""
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def images(batch: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, size, size, channels)).astype("float32")


def to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def timm_forward(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and each block's output tokens of a timm ViT (hooks on `model.blocks`)."""
    blocks: list[np.ndarray] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: blocks.append(out.detach().numpy())) for b in model.blocks]
    try:
        with torch.no_grad():
            logits = model(to_torch(x)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return logits, blocks


def max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())
