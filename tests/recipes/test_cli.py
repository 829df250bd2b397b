"""`keras-vit train | finetune | evaluate` in-process (fast) and the default command for real (slow)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from keras_vit import cli
from keras_vit.recipes import get_recipe
from keras_vit.recipes.config import parse_settings

TINY = [
    "--set",
    "model_overrides={'depth': 1, 'hidden_dim': 16, 'num_heads': 2, 'mlp_dim': 32}",
    "--set",
    "steps_per_epoch=2",
    "--set",
    "tensorboard=False",
    "--set",
    "verbose=0",
    "--epochs",
    "1",
]


def _run(args, capsys):
    flags.FLAGS.unparse_flags()  # absl flags are global: start each command from the defaults
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["keras-vit", *args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--recipe", "nope"], r"Unknown recipe 'nope'"),
        (["train", "--set", "lrr=0.1"], r"'lrr': did you mean lr"),
        (["train", "--set", "epochs"], r"--set takes key=value"),
        (["train", "--dataset", "folder"], r"needs a data path \(--data_dir\)"),
        (["train", "--dataset", "cifar10", "--data_dir", "/no/such/dir"], r"'/no/such/dir' does not exist"),
        (["finetune"], r"finetune needs --init"),
        (["evaluate"], r"evaluate needs --model_path"),
        (["train", "extra"], r"Unexpected arguments \['extra'\]"),
    ],
)
def test_bad_flags_fail_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(args, capsys)
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and not os.path.exists("runs")


def test_train_then_evaluate(capsys, tmp_path):
    run_dir = str(tmp_path / "run")
    code, out, _ = _run(["train", "--run_dir", run_dir, *TINY], capsys)
    assert code == 0 and f"run folder: {run_dir}" in out
    metrics = json.loads(pathlib.Path(run_dir, "metrics.json").read_text())
    code, out, _ = _run(["evaluate", "--model_path", os.path.join(run_dir, "model.keras")], capsys)
    assert code == 0
    assert json.loads(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_parse_settings_types():
    recipe = get_recipe("digits_vit")
    parsed = parse_settings(["lr=3e-3", "hflip=True", "dataset=cifar10", "classes=(1, 2)", "weight_decay=0"], recipe)
    assert parsed == {"lr": 3e-3, "hflip": True, "dataset": "cifar10", "classes": (1, 2), "weight_decay": 0.0}
    assert isinstance(parsed["weight_decay"], float)


@pytest.mark.slow
def test_default_train_reaches_97_percent_on_held_out_digits(tmp_path):
    """`keras-vit train` with no flags: offline digits, >= 97% held-out accuracy, a complete run folder."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "keras_vit.cli", "train"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = re.search(r"run folder: (\S+)", done.stdout).group(1)
    assert run_dir.startswith(str(tmp_path / "runs" / "digits_vit-"))
    for name in ("model.keras", "metrics.json", "history.csv", "learning_curve.png", "recipe.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    metrics = json.loads(pathlib.Path(run_dir, "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["eval_split"] == "test"
    assert metrics["test_accuracy"] >= 0.97, metrics


def test_run_folder_listing_shows_what_is_there(tmp_path):
    from keras_vit.recipes.cli import run_folder_entries

    for name in ("recipe.json", "model.keras", "history.csv", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoints").mkdir()
    assert run_folder_entries(str(tmp_path)) == [
        "model.keras",
        "history.csv",
        "recipe.json",
        "checkpoints/",
        "notes.txt",
    ]
