"""`keras-vit list [PATTERN]` and `keras-vit info NAME`."""

from __future__ import annotations

import json

from absl import flags

flags.DEFINE_boolean("json", False, "Print JSON instead of a table.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from keras_vit.models import list_models, model_spec

    command, args = argv[0], argv[1:]
    if command == "list":
        names = list_models(args[0] if args else "*")
        if FLAGS.json:
            print(json.dumps(names))
            return
        for name in names:
            spec = model_spec(name)
            print(f"{name:<40} {spec.num_params / 1e6:>9.2f}M  {spec.input_size[0]}x{spec.input_size[1]}")
        return
    if len(args) != 1:
        raise SystemExit("usage: keras-vit info NAME")
    spec = model_spec(args[0]).to_dict()
    if FLAGS.json:
        print(json.dumps(spec, indent=2))
        return
    for key, value in spec.items():
        print(f"{key:<14} {value}")
