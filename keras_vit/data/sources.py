"""`ImageSource`: one split of an image data set, before any preprocessing.

Every reader (digits, CIFAR, image folders, TFDS) returns the same thing: a
function that makes a `tf.data.Dataset` of `(image, label)` with float32
images in [0, 1] (HWC) and int32 labels, plus what the pipeline needs to know
(size, classes, channels). Preprocessing and batching live in `pipeline.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One split of an image data set.

    Attributes:
        name: data set name, e.g. "digits" or "cifar10".
        split: split name, e.g. "train" or "test".
        num_examples: number of examples.
        class_names: one name per class; `len(class_names)` is the class count.
        num_channels: channels of the decoded images (1 grey, 3 RGB).
        image_size: (height, width) when every image has it, else None.
        make: function returning an unbatched `tf.data.Dataset` of
            `(float32 image in [0, 1], int32 label)`. Cheap ops only before
            `decode` so shuffling file names stays cheap.
        decode: function mapping an element of `make()` to `(image, label)`;
            identity for in-memory arrays, file reading for folders.
    """

    name: str
    split: str
    num_examples: int
    class_names: tuple[str, ...]
    num_channels: int
    image_size: tuple[int, int] | None
    make: Callable[[], tf.data.Dataset]
    decode: Callable | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self) -> tf.data.Dataset:
        """The decoded, unbatched data set of `(image, label)`."""
        ds = self.make()
        if self.decode is not None:
            ds = ds.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE)
        return ds

    def as_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels as arrays (small data sets: tests, linear probes)."""
        images, labels = [], []
        for image, label in self.dataset().batch(1024):
            images.append(image.numpy())
            labels.append(label.numpy())
        return np.concatenate(images), np.concatenate(labels)


def array_source(
    name: str,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names,
    scale: float = 255.0,
) -> ImageSource:
    """An `ImageSource` over in-memory arrays `images` (N, H, W, C) scaled to [0, 1] by `1 / scale`."""
    images = np.asarray(images)
    labels = np.asarray(labels).astype("int32").reshape(-1)
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape (N, H, W, C). Received: images.shape={images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {name}/{split}.")
    class_names = tuple(str(c) for c in class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"Labels of {name}/{split} must lie in [0, {len(class_names)}). "
            f"Received: labels in [{labels.min()}, {labels.max()}]"
        )

    def make():
        return tf.data.Dataset.from_tensor_slices((images, labels))

    def decode(image, label):
        return tf.cast(image, tf.float32) / scale, label

    return ImageSource(name, split, len(labels), class_names, images.shape[3], tuple(images.shape[1:3]), make, decode)


def split_source(source: ImageSource, fraction: float, seed: int) -> tuple[ImageSource, ImageSource]:
    """Splits off a `fraction` of `source` (fixed by `seed`) as a validation source.

    Returns:
        (rest, held_out) sources; examples are assigned by a seeded permutation.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1). Received: fraction={fraction}")
    count = int(round(source.num_examples * fraction))
    if count == 0 or count == source.num_examples:
        raise ValueError(
            f"A fraction {fraction} of {source.num_examples} examples leaves an empty split; choose a fraction "
            f"between {1 / source.num_examples:.3g} and {1 - 1 / source.num_examples:.3g}."
        )
    order = np.random.default_rng(seed).permutation(source.num_examples)
    held = np.zeros(source.num_examples, bool)
    held[order[:count]] = True
    mask = tf.constant(held)

    def pick(keep_held: bool):
        def make():
            ds = source.make().enumerate()
            ds = ds.filter(lambda i, _: tf.equal(tf.gather(mask, i), keep_held))
            return ds.map(lambda _, element: element)

        return make

    rest = dataclasses.replace(
        source, split=f"{source.split}[rest]", num_examples=source.num_examples - count, make=pick(False)
    )
    held_out = dataclasses.replace(source, split=f"{source.split}[held-out]", num_examples=count, make=pick(True))
    return rest, held_out


def subset_source(
    source: ImageSource,
    classes=None,
    per_class: int | None = None,
    seed: int = 0,
    part: tuple[float, float] | None = None,
) -> ImageSource:
    """Keeps a part of a split, some classes (relabelled 0..k-1 in the given order) and/or `per_class` of each.

    Used for transfer experiments (pretrain on one part or some classes,
    fine-tune on another) and small-data budgets. Reads the split into memory.

    Args:
        source: the split.
        classes: class indices to keep, or None for all.
        per_class: examples kept per class (seeded choice), or None for all.
        seed: fixes which examples are kept.
        part: (start, end) fractions of a seeded shuffle of the split, applied
            first: (0, 0.5) and (0.5, 1) are two disjoint halves.
    """
    images, labels = source.as_numpy()
    if part is not None:
        start, end = (float(f) for f in part)
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"`part` must be (start, end) with 0 <= start < end <= 1. Received: part={part}")
        order = np.random.default_rng(seed).permutation(len(labels))
        keep_part = np.sort(order[int(start * len(labels)) : int(end * len(labels))])
        images, labels = images[keep_part], labels[keep_part]
    classes = tuple(range(source.num_classes)) if classes is None else tuple(int(c) for c in classes)
    bad = [c for c in classes if not 0 <= c < source.num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise ValueError(
            f"`classes` must be distinct indices in [0, {source.num_classes}) of {source.name}. "
            f"Received: classes={classes}"
        )
    if per_class is not None and (not isinstance(per_class, int) or per_class <= 0):
        raise ValueError(f"`per_class` must be a positive int or None. Received: per_class={per_class!r}")
    rng = np.random.default_rng(seed)
    keep, new_labels = [], []
    for new, old in enumerate(classes):
        index = np.flatnonzero(labels == old)
        if per_class is not None:
            if len(index) < per_class:
                raise ValueError(
                    f"Class {old} of {source.name}/{source.split} has {len(index)} examples, fewer than "
                    f"per_class={per_class}."
                )
            index = np.sort(rng.choice(index, per_class, replace=False))
        keep.append(index)
        new_labels.append(np.full(len(index), new))
    keep = np.concatenate(keep)
    split = (
        f"{source.split}[classes={list(classes)}{'' if per_class is None else f', {per_class}/class'}"
        f"{'' if part is None else f', part={tuple(part)}'}]"
    )
    names = tuple(source.class_names[c] for c in classes)
    return array_source(source.name, split, images[keep], np.concatenate(new_labels), names, scale=1.0)
