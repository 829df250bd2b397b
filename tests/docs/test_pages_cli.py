"""Every `keras-vit ...` line of the shell blocks in README.md and docs/**/*.md, run for real.

The commands are read from the pages (`cli_commands()`), so a new line there
is run here without editing this file; the fast test below fails if a line
belongs to no group. Each command keeps all of its own flags; the test only

- replaces what stands for the reader's own things (all written here, none downloaded):
    `~/data`                     -> a CIFAR-10 copy in the official python layout (random pixels, 64 per file)
    `~/photos`                   -> the train/ half of the image folder below (unlabeled use)
    `/data/imagenet`             -> an image folder (train/ and val/) of crops of two real photos
    `/models/teacher_savedmodel` -> a SavedModel (`model.export`) of a small CNN teacher
    `runs/<run>`                 -> the run folder that the docs' plain `keras-vit train` printed
    `/shared/...`                -> a folder under the test's tmp folder (the storage every worker sees)
    `Ti_16.npz`                  -> random weights in the AugReg ViT-Ti/16 `.npz` layout (224 px, 1000 classes)
    `model.safetensors`          -> timm's `vit_tiny_patch16_224` state dict (seeded random weights)
    `vit_b16.keras`              -> a ViT-B/16-shaped model cut to TINY_ARCH (depth 1, width 16), saved
    `finetuned.keras`            -> `vit_cifar_patch4_32` cut to depth 2, saved
    `a.png`, `b.jpg`, `photo.jpg`, `cat.jpg` -> real photos (scikit-image's chelsea and coffee)
- appends the smallest settings to commands that train (absl: a repeated flag's last value wins):
    train / finetune: TINY (depth-1 width-16 model, 2 steps per epoch, 1 epoch, no TensorBoard, quiet)
    pretrain: TINY with a tiny decoder too (TINY_MAE), and `--batch_size 8` (mae_pretrain's batch is 4096)
    finetune (vit_finetune is ViT-B/16 at 384, batch 512): also `--set image_size=32 --batch_size 8`
    distill: `--epochs 1`; deit_distill (batch 1024 of 224 px images) also `--batch_size 4`
    serve: `--port 0 --rest_api_port 0` (free ports), then the docs' curl request goes to that port.
- runs `--strategy multi_worker` lines as 2 local workers, each with its own `TF_CONFIG` for 127.0.0.1
  (`launch_local_workers`), where the docs' `export TF_CONFIG=...` names two machines.

In-process runs go through `keras_vit.cli.run`, the console script's entry
point; `convert`, `visualize`, `--cpu_devices`, `multi_worker` and `serve` run as the
real `keras-vit` script in their own process (`--cpu_devices` must act before
TensorFlow starts; `convert` and `visualize` define flags of the same name with
other types, which only one process at a time can hold).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from keras_vit import cli
from keras_vit.recipes.library import MAE_PRETRAIN
from tests.docs import reader_files
from tests.docs.pages import DOCS, cli_commands, shell_lines

TINY_ARCH = {"depth": 1, "hidden_dim": 16, "num_heads": 2, "mlp_dim": 32}
# mae_pretrain's own overrides (75% masking, normalised pixels) with a tiny encoder and decoder
TINY_MAE = dict(MAE_PRETRAIN.model_overrides, **TINY_ARCH, decoder_dim=16, decoder_depth=1, decoder_heads=2)


def tiny(arch: dict) -> list[str]:
    """The flags that shrink a training command to `arch`, 2 steps of 1 epoch, no TensorBoard, quiet."""
    settings = [f"model_overrides={arch}", "steps_per_epoch=2", "tensorboard=False", "verbose=0"]
    return [*(flag for setting in settings for flag in ("--set", setting)), "--epochs", "1"]


TINY = tiny(TINY_ARCH)
PLACEHOLDERS = {
    "~/data": "data",
    "~/photos": "imagenet/train",
    "/data/imagenet": "imagenet",
    "/models/teacher_savedmodel": "teacher_savedmodel",
}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")


def group(argv: list[str]) -> str:
    """Which test runs a docs command."""
    if len(argv) < 2:
        raise ValueError(f"A bare `keras-vit` line has nothing to run. Received: {argv}")
    command = argv[1]
    if command in ("list", "info"):
        return "inspect"
    if command in ("convert", "visualize"):
        return command
    if command in ("export", "serve"):
        return "export_serve"
    if any(arg.startswith("--cpu_devices") for arg in argv):
        return "fresh_process"
    if "multi_worker" in argv or "--strategy=multi_worker" in argv:
        return "multi_worker"
    if command in ("train", "finetune", "evaluate", "distill", "pretrain"):
        return "training"
    raise ValueError(f"No test runs docs command {' '.join(argv)!r}; add it to a group in {__file__}.")


def commands_of(name: str) -> list[list[str]]:
    """Docs commands of one group, each once, in page order."""
    seen, result = set(), []
    for argv in cli_commands():
        if group(argv) == name and tuple(argv) not in seen:
            seen.add(tuple(argv))
            result.append(argv)
    return result


def substitute(argv: list[str], folder: Path, run_dir: str | None = None) -> list[str]:
    """The command with the reader's paths replaced by the files this test wrote in `folder`."""
    out = []
    for arg in argv:
        for placeholder, local in PLACEHOLDERS.items():
            arg = arg.replace(placeholder, str(folder / local))
        if arg.startswith("/shared/"):
            arg = str(folder / arg[len("/shared/") :])
        if "runs/<run>" in arg:
            assert run_dir, "a command needs runs/<run> but no run was made"
            arg = arg.replace("runs/<run>", run_dir)
        out.append(arg)
    return out


def additions(argv: list[str]) -> list[str]:
    """The smallest settings appended to a training command (see the module docstring)."""
    command = argv[1]
    if command == "train" and "list" not in argv:
        return TINY
    if command == "finetune":
        return [*TINY, "--set", "image_size=32", "--batch_size", "8"]
    if command == "pretrain":  # mae_pretrain's batch is 4096
        return [*tiny(TINY_MAE), "--batch_size", "8"]
    if command == "distill":
        return ["--epochs", "1", *(["--batch_size", "4"] if "deit_distill" in argv else [])]
    return []


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """`keras-vit ...` through the console-script entry point, in this process; (exit code, stdout + stderr)."""
    flags.FLAGS.unparse_flags()  # absl flags are global: start every command from the defaults
    buffer = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            cli.run(argv)
        except SystemExit as exit_:
            code = exit_.code or 0
    flags.FLAGS.unparse_flags()
    return code, buffer.getvalue()


def script(argv: list[str]) -> list[str]:
    """argv of the installed `keras-vit` script (or the same entry point through `python -m`)."""
    found = shutil.which("keras-vit")
    return [found, *argv[1:]] if found else [sys.executable, "-m", "keras_vit.cli", *argv[1:]]


def run_script(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(script(argv), check=False, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def run_folder(output: str) -> str:
    match = re.search(r"run folder: (\S+)", output)
    assert match, output
    return match.group(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme_cli")


@pytest.fixture(scope="module")
def digits_run(workspace) -> str:
    """The docs' plain `keras-vit train` (+ TINY): the run folder `runs/<run>` stands for."""
    argv = ["keras-vit", "train"]
    assert argv in cli_commands()
    with contextlib.chdir(workspace):
        code, output = run_in_process([*argv, *TINY])
    assert code == 0, output
    run = run_folder(output)
    for name in ("model.keras", "metrics.json", "history.csv", "recipe.json", "checkpoints/last.keras"):
        assert os.path.isfile(os.path.join(run, name)), name
    return os.path.relpath(run, workspace)


def test_every_readme_command_has_a_test():
    commands = cli_commands()
    assert commands, "the docs show no keras-vit command"
    groups = {group(argv) for argv in commands}  # raises for a command no test runs
    assert groups == {"inspect", "training", "convert", "visualize", "export_serve", "fresh_process", "multi_worker"}, (
        groups
    )


def test_substitutions_keep_the_commands_flags(tmp_path):
    argv = ["keras-vit", "finetune", "--init", "runs/<run>/model.keras", "--data_dir", "~/data"]
    assert substitute(argv, tmp_path, "runs/x") == [
        "keras-vit",
        "finetune",
        "--init",
        "runs/x/model.keras",
        "--data_dir",
        str(tmp_path / "data"),
    ]
    with pytest.raises(ValueError, match="No test runs docs command"):
        group(["keras-vit", "no_such_command"])


def test_docs_inspect_commands():
    """`keras-vit list` / `info` lines as written: they exit 0 and show the models they name."""
    commands = commands_of("inspect")
    assert commands
    for argv in commands:
        code, output = run_in_process(argv)
        assert code == 0, output
        assert argv[1] != "info" or argv[2] in output, output


def _training_files(folder: Path) -> None:
    import keras

    import keras_vit

    reader_files.write_cifar10(folder / "data", per_file=64)
    keras_vit.create_model("vit_base_patch16_224", **TINY_ARCH).save(folder / "vit_b16.keras")
    rng = np.random.default_rng(0)
    photos = {"cat": _photo("chelsea"), "coffee": _photo("coffee")}
    for split, count in (("train", 4), ("val", 2)):
        for name, photo in photos.items():
            (folder / "imagenet" / split / name).mkdir(parents=True)
            for i in range(count):
                top, left = rng.integers(0, 100, 2)
                _save(photo[top : top + 200, left : left + 200], folder / "imagenet" / split / name / f"{i}.png")
    inputs = keras.Input((224, 224, 3))
    hidden = keras.layers.Conv2D(4, 16, strides=16, activation="relu")(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(hidden)))
    teacher.export(str(folder / "teacher_savedmodel"), verbose=False)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _save(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_docs_training_commands(workspace, digits_run):
    """train / finetune / evaluate / distill lines (the plain `keras-vit train` ran in the fixture)."""
    _training_files(workspace)
    commands = [argv for argv in commands_of("training") if argv != ["keras-vit", "train"]]
    assert commands
    failures = []
    with contextlib.chdir(workspace):
        for argv in commands:
            full = [*substitute(argv, workspace, digits_run), *additions(argv)]
            code, output = run_in_process(full)
            if code:  # go on: one run reports every docs command that fails
                failures.append(f"{' '.join(full)} exited {code}:\n{output[-3000:]}")
                continue
            if "list" in argv:
                assert "digits_vit" in output and "cifar10_vit_scratch" in output, output
            elif argv[1] == "evaluate":
                metrics = json.loads(output[output.index("{") : output.rindex("}") + 1])
                # the same model on the same held-out split as the run's own evaluation
                recorded = json.loads((workspace / digits_run / "metrics.json").read_text())
                assert metrics["test_accuracy"] == pytest.approx(recorded["test_accuracy"], abs=1e-6), metrics
            elif argv[1] == "pretrain":  # no labels: the masked-patch loss is the metric
                run = run_folder(output)
                assert os.path.isfile(os.path.join(run, "model.keras")), output
                assert json.loads(Path(run, "metrics.json").read_text())["test_loss"] > 0.0
            elif argv[1] == "distill":
                assert re.search(r"test accuracy: \d\.\d{4}", output), output
                assert os.path.isfile(os.path.join(run_folder(output), "model.keras"))
            else:
                run = run_folder(output)
                assert os.path.isfile(os.path.join(run, "model.keras")), output
                assert json.loads(Path(run, "metrics.json").read_text())["test_accuracy"] >= 0.0
            if "--run_dir" in argv:
                assert run_folder(output) == str(workspace / argv[argv.index("--run_dir") + 1]), output
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_docs_cpu_devices_command(tmp_path):
    """`keras-vit train --strategy mirrored --cpu_devices 2`: two replicas, in a fresh process as written."""
    for argv in commands_of("fresh_process"):
        output = run_script([*argv, *additions(argv)], tmp_path)
        metrics = json.loads(Path(run_folder(output), "metrics.json").read_text())
        assert metrics["num_replicas"] == 2, metrics


@pytest.mark.slow
def test_docs_multi_worker_command(tmp_path):
    """`keras-vit train --strategy multi_worker ...` on 2 workers of this machine: one run folder, 2 replicas."""
    from keras_vit.training.multi_worker import launch_local_workers

    reader_files.write_cifar10(tmp_path / "data", per_file=64)
    for argv in commands_of("multi_worker"):
        command = script([*substitute(argv, tmp_path), *additions(argv)])
        codes = launch_local_workers(command, 2, timeout=400, env=ENV, log_dir=str(tmp_path / "logs"))
        logs = "".join((tmp_path / "logs" / f"worker_{i}.log").read_text()[-3000:] for i in range(2))
        assert codes == [0, 0], logs
        run_dir = Path(substitute(argv, tmp_path)[argv.index("--run_dir") + 1])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["num_replicas"] == 2, metrics
        if argv[1] == "pretrain":  # no labels: the masked-patch loss is the metric
            assert metrics["test_loss"] > 0.0 and "test_accuracy" not in metrics, metrics
        else:
            assert 0.0 <= metrics["test_accuracy"] <= 1.0, metrics


@pytest.mark.slow
def test_docs_convert_commands(tmp_path):
    import keras_vit
    from keras_vit import weights

    reader_files.write_augreg_ti16(tmp_path, "Ti_16.npz")
    reader_files.write_timm_safetensors(tmp_path / "model.safetensors", "vit_tiny_patch16_224")
    for argv in commands_of("convert"):
        output = run_script(argv, tmp_path)
        out_file = tmp_path / argv[3]
        assert f"wrote {argv[3]}" in output and out_file.is_file(), output
    # what was written holds the npz's weights: in timm's keys (OIHW), and in the 384 px 10-class ViT-Ti
    kernel = np.load(tmp_path / "Ti_16.npz")["embedding/kernel"]  # (16, 16, 3, 192) HWIO
    state = weights.read_checkpoint(str(tmp_path / "vit_ti16.safetensors")).state
    np.testing.assert_array_equal(np.asarray(state["patch_embed.proj.weight"]), kernel.transpose(3, 2, 0, 1))
    model = keras_vit.create_model("vit_tiny_patch16_224", image_size=384, num_classes=10)
    weights.load_pretrained(model, str(tmp_path / "vit.weights.h5"))
    loaded = [w for w in model.get_layer("patch_embed").weights if tuple(w.shape) == kernel.shape]
    np.testing.assert_array_equal(np.asarray(loaded[0]), kernel)


@pytest.mark.slow
def test_docs_visualize_commands(workspace, digits_run):
    reader_files.write_photo(workspace / "a.png")
    reader_files.write_photo(workspace / "b.jpg")
    reader_files.write_photo(workspace / "photo.jpg")
    failures = []
    for argv in commands_of("visualize"):
        full = substitute(argv, workspace, digits_run)
        out = workspace / argv[argv.index("--out") + 1]
        shutil.rmtree(out, ignore_errors=True)  # both docs lines write into vis/
        try:
            output = run_script(full, workspace)
        except AssertionError as error:  # go on: report every failing line
            failures.append(str(error))
            continue
        pngs = sorted(p.name for p in out.glob("*.png"))
        assert pngs and (out / "arrays.npz").is_file(), output
        assert all(name in output for name in pngs), output
    assert not failures, "\n\n".join(failures)


def _start_server(argv: list[str], cwd: Path) -> tuple[subprocess.Popen, int]:
    """Starts a docs `keras-vit serve` line on free ports; (process, REST port) once it says it serves."""
    server = subprocess.Popen(
        script([*argv, "--port", "0", "--rest_api_port", "0"]),
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port, lines, deadline = None, [], time.monotonic() + 240
    while port is None and time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            break
        lines.append(line)
        match = re.search(r"REST on http://127\.0\.0\.1:(\d+)", line)
        port = match and int(match.group(1))
    if not port:
        server.terminate()
        server.wait(timeout=60)
    assert port, f"{' '.join(argv)} did not start:\n" + "".join(lines)
    return server, port


def _docs_text_block(page: str) -> str:
    """The first ```text block of a docs page (the batching parameters file of serving-production.md)."""
    return re.search(r"```text\n(.*?)```", (DOCS / page).read_text(), re.DOTALL).group(1)


@pytest.mark.slow
def test_docs_export_and_serve_commands(tmp_path):
    """`keras-vit export` as written, then every docs `keras-vit serve` line on its folder and the docs' curl."""
    import keras_vit

    keras_vit.create_model("vit_cifar_patch4_32", depth=2).save(tmp_path / "finetuned.keras")
    reader_files.write_photo(tmp_path / "cat.jpg")
    commands = commands_of("export_serve")
    exports = [argv for argv in commands if argv[1] == "export"]
    serves = [argv for argv in commands if argv[1] == "serve"]
    assert len(exports) == 1 and serves and len(exports) + len(serves) == len(commands), commands
    with contextlib.chdir(tmp_path):
        code, output = run_in_process(exports[0])
    assert code == 0, output
    for path in ("saved_models/vit_cifar_patch4_32/1/saved_model.pb", "saved_models/models.config"):
        assert (tmp_path / path).is_file(), output
    assert list(tmp_path.glob("saved_models/**/*.tflite")) and list(tmp_path.glob("saved_models/**/*.onnx")), output
    # What the production lines name besides the export: a model folder served by name, the batching file.
    shutil.copytree(tmp_path / "saved_models/vit_cifar_patch4_32", tmp_path / "saved_models/vit")
    (tmp_path / "batching.config").write_text(_docs_text_block("serving-production.md"))

    curl = next(line for line in shell_lines() if line.startswith("curl ") and ":predict" in line)
    for argv in serves:
        model = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--model_name=")), None)
        server, port = _start_server(argv, tmp_path)
        try:
            request = curl.replace("localhost:8501", f"localhost:{port}")
            if model:  # a single model served under its own name
                request = request.replace("/models/vit_cifar_patch4_32:", f"/models/{model}:")
            done = subprocess.run(
                ["bash", "-c", request + " --silent --show-error --fail-with-body"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, " ".join(argv) + "\n" + done.stdout + done.stderr
            prediction = json.loads(done.stdout)["predictions"][0]
            probabilities = np.asarray(prediction["probabilities"])
            assert probabilities.shape == (10,) and abs(probabilities.sum() - 1) < 1e-4, prediction
            assert len(prediction["classes"]) == 5 and prediction["classes"][0] == int(np.argmax(probabilities))
        finally:
            server.terminate()
            server.wait(timeout=60)
