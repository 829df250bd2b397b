"""Interleaved A/B timing of benchmark cases on a shared, noisy machine.

    python -m benchmarks.ab --rounds 3 --cpus 0,1 \
        '{"kind": "infer", "lib": "keras_vit", "model": "vit_base_patch16_224", "batches": [8]}' \
        '{"kind": "infer", "lib": "keras_hub", "model": "vit_base_patch16_224", "batches": [8]}'

Each case runs in its own `benchmarks.worker` process (pinned with `taskset`
when `--cpus` is given), the cases alternate A, B, A, B, ... so that load from
other users hits both sides alike, and the summary reports, per case, the
median over rounds of the wall-clock images/s and of the images per CPU-second
(the second is much less sensitive to other processes stealing the cores).
An optional `env` dict in a case sets environment variables for its worker
(e.g. oneDNN or thread settings), which is how such settings were A/B tested;
an optional `root` runs the case from another checkout of the project (the
code before a change, e.g. `git archive HEAD~1 | tar -x -C /tmp/before`), so
that before and after alternate in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent


def run_pinned(case: dict, cpus: str | None, timeout_s: float) -> dict:
    """Runs one case in a fresh worker (pinned to `cpus` when set); returns the worker's result dict."""
    case = dict(case)
    extra_env = {str(k): str(v) for k, v in case.pop("env", {}).items()}
    root = Path(case.pop("root", ROOT))
    if not (root / "benchmarks" / "worker.py").is_file():
        raise ValueError(f"A case's `root` must be a checkout of keras_vit. Received: root={str(root)!r}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra_env, PYTHONPATH=str(root))
    command = [sys.executable, "-m", "benchmarks.worker", json.dumps(case)]
    if cpus:
        if shutil.which("taskset") is None:
            raise ValueError("`--cpus` needs the `taskset` program (util-linux). Received: cpus=" + cpus)
        command = ["taskset", "-c", cpus] + command
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise RuntimeError(f"case failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def rates(result: dict) -> tuple[float, float]:
    """(images/s by wall clock, images per CPU-second) of an infer (first batch) or train result."""
    row = result["batches"][0] if "batches" in result else result
    batch = row["batch"]
    return batch / row["median_s"], batch / max(row["median_cpu_s"], 1e-9)


def summarize(samples: dict[str, list[tuple[float, float]]]) -> str:
    """A markdown table: per case, the median and spread of both rates, and each vs the first case."""
    first = next(iter(samples))
    base_wall = float(np.median([w for w, _ in samples[first]]))
    base_cpu = float(np.median([c for _, c in samples[first]]))
    lines = [
        "| case | rounds | img/s median (min-max) | img/CPU-s median (min-max) | wall vs A | CPU-s vs A |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in samples.items():
        wall, cpu = np.array([w for w, _ in values]), np.array([c for _, c in values])
        lines.append(
            f"| {name} | {len(values)} | {np.median(wall):.2f} ({wall.min():.2f}-{wall.max():.2f}) | "
            f"{np.median(cpu):.2f} ({cpu.min():.2f}-{cpu.max():.2f}) | {np.median(wall) / base_wall:.2f} | "
            f"{np.median(cpu) / base_cpu:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="case JSON objects (see benchmarks/cases.py); the first is A")
    parser.add_argument("--names", default=None, help="comma-separated short names of the cases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", default=None, help="taskset CPU list, e.g. 0,1")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: --rounds={args.rounds}")
    parsed = [json.loads(text) for text in args.cases]
    names = args.names.split(",") if args.names else [f"case{i}" for i in range(len(parsed))]
    if len(names) != len(parsed):
        parser.error(f"--names needs one name per case ({len(parsed)}). Received: --names={args.names}")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = list(zip(names, parsed))
        if round_index % 2:
            order.reverse()  # A B / B A / A B: neither side always runs first
        for name, case in order:
            wall, cpu = rates(run_pinned(case, args.cpus, args.timeout))
            samples[name].append((wall, cpu))
            print(
                f"round {round_index + 1} {name}: {wall:.2f} img/s, {cpu:.2f} img/CPU-s, "
                f"load {machine.load_average()[0]:.1f}",
                flush=True,
            )
    print(summarize(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
