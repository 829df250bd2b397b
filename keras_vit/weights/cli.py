"""`keras-vit convert IN OUT`: any supported checkpoint in, `.weights.h5` or timm-key `.safetensors` out.

The architecture comes from `--model` (a registry name, with `--image_size`
and `--num_classes` overrides), else from a Hugging Face `config.json` beside
the input, else from the tensor shapes (`keras_vit.weights.infer_arch`).
Converting to `.safetensors` without `--model` is a pure key conversion.
"""

from __future__ import annotations

import os

from absl import flags


def _define(kind: str, name: str, default, help_text: str) -> None:
    """Defines a flag unless another command module (imported in the same process, e.g. by tests) already has."""
    if name not in flags.FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


_define("string", "model", None, "Registry name of the architecture (e.g. vit_base_patch16_224).")
_define("integer", "image_size", None, "Build the model at this image size (position embedding resampled).")
_define("integer", "num_classes", None, "Build the model with this many classes (head replaced if it differs).")
_define("integer", "num_heads", None, "Attention heads, when converting a non-standard width without --model.")
_define("string", "sha256", None, "Expected SHA-256 of the input file.")
FLAGS = flags.FLAGS

USAGE = "usage: keras-vit convert IN OUT [--model NAME] [--image_size N] [--num_classes N] [--sha256 HEX]"


def build_model(path: str, model_name: str | None, overrides: dict, num_heads: int | None = None):
    """Builds the keras_vit model the converted weights go into."""
    import keras_vit
    from keras_vit.weights import formats, hf_config, infer_arch

    if model_name:
        return keras_vit.create_model(model_name, **overrides)
    config_path = hf_config.config_beside(path)
    checkpoint = formats.read_checkpoint(path)
    if checkpoint.flavor == "hf" and config_path:
        arch = hf_config.config_arch(hf_config.read_hf_config(config_path), config_path)
        del arch["num_labels"]  # the head size is id2label's, already in num_classes
        arch["representation_size"] = arch["hidden_dim"] if "pre_logits.fc.weight" in checkpoint.state else None
    else:
        arch = infer_arch(checkpoint.state, num_heads=num_heads)
    arch.update(overrides)
    return keras_vit.ViT(**arch)


def convert(
    src: str,
    dst: str,
    model_name: str | None = None,
    overrides: dict | None = None,
    num_heads: int | None = None,
    sha256: str | None = None,
) -> str:
    """Converts checkpoint `src` to `dst` (`.weights.h5` or `.safetensors`); returns a one-line summary."""
    from keras_vit.weights import formats, load_pretrained, save_weights, verify_sha256, write_safetensors
    from keras_vit.weights.loading import checkpoint_in_folder

    src = checkpoint_in_folder(os.fspath(src))  # a save_pretrained folder stands for its model.safetensors
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not dst.endswith((".weights.h5", ".safetensors")):
        raise ValueError(f"OUT must end in '.weights.h5' or '.safetensors'. Received: OUT={dst!r}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"IN and OUT are the same file; choose another OUT. Received: OUT={dst!r}")
    if sha256:
        verify_sha256(src, sha256)
    if dst.endswith(".safetensors") and not model_name and not overrides and formats.detect_format(src) != "keras_h5":
        checkpoint = formats.read_checkpoint(src)
        metadata = {"format": "pt", "keys": "timm", "producer": "keras_vit convert", "source": checkpoint.flavor}
        write_safetensors(dst, checkpoint.state, metadata)
        return (
            f"wrote {dst}: {len(checkpoint.state)} tensors in timm keys (from {checkpoint.flavor} {checkpoint.format})"
        )
    if formats.detect_format(src) == "keras_h5" and not model_name:
        raise ValueError("A .weights.h5 file holds no architecture; pass --model NAME (and its overrides).")
    model = build_model(src, model_name, overrides, num_heads)
    report = load_pretrained(model, src)
    save_weights(model, dst)
    extra = f", position embedding resampled {report.resampled[0]} -> {report.resampled[1]}" if report.resampled else ""
    return (
        f"wrote {dst}: {report.loaded} variables of a {model.count_params():,}-parameter model "
        f"(from {report.flavor} {report.format}, head {report.head}{extra})"
    )


def main(argv: list[str]) -> None:
    args = argv[1:]
    if len(args) != 2:
        raise ValueError(f"convert takes two arguments, IN and OUT. Received: {args}. {USAGE}")
    from keras_vit.models.cli import require_image_model

    require_image_model(FLAGS.model, "convert")
    overrides = {"image_size": FLAGS.image_size, "num_classes": FLAGS.num_classes}
    print(convert(args[0], args[1], FLAGS.model, overrides, FLAGS.num_heads, FLAGS.sha256))
