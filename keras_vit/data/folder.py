"""Image folders with one subfolder per class (the ImageNet layout), JPEG or PNG.

    root/train/<class>/*.jpg      root/val/<class>/*.png      (or root/<class>/... for one split)

Class indices follow the sorted subfolder names of the training split. Bad
data is reported before training with the offending path: an empty class
folder, a file that is not a JPEG/PNG, or (with `verify="full"`, the default) a
file that does not decode, e.g. a truncated download.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_vit.data.sources import ImageSource
from keras_vit.validation import check_choice

EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
VERIFY_MODES = ("full", "header", "none")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def split_folder(root: str, split: str) -> str:
    """The folder of `split` under `root`: `root/<split>` when it exists, else `root` itself for "train"."""
    if not os.path.isdir(root):
        raise ValueError(
            f"Image folder {root!r} does not exist. Pass a folder holding one subfolder per class "
            "(or train/ and val/ folders that do)."
        )
    if split not in SPLIT_DIRS:
        raise ValueError(f"Image folders have splits {tuple(SPLIT_DIRS)}. Received: split={split!r}")
    for name in SPLIT_DIRS[split]:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    if split == "train" and not any(os.path.isdir(os.path.join(root, n)) for d in SPLIT_DIRS.values() for n in d):
        return root
    raise ValueError(f"No {split!r} folder under {root!r}; expected one of {SPLIT_DIRS[split]}.")


def list_images(folder: str, class_names: tuple[str, ...] | None = None) -> tuple[list[str], list[int], tuple]:
    """Paths and labels of every JPEG/PNG under `folder/<class>/`, classes in sorted order.

    Args:
        folder: a folder with one subfolder per class.
        class_names: the classes to expect (from the training split); None
            takes the sorted subfolders of `folder`.

    Returns:
        (paths, labels, class_names).
    """
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise ValueError(f"{folder!r} has no class subfolders. Put each class's images in its own subfolder.")
    if class_names is None:
        class_names = tuple(found)
    elif tuple(found) != tuple(class_names):
        missing, extra = sorted(set(class_names) - set(found)), sorted(set(found) - set(class_names))
        raise ValueError(
            f"Class folders of {folder!r} differ from the training split's: missing {missing}, "
            f"extra {extra}. Every split needs the same class subfolders."
        )
    paths, labels = [], []
    for index, name in enumerate(class_names):
        class_dir = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(EXTENSIONS) and not f.startswith("."))
        if not files:
            raise ValueError(
                f"Class folder {class_dir!r} holds no JPEG or PNG images. Add images or remove the folder."
            )
        paths.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([index] * len(files))
    return paths, labels, class_names


def verify_images(paths: list[str], mode: str = "full") -> None:
    """Raises `ValueError` naming the first file that is not a readable JPEG/PNG.

    Args:
        paths: image files.
        mode: "full" decodes every file (finds truncated files), "header"
            checks the format signature only (fast), "none" skips the check.
    """
    check_choice(mode, "verify", VERIFY_MODES)
    if mode == "none":
        return
    for path in paths:
        with open(path, "rb") as file:
            head = file.read(8)
        if not (head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC)):
            raise ValueError(f"Corrupt or unsupported image {path!r}: not a JPEG or PNG file. Remove or replace it.")
        if mode == "full":
            try:
                tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(
                    f"Corrupt image {path!r}: it does not decode ({message}). Remove or replace it."
                ) from None


def load_folder_source(
    root: str,
    split: str = "train",
    num_channels: int = 3,
    verify: str = "full",
    class_names: tuple[str, ...] | None = None,
) -> ImageSource:
    """An image-folder split as an `ImageSource` of variable-size images.

    Args:
        root: the data folder (see the module docstring).
        split: "train", "val" or "test".
        num_channels: 1 (grey) or 3 (RGB); images are converted on decode.
        verify: "full", "header" or "none"; see `verify_images`.
        class_names: classes of the training split (for "val"/"test"); None
            reads them from the training folder.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3. Received: num_channels={num_channels}")
    if class_names is None and split != "train":
        class_names = list_images(split_folder(root, "train"))[2]
    paths, labels, class_names = list_images(split_folder(root, split), class_names)
    verify_images(paths, verify)

    def make():
        return tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))

    def decode(path, label):
        contents = tf.io.read_file(path)
        head = tf.strings.substr(contents, 0, 8)
        ok = tf.logical_or(tf.strings.substr(head, 0, 3) == _JPEG_MAGIC, head == _PNG_MAGIC)
        with tf.control_dependencies([tf.debugging.Assert(ok, ["Corrupt image (not JPEG/PNG):", path])]):
            image = tf.io.decode_image(contents, channels=num_channels, expand_animations=False)
        image = tf.image.convert_image_dtype(image, tf.float32)
        image.set_shape([None, None, num_channels])
        return image, label

    return ImageSource(f"folder:{root}", split, len(paths), tuple(class_names), num_channels, None, make, decode)
