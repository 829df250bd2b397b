"""`keras-vit export` (SavedModel / LiteRT / ONNX) and `keras-vit serve` (TF-Serving-compatible server).

    keras-vit export --model=vit_cifar_patch4_32 --keras_file=finetuned.keras --verify
    keras-vit export --model=deit_tiny_distilled_patch16_224 --formats=saved_model,litert,onnx
    keras-vit serve --model_name=vit_cifar_patch4_32 --model_base_path=saved_models/vit_cifar_patch4_32
    keras-vit serve --model_config_file=saved_models/models.config

`serve` takes tensorflow_model_server's flag names, so commands move to
production unchanged.
"""

from __future__ import annotations

import json
import logging
import os

from absl import flags

FLAGS = flags.FLAGS


def _define(kind: str, name: str, default, help_text: str, **kwargs) -> None:
    """Defines a flag unless another command module in this process already did (flags are global)."""
    if name not in FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **kwargs)


# export
_define(
    "string",
    "model",
    None,
    "Registered model name (keras-vit list); sets the preprocessing and, without --keras_file, builds the model.",
)
_define("string", "keras_file", None, "A saved .keras model (e.g. fine-tuned) to export.")
_define("integer", "num_classes", None, "Override the head size when building --model.")
_define("string", "output_dir", "saved_models", "Folder holding <name>/<version> folders and models.config.")
_define("string", "name", None, "Served model name. Defaults to --model or the model's name.")
_define("integer", "version", 0, "Version number to write; 0 takes the next free one.")
_define("list", "formats", ["saved_model"], "Any of saved_model, litert, onnx.")
_define("string", "class_names", None, "Text file with one class name per line (the `labels` output).")
_define("integer", "top_k", 5, "Classes returned by the top-k outputs.")
_define("list", "mean", None, "Per-channel mean of [0, 1] pixels (needed for models not from the registry).")
_define("list", "std", None, "Per-channel std of [0, 1] pixels.")
_define("float", "crop_pct", None, "Centre-crop fraction; defaults to the model spec's (1.0 for other models).")
_define("string", "interpolation", None, "Resize filter: bicubic, bilinear, nearest, area, lanczos3.")
_define("boolean", "verify", False, "Reload every written file and compare it with the Keras model.")
_define(
    "string",
    "config_base_path_prefix",
    None,
    "Write models.config base paths as <prefix>/<name> (e.g. /models inside the tensorflow/serving container).",
)
# serve (tensorflow_model_server's names)
_define("integer", "port", 8500, "gRPC port (0 picks a free one).")
_define("integer", "rest_api_port", 8501, "REST port (0 picks a free one).")
_define("string", "model_name", None, "Name to serve --model_base_path under.")
_define("string", "model_base_path", None, "Folder of numbered SavedModel versions.")
_define("string", "model_config_file", None, "A models.config listing several models.")
_define("float", "file_system_poll_wait_seconds", 1.0, "Seconds between scans for new versions (0: never).")
_define("string", "host", "127.0.0.1", "Address to bind; the default serves this machine only.")
_define("integer", "max_request_bytes", 32 << 20, "Largest request body accepted.")
_define("boolean", "enable_batching", False, "Batch concurrent predict requests (see --batching_parameters_file).")
_define(
    "string",
    "batching_parameters_file",
    "",
    "TF Serving's text-format BatchingParameters; without it TF Serving's defaults apply.",
)
_define("integer", "rest_api_timeout_in_ms", 30000, "REST requests running longer answer DEADLINE_EXCEEDED (504).")
_define(
    "integer",
    "model_config_file_poll_wait_seconds",
    0,
    "Seconds between re-reads of --model_config_file (0: read once at start).",
)
_define("integer", "tensorflow_intra_op_parallelism", 0, "Threads inside one TensorFlow op (0: TensorFlow's choice).")
_define("integer", "tensorflow_inter_op_parallelism", 0, "TensorFlow ops run in parallel (0: TensorFlow's choice).")
_define("integer", "grpc_max_threads", 4 * (os.cpu_count() or 1), "Threads answering gRPC calls.")


def export_main() -> dict:
    from keras_vit.export.commands import export_command
    from keras_vit.models.cli import require_image_model, require_image_model_file

    require_image_model(FLAGS.model, "export")
    require_image_model_file(FLAGS.keras_file, "export", "keras_file")

    return export_command(
        model_name=FLAGS.model,
        keras_file=FLAGS.keras_file,
        num_classes=FLAGS.num_classes,
        output_dir=FLAGS.output_dir,
        name=FLAGS.name,
        version=FLAGS.version,
        formats=FLAGS.formats,
        class_names_file=FLAGS.class_names,
        top_k=FLAGS.top_k,
        mean=FLAGS.mean,
        std=FLAGS.std,
        crop_pct=FLAGS.crop_pct,
        interpolation=FLAGS.interpolation,
        verify=FLAGS.verify,
        config_base_path_prefix=FLAGS.config_base_path_prefix,
    )


def serve_main() -> None:
    from keras_vit.export.batching import BatchingParameters, read_batching_parameters
    from keras_vit.export.commands import served_models
    from keras_vit.export.errors import ServingError
    from keras_vit.export.server import ModelServer, set_tensorflow_threads

    set_tensorflow_threads(FLAGS.tensorflow_intra_op_parallelism, FLAGS.tensorflow_inter_op_parallelism)
    models = served_models(FLAGS.model_name, FLAGS.model_base_path, FLAGS.model_config_file)
    batching = None
    if FLAGS.enable_batching:
        path = FLAGS.batching_parameters_file
        batching = read_batching_parameters(path) if path else BatchingParameters()
    elif FLAGS.batching_parameters_file:
        logging.warning("--batching_parameters_file is ignored without --enable_batching (as in TF Serving).")
    if FLAGS.rest_api_timeout_in_ms < 0:
        raise ValueError(
            f"--rest_api_timeout_in_ms must be >= 0 (0: no limit). Received: {FLAGS.rest_api_timeout_in_ms}"
        )
    poll = FLAGS.model_config_file_poll_wait_seconds
    if poll < 0 or (poll > 0 and not FLAGS.model_config_file):
        raise ValueError(
            "--model_config_file_poll_wait_seconds must be >= 0, and > 0 only with --model_config_file. "
            f"Received: --model_config_file_poll_wait_seconds={poll}"
        )
    server = ModelServer(
        models,
        host=FLAGS.host,
        rest_port=FLAGS.rest_api_port,
        grpc_port=FLAGS.port,
        max_request_bytes=FLAGS.max_request_bytes,
        poll_seconds=FLAGS.file_system_poll_wait_seconds,
        grpc_workers=FLAGS.grpc_max_threads,
        batching=batching,
        rest_timeout_seconds=FLAGS.rest_api_timeout_in_ms / 1000 or None,
        config_file=FLAGS.model_config_file,
        config_poll_seconds=poll,
    ).start()
    for name in models:
        try:
            print(f"{name}: version {server.repository.get(name).version}")
        except ServingError:
            print(f"{name}: no version yet under {models[name]} (waiting for one)")
    if batching is not None:
        print(f"Batching: {batching}")
    print(
        f"REST on http://{FLAGS.host}:{server.rest_port}/v1/models/<name>, gRPC on {FLAGS.host}:{server.grpc_port}",
        flush=True,
    )
    server.wait()


def main(argv: list[str]) -> None:
    command = argv[0]
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments {argv[1:]}; `keras-vit {command}` takes flags only.")
    if command == "export":
        print(json.dumps(export_main(), indent=2))
    elif command == "serve":
        serve_main()
    else:
        raise ValueError(f"keras_vit.export.cli runs `export` and `serve`. Received: {command!r}")
