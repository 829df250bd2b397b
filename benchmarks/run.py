"""Runs the benchmark cases, each in its own process, and writes JSON + markdown to benchmarks/results/.

    python -m benchmarks.run            # the full run (~15 min on 2 cores)
    python -m benchmarks.run --smoke    # tiny shapes, one step each: checks the harness works
    python -m benchmarks.run --accuracy # the default recipe in float32 and bfloat16: test accuracy
    python -m benchmarks.run --only infer/keras_vit --name mine

Each case runs `python -m benchmarks.worker CASE_JSON` in a fresh interpreter;
the load average before and after each case is recorded with its result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import cases as case_lists
from benchmarks import machine, report
from benchmarks.worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_one(case: dict, timeout_s: float) -> dict:
    """Runs one case in a subprocess; returns its record (`ok`, `result` or `error`, load, wall time)."""
    record = dict(id=case_lists.case_id(case), case=case, load_before=machine.load_average())
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
    )
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(case)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if done.returncode == 0 and lines:
            result = json.loads(lines[-1][len(RESULT_PREFIX) :])
            record.update(ok=True, result=result, peak_rss_mib=result.pop("peak_rss_mib"))
        else:
            record.update(ok=False, error=f"exit {done.returncode}: {done.stderr.strip()[-1500:]}")
    except subprocess.TimeoutExpired:
        record.update(ok=False, error=f"timed out after {timeout_s:.0f} s")
    record.update(wall_s=time.perf_counter() - start, load_after=machine.load_average())
    return record


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)  # mkstemp makes the file private; results are meant to be read and committed
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def run(selected: list[dict], mode: str, out_dir: Path, name: str, timeout_s: float, verbose: bool = True) -> dict:
    """Runs `selected` in order and writes `<name>.json` and `<name>.md` to `out_dir`."""
    run_record = dict(mode=mode, machine=machine.describe(), results=[])
    started = time.perf_counter()
    for index, case in enumerate(selected, 1):
        record = run_one(case, timeout_s)
        run_record["results"].append(record)
        write_atomic(out_dir / f"{name}.json", json.dumps(run_record, indent=1) + "\n")  # partial results survive
        if verbose:
            status = "ok" if record["ok"] else "FAILED " + record["error"][-300:]
            print(
                f"[{index}/{len(selected)}] {record['id']}: {record['wall_s']:.1f} s, load "
                f"{record['load_before'][0]:.1f}, {status}",
                flush=True,
            )
    run_record["total_s"] = time.perf_counter() - started
    write_atomic(out_dir / f"{name}.json", json.dumps(run_record, indent=1) + "\n")
    write_atomic(out_dir / f"{name}.md", report.markdown(run_record))
    return run_record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one step each (seconds per case)")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="train the default recipe in float32 and bfloat16 and compare test accuracy",
    )
    parser.add_argument(
        "--seeds", default=None, help="with --accuracy: comma-separated recipe seeds, each run in both precisions"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="run only cases whose id contains this text (repeatable)"
    )
    parser.add_argument("--name", default=None, help="output file stem (default: 'latest' or 'smoke')")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it is abandoned")
    parser.add_argument("--list", action="store_true", help="print the case ids and exit")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive. Received: --timeout={args.timeout}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke and args.accuracy:
        raise SystemExit("Choose one of --smoke and --accuracy.")
    if args.smoke:
        selected = case_lists.smoke_cases()
    elif args.accuracy:
        try:
            seeds = None if args.seeds is None else tuple(int(v) for v in args.seeds.split(","))
        except ValueError:
            raise SystemExit(f"--seeds must be comma-separated integers. Received: --seeds={args.seeds}") from None
        selected = case_lists.accuracy_cases(seeds=seeds)
    else:
        selected = case_lists.full_cases()
    if args.only:
        selected = [c for c in selected if any(text in case_lists.case_id(c) for text in args.only)]
        if not selected:
            raise SystemExit(f"No case id contains any of {args.only}; see --list.")
    if args.list:
        print("\n".join(case_lists.case_id(c) for c in selected))
        return 0
    mode = "smoke" if args.smoke else "accuracy" if args.accuracy else "full"
    mode += " (filtered)" if args.only else ""
    name = args.name or ("smoke" if args.smoke else "accuracy" if args.accuracy else "latest")
    record = run(selected, mode, args.out_dir, name, args.timeout)
    print(f"wrote {args.out_dir / name}.json and .md in {record['total_s']:.0f} s")
    return 0 if all(r["ok"] for r in record["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
