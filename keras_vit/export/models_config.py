"""TF Serving's `models.config` (a text `ModelServerConfig`) for serving several models at once.

`tensorflow_model_server --model_config_file=models.config` and
`keras-vit serve --model_config_file=models.config` both read it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def write_models_config(path: str, models: Mapping[str, str], *, base_path_prefix: str | None = None) -> str:
    """Writes a `models.config` listing `models` (name -> base folder holding numbered versions).

    Args:
        path: file to write (atomically).
        models: model name -> base path, e.g. {"vit": "saved_models/vit"}.
        base_path_prefix: when set, each base path becomes `<prefix>/<name>`
            (e.g. "/models" for the paths inside a TF Serving container).

    Returns:
        The absolute path written.
    """
    if not models:
        raise ValueError("`models` must name at least one model. Received: models={}")
    lines = ["model_config_list {"]
    for name, base in models.items():
        if not _NAME.match(name):
            raise ValueError(f"Model names may hold letters, digits, '_', '.', '-'. Received: name={name!r}")
        target = f"{base_path_prefix.rstrip('/')}/{name}" if base_path_prefix else os.path.abspath(base)
        lines += [
            "  config {",
            f"    name: '{name}'",
            f"    base_path: '{target}'",
            "    model_platform: 'tensorflow'",
            "  }",
        ]
    lines.append("}")
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(temp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temp, path)
    return path


def read_models_config(path: str) -> dict[str, str]:
    """Parses a `models.config` with TF Serving's own proto; returns name -> base path."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path) as f:
        text = f.read()
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"{path!r} is not a valid TF Serving models.config: {error}") from None
    models = {}
    for entry in config.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"Model {entry.name!r}: only model_platform 'tensorflow' is served. "
                f"Received: model_platform={entry.model_platform!r}"
            )
        base = entry.base_path
        models[entry.name] = base if os.path.isabs(base) else os.path.join(os.path.dirname(os.path.abspath(path)), base)
    if not models:
        raise ValueError(f"{path!r} lists no models in model_config_list.")
    return models
