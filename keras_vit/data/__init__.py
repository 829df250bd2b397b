"""Input pipelines: data set readers, preprocessing from a model spec, augmentation.

source = keras_vit.data.load_source("digits", "train")
prep = keras_vit.data.Preprocessing.from_spec(keras_vit.model_spec("vit_digits_patch2_8"))
train = keras_vit.data.make_pipeline(source, prep, 64, training=True, seed=0)
"""

from keras_vit.data.augment import Augment, MixupCutmix
from keras_vit.data.cifar import cifar_arrays, load_cifar_source
from keras_vit.data.digits import digits_arrays, load_digits_source
from keras_vit.data.folder import load_folder_source, verify_images
from keras_vit.data.pipeline import make_pipeline
from keras_vit.data.preprocessing import Preprocessing, TrainCrop
from keras_vit.data.sources import ImageSource, array_source, split_source, subset_source
from keras_vit.data.tfds import load_tfds_source

DATASETS = ("digits", "cifar10", "cifar100", "folder", "tfds:<name>")


def load_source(name: str, split: str = "train", data_dir: str | None = None, **kwargs) -> ImageSource:
    """Reads one split of a named data set.

    Args:
        name: "digits" (offline, scikit-learn), "cifar10", "cifar100",
            "folder" (class subfolders under `data_dir`) or "tfds:<name>".
        split: "train" or "test" ("val" for folders; any TFDS split string).
        data_dir: local copy (CIFAR, required for "folder"; TFDS data dir).
        **kwargs: reader options: `label_mode` (CIFAR-100), `num_channels` and
            `verify` (folders), `download` (TFDS).

    Returns:
        An `ImageSource`.
    """
    if name == "digits":
        return load_digits_source(split, **kwargs)
    if name in ("cifar10", "cifar100"):
        return load_cifar_source(name, split, data_dir, **kwargs)
    if name == "folder":
        if not data_dir:
            raise ValueError(
                "Data set 'folder' needs data_dir: the folder with one subfolder per class "
                "(or train/ and val/ folders)."
            )
        return load_folder_source(data_dir, split, **kwargs)
    if name.startswith("tfds:"):
        return load_tfds_source(name[5:], split, data_dir, **kwargs)
    raise ValueError(f"Unknown data set {name!r}. Expected one of {DATASETS}.")


__all__ = [
    "DATASETS",
    "Augment",
    "ImageSource",
    "MixupCutmix",
    "Preprocessing",
    "TrainCrop",
    "array_source",
    "cifar_arrays",
    "digits_arrays",
    "load_cifar_source",
    "load_digits_source",
    "load_folder_source",
    "load_source",
    "load_tfds_source",
    "make_pipeline",
    "split_source",
    "subset_source",
    "verify_images",
]
