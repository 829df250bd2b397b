"""`keras-vit` as a user runs it: every command in a subprocess, with a clean stderr and the right exit code."""

import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags

import keras_vit
from keras_vit import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Any line TensorFlow's C++ side or absl prints (I/W/E/F + date), and the start-up lines that are not in that form.
TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|cuInit"
)


def keras_vit_command(*args, cwd, timeout=300):
    """Runs `python -m keras_vit.cli ARGS` as a fresh user shell would (no TF_CPP_MIN_LOG_LEVEL set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "GLOG_"))}
    env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-m", "keras_vit.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def assert_clean_stderr(result):
    noise = [line for line in result.stderr.splitlines() if TF_LOG_LINE.search(line)]
    assert not noise, f"TensorFlow start-up lines on stderr: {noise}"
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args, shown",
    [(["--help"], "usage: keras-vit <command>"), (["list", "--help"], "--[no]json"), (["--version"], "keras-vit ")],
)
def test_help_and_version(args, shown, tmp_path):
    result = keras_vit_command(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    assert result.stderr == ""
    assert shown in result.stdout


def test_list_shows_every_registered_model_with_family_and_input(tmp_path):
    result = keras_vit_command("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    assert result.stderr == ""
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert sorted(rows) == keras_vit.list_models()
    assert rows["vit_base_patch16_224"] == ["vit", "86.57M", "224x224"]
    assert rows["transformer_tiny"][:2] == ["transformer", "0.04M"]


def test_list_json_matches_the_registry(tmp_path):
    result = keras_vit_command("list", "--json", "*", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == keras_vit.list_models()
    for row in rows:
        spec = keras_vit.model_spec(row["name"])
        assert row["family"] == spec.family
        assert row["num_params"] == spec.num_params
        assert row["input_size"] == (list(spec.input_size) or None)
        assert row["num_classes"] == spec.num_classes
    assert {row["family"] for row in rows} >= {"vit", "deit", "transformer"}


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "transformer_tiny"])
def test_info_json_is_the_full_spec(name, tmp_path):
    result = keras_vit_command("info", "--json", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    spec = keras_vit.model_spec(name).to_dict()
    expected = json.loads(json.dumps(dict(spec, input_size=list(spec["input_size"]) or None)))
    assert json.loads(result.stdout) == expected


def test_info_table_for_an_image_and_a_sequence_model(tmp_path):
    vit = keras_vit_command("info", "vit_base_patch16_224", cwd=tmp_path)
    assert vit.returncode == 0, vit.stderr
    assert_clean_stderr(vit)
    assert re.search(r"^num_params\s+86567656$", vit.stdout, re.M)
    assert re.search(r"^input_size\s+224x224$", vit.stdout, re.M)
    sequence = keras_vit_command("info", "transformer_base", cwd=tmp_path)
    assert sequence.returncode == 0, sequence.stderr
    assert_clean_stderr(sequence)
    assert re.search(r"^kind\s+sequence \(token ids\)$", sequence.stdout, re.M)
    assert "input_size" not in sequence.stdout and "crop_pct" not in sequence.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = keras_vit_command("info", "vit_bsae_patch16_224", cwd=tmp_path)
    assert result.returncode == 2
    assert_clean_stderr(result)
    assert re.fullmatch(
        r"keras-vit info: error: Unknown model name 'vit_bsae_patch16_224'\. Did you mean: vit_base_patch16_224, .*\n",
        result.stderr,
    ), result.stderr


@pytest.mark.slow
def test_export_of_a_tiny_model_for_real(tmp_path):
    result = keras_vit_command("export", "--model=vit_digits_patch2_8", f"--output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    assert (tmp_path / "vit_digits_patch2_8" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "models.config").is_file()


def _run_in_process(args, capsys):
    flags.FLAGS.unparse_flags()  # absl flags are global: start each command from the defaults
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["keras-vit", *args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


@pytest.mark.parametrize(
    "args, instead",
    [
        (["train", "--model=transformer_tiny"], r"transformer_optimizer"),
        (["finetune", "--model=transformer_tiny", "--init=x.keras"], r"model\.fit"),
        (["evaluate", "--model=transformer_tiny", "--model_path=x.keras"], r"model\.evaluate"),
        (["distill", "--teacher=x.keras", "--set", "model='transformer_tiny'"], r"pick a ViT/DeiT student"),
        (["export", "--model=transformer_base"], r"export_generate\(model, path, max_length=\.\.\.\)"),
        (["visualize", "--model=transformer_tiny", "--image=x.png"], r"ViT/DeiT"),
        (["convert", "a.npz", "b.weights.h5", "--model=transformer_encoder_tiny"], r"model\.save_weights"),
    ],
)
def test_sequence_models_get_a_clear_error_from_image_commands(args, instead, capsys):
    code, out, err = _run_in_process(args, capsys)
    assert code == 2
    assert out == ""
    assert re.fullmatch(rf"keras-vit {args[0]}: error: .*is a sequence model; .*{instead}.*\n", err), err


# Printed by TensorFlow 2.21 on this CPU-only machine at start-up (copied from a real `import tensorflow`).
STARTUP_LINES = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796204752.576280    7628 port.cc:153] oneDNN custom operations are on. You may see slightly different \
numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the \
environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796204752.580517    7628 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796204841.390759   10676 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available \
CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild \
TensorFlow with the appropriate compiler flags.
E0000 00:00:1796204755.076121    7628 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call \
to cuInit: UNKNOWN ERROR (303)
"""
KEPT = "E0000 00:00:1796204755.1    7628 op_kernel.cc:1857] OP_REQUIRES failed: a real error\n"


def test_filter_drops_startup_lines_and_keeps_warnings_and_errors(tmp_path):
    """The filter alone (loaded without the package, so nothing imports TensorFlow): fd-level C++ writes and
    Python's stderr both go through it."""
    code = (
        "import importlib.util, os, sys, warnings\n"
        f"spec = importlib.util.spec_from_file_location('startup', {os.path.join(ROOT, 'keras_vit', '_cli_startup.py')!r})\n"
        "startup = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(startup)\n"
        "startup.filter_startup_lines()\n"
        f"os.write(2, {STARTUP_LINES.encode()!r})\n"
        f"os.write(2, {KEPT.encode()!r})\n"
        "warnings.warn('a real warning')\n"
        "print('no newline at the end', file=sys.stderr, end='')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == KEPT.strip()
    assert "UserWarning: a real warning" in lines[1]
    assert lines[-1] == "no newline at the end"
    assert not [line for line in lines if TF_LOG_LINE.search(line) and line != KEPT.strip()]


@pytest.mark.parametrize(
    "args, flag",
    [
        (["export", "--keras_file={path}"], "keras_file"),
        (["evaluate", "--model_path={path}"], "model_path"),
        (["finetune", "--init={path}"], "init"),
    ],
)
def test_a_saved_sequence_model_gets_a_clear_error_too(args, flag, tmp_path, capsys):
    path = tmp_path / "transformer.keras"
    keras_vit.create_model("transformer_tiny").save(path)
    code, out, err = _run_in_process([arg.format(path=path) for arg in args], capsys)
    assert code == 2
    assert re.fullmatch(
        rf"keras-vit {args[0]}: error: .*holds a sequence Transformer; .*Received: --{flag}=.*\n", err
    ), err
