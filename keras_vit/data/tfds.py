"""Any TensorFlow Datasets image-classification data set (optional extra `keras-vit[tfds]`)."""

from __future__ import annotations

import tensorflow as tf

from keras_vit.data.sources import ImageSource


def load_tfds_source(
    name: str, split: str = "train", data_dir: str | None = None, download: bool = True
) -> ImageSource:
    """A TFDS split (`as_supervised`: image and label features) as an `ImageSource`.

    Args:
        name: TFDS builder name, e.g. "cifar10" or "oxford_flowers102".
        split: TFDS split string, e.g. "train", "test" or "train[:90%]".
        data_dir: where TFDS keeps prepared data; None uses its default.
        download: whether TFDS may download and prepare the data set.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(f"Data set 'tfds:{name}' needs TensorFlow Datasets: pip install 'keras-vit[tfds]'.") from None
    try:
        dataset, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            with_info=True,
            download=download,
            shuffle_files=False,
        )
    except Exception as error:  # noqa: BLE001  (TFDS raises many types, from unknown names to failed downloads; re-raised with the data set named)
        raise ValueError(f"TFDS could not load {name!r} split {split!r}: {error}") from None
    image_feature, label_feature = info.features["image"], info.features["label"]
    names = getattr(label_feature, "names", None) or [str(i) for i in range(label_feature.num_classes)]
    shape = image_feature.shape
    size = tuple(shape[:2]) if None not in shape[:2] else None
    try:
        num_examples = info.splits[split].num_examples
    except KeyError:  # split metadata missing (e.g. tfds.testing.mock_data): count the examples
        num_examples = int(dataset.cardinality())
        if num_examples < 0:
            num_examples = int(dataset.reduce(0, lambda count, _: count + 1))

    def decode(image, label):
        return tf.image.convert_image_dtype(image, tf.float32), tf.cast(label, tf.int32)

    return ImageSource(f"tfds:{name}", split, num_examples, tuple(names), shape[-1], size, lambda: dataset, decode)
