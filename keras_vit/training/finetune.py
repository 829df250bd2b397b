"""Fine-tuning helpers: start from a trained model, new head, frozen backbone for linear probes."""

from __future__ import annotations

import warnings

import keras

HEAD_LAYERS = ("head", "head_dist")


def transfer_weights(source: keras.Model, target: keras.Model, skip: tuple[str, ...] = ()) -> list[str]:
    """Copies weights layer by layer (matched by name) from `source` into `target`.

    Layers whose weight shapes differ (a head with another class count) and
    layers named in `skip` keep the target's initial weights. Position
    embeddings of another grid are resampled first when `source` can
    (`ViT.with_image_size`).

    Returns:
        Names of the target layers left untouched. Body layers (not a head or
        in `skip`) left untouched are also named in a `UserWarning`.

    Raises:
        ValueError: when no layer's weights fit (another architecture), which
            would otherwise leave `target` silently at its random start.
    """
    source_size = getattr(getattr(source, "config", None), "image_size", None)
    target_size = getattr(getattr(target, "config", None), "image_size", None)
    if source_size is not None and target_size is not None and source_size != target_size:
        source = source.with_image_size(target_size)
    by_name = {layer.name: layer for layer in source.layers}
    untouched = []
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name.get(layer.name)
        new = other.get_weights() if other is not None and layer.name not in skip else None
        if new is None or [w.shape for w in new] != [w.shape for w in weights]:
            untouched.append(layer.name)
            continue
        layer.set_weights(new)
    if untouched and len(untouched) == sum(1 for layer in target.layers if layer.get_weights()):
        raise ValueError(
            f"No weights of {source.name!r} fit {target.name!r}: the layer names or shapes all differ "
            f"(another architecture). Start from a model of the same variant, or pick the variant "
            f"of the source model."
        )
    body = [name for name in untouched if name not in HEAD_LAYERS and name not in skip]
    if body:
        warnings.warn(
            f"transfer_weights: these layers of {target.name!r} kept their initial weights, their "
            f"names or shapes differ in {source.name!r}: {body}",
            stacklevel=2,
        )
    return untouched


def freeze_backbone(model: keras.Model, trainable: tuple[str, ...] = HEAD_LAYERS) -> None:
    """Linear probe: makes every layer untrainable except those named in `trainable` (the head)."""
    names = {layer.name for layer in model.layers}
    if not names & set(trainable):
        raise ValueError(
            f"None of the layers {trainable} exists in {model.name}; a linear probe needs a head. "
            "Build the model with num_classes > 0."
        )
    for layer in model.layers:
        layer.trainable = layer.name in trainable


def unfreeze(model: keras.Model) -> None:
    """Makes every layer trainable again (full fine-tuning after a probe)."""
    for layer in model.layers:
        layer.trainable = True
