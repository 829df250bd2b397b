"""`keras-vit <command>`: one absl app per command, each defined where its job lives.

Commands are imported lazily, so `keras-vit list` does not pay for what
`keras-vit serve` needs, and each command module defines its own absl flags.
A command module exposes `main(argv)`.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module with `main(argv)`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("keras_vit.models.cli", "List registered models matching a pattern."),
    "info": ("keras_vit.models.cli", "Show a model's spec (dims, parameters, preprocessing, source)."),
}


def usage() -> str:
    lines = ["usage: keras-vit <command> [--flags]   (keras-vit <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(COMMANDS[command][0])
    from absl import app

    def main(args):
        try:
            module.main([command, *args[1:]])
        except ValueError as error:  # bad input: say what and how to fix it, not a stack trace
            print(f"keras-vit {command}: error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(main, argv=[f"keras-vit {command}", *argv[2:]])


if __name__ == "__main__":
    run()
