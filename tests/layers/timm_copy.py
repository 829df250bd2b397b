"""Copies a timm (torch) module's parameters into the keras_vit layer that mirrors it, by timm's names.

timm's parameter path `a.b.weight` names the Keras sublayer `layer.a.b`; a
Linear's weight is the transposed Dense kernel, a norm's weight its `gamma`
(LayerNorm) or `scale` (RMSNorm). Every Keras weight must be filled exactly
once, so a missing or extra parameter on either side fails the copy.
"""

import keras
import numpy as np
import torch

from keras_vit import layers as L


def perturb(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Adds noise to every parameter, so ones/zeros initializations hide no mapping error."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(std * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def _target(layer, path):
    for part in path:
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def copy_from_torch(layer: keras.layers.Layer, module: torch.nn.Module) -> None:
    """Assigns each of `module`'s parameters to the matching variable of `layer` (already built)."""
    filled = set()
    for name, parameter in module.named_parameters():
        *path, leaf = name.split(".")
        target = _target(layer, path)
        value = parameter.detach().numpy()
        if isinstance(target, keras.layers.Dense):
            variable = target.kernel if leaf == "weight" else target.bias
            value = value.T if leaf == "weight" else value
        elif isinstance(target, keras.layers.LayerNormalization):
            variable = target.gamma if leaf == "weight" else target.beta
        elif isinstance(target, L.RMSNorm):
            variable = target.scale
        else:
            variable = getattr(target, leaf)
        assert tuple(variable.shape) == value.shape, (name, variable.shape, value.shape)
        variable.assign(value)
        filled.add(variable.path)
    unfilled = {v.path for v in layer.weights} - filled
    assert not unfilled, f"Keras weights without a timm parameter: {sorted(unfilled)}"


def torch_forward(module: torch.nn.Module, x: np.ndarray, *args, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x), *args, **kwargs).numpy()
