"""`keras-vit train | finetune | evaluate`: run recipes from the command line.

    keras-vit train                                   # digits_vit, offline: trains, evaluates, writes runs/<...>/
    keras-vit train --recipe cifar10_vit_scratch --epochs 200 --batch_size 256 --strategy mirrored
    keras-vit finetune --init runs/<run>/model.keras --recipe vit_finetune --data_dir ~/data
    keras-vit evaluate --model_path runs/<run>/model.keras
    keras-vit train --set lr=3e-3 --set mixup_alpha=0.2          # any recipe setting

Every check (recipe, flags, batch split across replicas, data path, model
file) runs before training starts; a bad value exits with a one-line error.
"""

from __future__ import annotations

import json
import os

from absl import flags

FLAGS = flags.FLAGS
DEFAULT_RECIPES = {
    "pretrain": "mae_pretrain",
    "train": "digits_vit",
    "finetune": "vit_finetune",
    "evaluate": "digits_vit",
}
XLA = {"on": True, "off": False, "auto": "auto"}


def _define(define, name, default, *args):
    """Defines a flag unless another command module of this process already did (absl flags are global)."""
    if name not in FLAGS:
        define(name, default, *args)


_define(
    flags.DEFINE_string,
    "recipe",
    None,
    "Recipe name (keras-vit train --recipe list shows them). "
    "Defaults: train/evaluate digits_vit, finetune vit_finetune.",
)
_define(flags.DEFINE_integer, "epochs", None, "Epochs (default: the recipe's).")
_define(flags.DEFINE_integer, "batch_size", None, "Global batch size, split across replicas (default: the recipe's).")
_define(
    flags.DEFINE_enum,
    "strategy",
    None,
    ["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy (default: the recipe's, auto).",
)
_define(
    flags.DEFINE_boolean,
    "mixed_precision",
    None,
    "Mixed precision on (float16 on GPU, bfloat16 on CPU) or off (--nomixed_precision). "
    "Default: the recipe's, 'auto' = mixed bfloat16 where the CPU/GPU has native bfloat16 (on a CPU: models at "
    "least 128 wide).",
)
_define(
    flags.DEFINE_enum,
    "xla",
    None,
    list(XLA),
    "XLA compilation on, off or auto (default: the recipe's, auto = "
    "on a CPU when training a model narrower than 128 in float32).",
)
_define(flags.DEFINE_string, "data_dir", None, "Local copy of the data (CIFAR folder, image folder, TFDS dir).")
_define(flags.DEFINE_string, "dataset", None, "Data set: digits, cifar10, cifar100, folder or tfds:<name>.")
_define(flags.DEFINE_string, "model", None, "Registered model name (default: the recipe's).")
_define(
    flags.DEFINE_string,
    "run_dir",
    None,
    "Run folder (default runs/<recipe>-<timestamp>); rerun with the same folder to resume a killed run.",
)
_define(flags.DEFINE_string, "init", None, "A trained .keras model to start from (finetune).")
_define(flags.DEFINE_string, "model_path", None, "The .keras model to evaluate (evaluate).")
_define(flags.DEFINE_integer, "seed", None, "Seed of data order, augmentation and initialisation.")
_define(flags.DEFINE_multi_string, "set", [], "Any recipe setting as key=value (Python literal), repeatable.")
_define(
    flags.DEFINE_integer,
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (try 'mirrored' without GPUs); 0 leaves it alone.",
)


def overrides_from_flags(command: str, recipe) -> dict:
    """Recipe overrides given by the flags of `command`."""
    from keras_vit.recipes.config import parse_settings

    overrides = parse_settings(FLAGS.set, recipe)
    for flag, field in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("strategy", "strategy"),
        ("mixed_precision", "mixed_precision"),
        ("data_dir", "data_dir"),
        ("dataset", "dataset"),
        ("model", "model"),
        ("run_dir", "run_dir"),
        ("seed", "seed"),
    ):
        value = getattr(FLAGS, flag)
        if value is not None:
            overrides[field] = value
    if FLAGS.xla is not None:
        overrides["jit_compile"] = XLA[FLAGS.xla]
    if FLAGS.init is not None:
        overrides["init_from"] = FLAGS.init
    from keras_vit.models.cli import require_image_model, require_image_model_file

    require_image_model(overrides.get("model", recipe.model), command)
    require_image_model_file(overrides.get("init_from"), command, "init")
    require_image_model_file(FLAGS.model_path, command, "model_path")
    if command == "finetune" and overrides.get("init_from", recipe.init_from) is None:
        raise ValueError("finetune needs --init: the .keras model to start from (e.g. runs/<run>/model.keras).")
    return overrides


def split_cpu(count: int) -> None:
    """Splits the first CPU into `count` logical devices; must run before TensorFlow initialises devices."""
    import tensorflow as tf

    if count < 0:
        raise ValueError(f"--cpu_devices must be >= 0. Received: --cpu_devices={count}")
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise ValueError("--cpu_devices must be set before TensorFlow starts; run it as a fresh command.") from None


def main(argv: list[str]) -> None:
    from keras_vit.recipes import evaluate, get_recipe, list_recipes

    command, extra = argv[0], argv[1:]
    if extra:
        raise ValueError(f"Unexpected arguments {extra}. Settings are flags, e.g. --epochs 5 or --set lr=1e-3.")
    if FLAGS.recipe == "list":
        for name in list_recipes():
            print(f"{name:<22} {get_recipe(name).description}")
        return
    recipe = get_recipe(FLAGS.recipe or DEFAULT_RECIPES.get(command, "digits_vit"))
    split_cpu(FLAGS.cpu_devices)
    if command == "evaluate":
        if not FLAGS.model_path:
            raise ValueError("evaluate needs --model_path: the .keras model to evaluate (e.g. runs/<run>/model.keras).")
        overrides = overrides_from_flags(command, recipe)
        overrides.pop("run_dir", None)
        metrics = evaluate(FLAGS.model_path, recipe, **overrides)
        print(json.dumps(metrics, indent=2))
        return
    overrides = overrides_from_flags(command, recipe)
    import keras

    from keras_vit.recipes.runner import fit_prepared, prepare

    policy = keras.mixed_precision.global_policy().name
    try:
        parts = prepare(recipe, **overrides)  # every check runs here, before training
        print(
            f"keras-vit {command}: recipe {parts.recipe.name}, run folder {os.path.abspath(parts.run_dir)}", flush=True
        )
        result = fit_prepared(parts)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    summary = {k: v for k, v in result.metrics.items() if k.startswith("test_") or k in ("train_seconds", "epochs")}
    print(json.dumps(summary, indent=2))
    print(f"run folder: {os.path.abspath(result.run_dir)}")
    print("  " + "  ".join(run_folder_entries(result.run_dir)))


def run_folder_entries(run_dir: str) -> list[str]:
    """What a run folder holds (folders marked `/`), in the order a reader looks for it."""
    first = ("model.keras", "metrics.json", "history.csv", "learning_curve.png", "recipe.json")
    entries = [name + "/" if os.path.isdir(os.path.join(run_dir, name)) else name for name in os.listdir(run_dir)]
    return sorted(entries, key=lambda name: (first.index(name) if name in first else len(first), name))
