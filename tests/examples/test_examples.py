"""Every script in examples/ runs end to end in its --smoke mode, and its own result is checked from outside.

Parametrized over the files themselves, so a new example without a check here
fails (add it to CHECKS). Each script also checks itself: its last line starts
with "check:" and its exit status is non-zero when that check fails; the
checks below re-read the numbers and files rather than trusting that line.
"""

import glob
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
CHANCE = 0.1  # every example classifies (or predicts) one of 10 digits or classes


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no match for {pattern!r} in the output:\n{text[-3000:]}"
    return float(match.group(1))


def check_adversarial_training(out: str, tmp_path) -> None:
    normal = re.search(r"normal training:\s+clean ([\d.]+)\s+FGSM ([\d.]+)\s+PGD ([\d.]+)", out)
    robust = re.search(r"adversarial training: clean ([\d.]+)\s+PGD ([\d.]+)", out)
    assert normal and robust, out[-3000:]
    clean, fgsm, pgd = map(float, normal.groups())
    robust_clean, robust_pgd = map(float, robust.groups())
    assert clean > CHANCE and robust_clean > CHANCE
    assert fgsm <= clean and pgd <= clean and robust_pgd <= robust_clean  # an attack never helps
    assert robust_pgd > pgd  # adversarial training makes the same attack less effective


def check_distill_deit(out: str, tmp_path) -> None:
    assert number(r"teacher \([\d,]+ params\) test accuracy: ([\d.]+)", out) > CHANCE
    assert number(r"hard distillation\) test accuracy: ([\d.]+)", out) > CHANCE


def check_export_and_serve(out: str, tmp_path) -> None:
    rest = re.search(r"REST top classes: (\[.*?\])", out)
    grpc = re.search(r"gRPC top classes: (\[.*?\])", out)
    assert rest and grpc, out[-3000:]  # both servers answered
    assert "'state': 'AVAILABLE'" in out
    assert len(json.loads(rest.group(1).replace("'", '"'))) == len(json.loads(grpc.group(1)))


def check_finetune_checkpoint(out: str, tmp_path) -> None:
    import timm
    import torch
    from safetensors.torch import load_file

    # the checkpoint the smoke run wrote is in timm's published format: timm's own ViT of that architecture
    # (16 px, patch 4, width 32, 2 blocks, 5 classes) loads it strictly, every key and shape
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5
    )
    reference.load_state_dict(load_file(str(tmp_path / "run" / "tiny_vit.safetensors")), strict=True)
    assert torch.isfinite(reference(torch.zeros(1, 3, 16, 16))).all()
    assert "Resampling the position embedding from a 4x4 to a 8x8" in out  # loaded at 32 px
    accuracy, chance = (
        float(x) for x in re.search(r"fine-tuned test accuracy ([\d.]+) above chance \(([\d.]+)\)", out).groups()
    )
    assert chance == CHANCE and accuracy > chance
    with open(tmp_path / "run" / "finetune" / "metrics.json") as file:
        metrics = json.load(file)
    assert math.isclose(metrics["test_accuracy"], accuracy, abs_tol=1e-4) and metrics["recipe"] == "vit_finetune"


def check_multi_worker(out: str, tmp_path) -> None:
    assert "replicas=2" in out  # one MultiWorkerMirroredStrategy across two processes
    assert "workers exited with [0, 0]" in out
    path = re.search(r"the chief wrote (\S+\.npz)", out).group(1)
    with np.load(path) as weights:
        assert len(weights.files) > 0 and all(np.isfinite(weights[k]).all() for k in weights.files)


def check_quickstart(out: str, tmp_path) -> None:
    assert number(r"held-out accuracy ([\d.]+)", out) > CHANCE
    assert number(r"evaluate: \{'accuracy': ([\d.]+)", out) > CHANCE
    assert os.path.isfile(tmp_path / "run" / "whole" / "model.keras")


def check_sequence_transformer(out: str, tmp_path) -> None:
    assert number(r'"final_token_accuracy": ([\d.]+)', out) > CHANCE
    assert 0.0 <= number(r'"exact_match_greedy": ([\d.]+)', out) <= 1.0


def check_train_cifar10(out: str, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert os.path.isfile(run_dir / "model.keras")
    with open(run_dir / "metrics.json") as file:
        metrics = json.load(file)
    assert math.isfinite(metrics["test_loss"]) and metrics["dataset"] == "cifar10"


def check_mae_few_labels(out: str, tmp_path) -> None:
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    starts = {"faces": ("mae", "supervised", "scratch")}  # faces only (the digits go the same way): every start
    assert len(results["runs"]) == 3 and results["host"]["cpus"] >= 1
    for run in results["runs"]:  # the file holds what the run printed
        assert run["start"] in starts[run["dataset"]] and run["per_class"] == 5
        printed = number(rf"{run['dataset']}\s+5 labels/class, {run['start']}\s*: test accuracy ([\d.]+)", out)
        assert 0.0 <= printed <= 1.0 and math.isclose(printed, run["accuracy"], abs_tol=1e-4)
    assert 0.0 <= number(r"supervised pretraining on 1,437 labelled digits: .*digits test accuracy ([\d.]+)", out) <= 1
    with open(tmp_path / "results.md") as file:
        assert file.read().count("| 5 |") == 3
    for name in starts:
        with Image.open(tmp_path / "images" / f"mae_{name}_reconstruction.png") as image:
            assert image.format == "PNG" and image.size[0] > image.size[1] / 2


def check_visualize_attention(out: str, tmp_path) -> None:
    pictures = sorted(os.listdir(tmp_path / "images"))
    assert len(pictures) == 9, pictures
    for name in pictures:
        with Image.open(tmp_path / "images" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 100, name


# script -> (extra command-line arguments, check of its output and files); {tmp} is the test's folder
CHECKS = {
    "adversarial_training.py": ([], check_adversarial_training),
    "distill_deit.py": ([], check_distill_deit),
    "export_and_serve.py": ([], check_export_and_serve),
    "finetune_checkpoint.py": (["--run_dir", "{tmp}/run"], check_finetune_checkpoint),
    "mae_few_labels.py": (
        ["--datasets", "faces", "--out", "{tmp}/images", "--results", "{tmp}/results"],
        check_mae_few_labels,
    ),
    "multi_worker.py": ([], check_multi_worker),
    "quickstart.py": (["--run_dir", "{tmp}/run"], check_quickstart),
    "sequence_transformer.py": ([], check_sequence_transformer),
    "train_cifar10.py": (["--run_dir", "{tmp}/run"], check_train_cifar10),
    "visualize_attention.py": (["--out", "{tmp}/images"], check_visualize_attention),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_example_runs_in_smoke_mode_and_checks_its_result(script, tmp_path):
    name = os.path.basename(script)
    assert name in CHECKS, f"examples/{name} has no smoke check: add it to CHECKS in {__file__}"
    extra, check = CHECKS[name]
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    )
    # run from an empty folder, as a user who copied the script would (nothing found in the checkout's runs/)
    done = subprocess.run(
        [sys.executable, script, "--smoke", *[a.format(tmp=tmp_path) for a in extra]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("check:") and not last.endswith("False"), last
    check(done.stdout, tmp_path)


def test_every_example_has_a_check_and_a_smoke_flag():
    names = {os.path.basename(path) for path in SCRIPTS}
    assert names == set(CHECKS), f"examples without a check: {names - set(CHECKS)}; stale: {set(CHECKS) - names}"
    for path in SCRIPTS:
        with open(path) as file:
            source = file.read()
        assert '"--smoke"' in source and source.startswith('"""'), f"{path}: needs a docstring and --smoke"
