"""`keras-vit <command>`: one absl app per command, each defined where its job lives.

Commands are imported lazily, so `keras-vit list` does not pay for what
`keras-vit serve` needs, and each command module defines its own absl flags.
A command module exposes `main(argv)`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from keras_vit._cli_startup import filter_startup_lines

# command -> (module with `main(argv)`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("keras_vit.models.cli", "List registered models matching a pattern."),
    "distill": ("keras_vit.recipes.cli_distill", "Train a student (distilled DeiT) from a frozen teacher model."),
    "info": ("keras_vit.models.cli", "Show a model's spec (dims, parameters, preprocessing, source)."),
    "pretrain": ("keras_vit.recipes.cli", "Self-supervised pretraining (default mae_pretrain: a masked autoencoder)."),
    "train": ("keras_vit.recipes.cli", "Train a recipe (default digits_vit, offline), evaluate, write a run folder."),
    "finetune": (
        "keras_vit.recipes.cli",
        "Fine-tune a trained .keras model with a recipe (--init, default vit_finetune).",
    ),
    "evaluate": ("keras_vit.recipes.cli", "Evaluate a .keras model on a recipe's held-out split (--model_path)."),
    "export": ("keras_vit.export.cli", "Export a model as a TF Serving SavedModel (and LiteRT/ONNX), with --verify."),
    "serve": ("keras_vit.export.cli", "Serve SavedModels over TF Serving's REST and gRPC APIs (local, 127.0.0.1)."),
    "convert": (
        "keras_vit.weights.cli",
        "Convert a checkpoint (.npz, timm/HF safetensors) to .weights.h5 or .safetensors.",
    ),
    "visualize": ("keras_vit.visualize.cli", "Attention rollout, per-head maps and feature plots for images."),
}


def usage() -> str:
    lines = ["usage: keras-vit <command> [--flags]   (keras-vit <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point; `argv` given (tests, scripts) leaves the process's stderr as it is."""
    if argv is None:
        filter_startup_lines()
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 1)
    if argv[1] == "--version":
        from keras_vit.version import __version__

        print(f"keras-vit {__version__}")
        return
    command = argv[1]
    if command not in COMMANDS:
        print(f"keras-vit: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[command][0])
    from absl import app, flags

    if any(arg in ("--help", "-h", "--helpshort") for arg in argv[2:]):
        print(f"usage: keras-vit {command} [--flags]\n\n{COMMANDS[command][1]}\n")
        print(flags.FLAGS.module_help(module) or "(no flags)")
        return

    def main(args):
        if not flags.FLAGS["verbosity"].present:
            # TensorFlow's Python INFO lines ("Assets written to", "Sharding callback duration") say nothing a
            # user acts on; its warnings and errors still show, and `--verbosity=0` brings the INFO lines back.
            flags.FLAGS.verbosity = -1  # absl's WARNING; absl re-applies it whenever it resets its loggers
            logging.getLogger("tensorflow").setLevel(logging.WARNING)
        try:
            module.main([command, *args[1:]])
        except ValueError as error:  # bad input: say what and how to fix it, not a stack trace
            print(f"keras-vit {command}: error: {error}", file=sys.stderr)
            sys.exit(2)
        except BrokenPipeError:  # `keras-vit list | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    app.run(main, argv=[f"keras-vit {command}", *argv[2:]])


if __name__ == "__main__":
    run()
