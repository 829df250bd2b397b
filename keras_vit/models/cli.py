"""`keras-vit list [PATTERN]` and `keras-vit info NAME`, as a table or `--json`.

Also holds the check the other commands use to turn a sequence model away with
a message that says what to use instead.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from absl import flags

if "json" not in flags.FLAGS:
    flags.DEFINE_boolean("json", False, "Print JSON instead of a table.")
FLAGS = flags.FLAGS

SEQUENCE_ALTERNATIVES = {
    "train": "train it with keras_vit.training.transformer_optimizer and LabelSmoothedSequenceLoss "
    "(see examples/sequence_transformer.py)",
    "finetune": "fine-tune it in Python with model.fit (see examples/sequence_transformer.py)",
    "evaluate": "evaluate it in Python with model.evaluate or keras_vit.training.sequence.exact_match",
    "distill": "distillation recipes train image models only; pick a ViT/DeiT student (keras-vit list)",
    "export": "export it with keras_vit.models.transformer_export.export_generate(model, path, max_length=...)",
    "visualize": "read its attention in Python; keras-vit visualize draws image attention maps of ViT/DeiT models",
    "convert": "keras-vit convert reads image-model checkpoints only; save its weights with model.save_weights",
}


def is_sequence_model(name: str) -> bool:
    """True for a registered model that reads token ids, not images (its spec has no input size)."""
    from keras_vit.models import model_spec

    return not model_spec(name).input_size


def require_image_model(name: str | None, command: str) -> None:
    """Raises a ValueError saying what to use instead when `command` gets a registered sequence model."""
    from keras_vit.models import list_models

    if not name or name not in list_models():
        return
    if is_sequence_model(name):
        instead = SEQUENCE_ALTERNATIVES.get(command, "use it from Python")
        raise ValueError(
            f"keras-vit {command} works on image models (ViT/DeiT), and {name!r} is a sequence model; "
            f"{instead}. Received: --model={name}"
        )


def require_image_model_file(path: str | None, command: str, flag: str) -> None:
    """Like `require_image_model` for a saved `.keras` file, read from its config without loading it."""
    import zipfile

    import keras

    from keras_vit.models import Transformer

    if not path or not str(path).endswith(".keras") or not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    if config.get("registered_name") == keras.saving.get_registered_name(Transformer):
        instead = SEQUENCE_ALTERNATIVES.get(command, "use it from Python")
        raise ValueError(
            f"keras-vit {command} works on image models (ViT/DeiT), and this file holds a sequence Transformer; "
            f"{instead}. Received: --{flag}={path}"
        )


def summary(name: str) -> dict[str, Any]:
    """One model's row of `keras-vit list`: name, family, parameters, input and classes."""
    from keras_vit.models import model_spec

    spec = model_spec(name)
    return {
        "name": name,
        "family": spec.family,
        "num_params": spec.num_params,
        "input_size": list(spec.input_size) or None,
        "num_classes": spec.num_classes,
    }


def _input_text(row: dict[str, Any]) -> str:
    if row["input_size"]:
        return "x".join(str(size) for size in row["input_size"])
    return f"tokens ({row['num_classes']} vocab)"


def list_command(pattern: str) -> None:
    from keras_vit.models import list_models

    rows = [summary(name) for name in list_models(pattern)]
    if FLAGS.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"No registered model matches {pattern!r}; `keras-vit list` shows them all.", file=sys.stderr)
        return
    print(f"{'name':<40} {'family':<12} {'params':>10}  input")
    for row in rows:
        print(f"{row['name']:<40} {row['family']:<12} {row['num_params'] / 1e6:>9.2f}M  {_input_text(row)}")


def info_command(name: str) -> None:
    from keras_vit.models import model_spec

    spec = model_spec(name).to_dict()
    spec["input_size"] = list(spec["input_size"]) or None
    if FLAGS.json:
        print(json.dumps(spec, indent=2))
        return
    sequence = spec["input_size"] is None
    spec["kind"] = "sequence (token ids)" if sequence else "image"
    skipped = ("input_size", "mean", "std", "crop_pct", "interpolation") if sequence else ()
    for key, value in spec.items():
        if key in skipped or value in ((), None, ""):
            continue
        if key == "arch":
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif key == "input_size":
            value = "x".join(map(str, value))
        print(f"{key:<14} {value}")


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "list":
        if len(args) > 1:
            raise ValueError(f"keras-vit list takes at most one PATTERN (quote wildcards). Received: {args}")
        list_command(args[0] if args else "*")
    elif command == "info":
        if len(args) != 1:
            raise ValueError(f"keras-vit info takes one model NAME (see `keras-vit list`). Received: {args}")
        info_command(args[0])
    else:
        raise ValueError(f"keras_vit.models.cli runs `list` and `info`. Received: {command!r}")
