"""Peak memory of a ViT forward at a long token sequence, each measurement in a fresh process.

    python -m benchmarks.attention_memory --batch 2 --before /tmp/before

ViT-S/14 at 518 px (1,370 tokens, the dims of timm's `vit_small_patch14_dinov2`)
predicts one batch of random images, once through `model.predict` (a
`tf.function`) and once as an eager `model(images)` call; the child process
reports its peak resident set (`ru_maxrss`). With `--before ROOT` the same
runs use another checkout of the project (the code before a change), so the
table shows what a change did to memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCH = dict(image_size=518, patch_size=14, hidden_dim=384, depth=12, num_heads=6, mlp_dim=1536)

_CHILD = """
import json, resource, sys
import numpy as np
import keras, keras_vit
arch, batch, call = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
model = keras_vit.ViT(**arch)
images = np.random.default_rng(0).uniform(0, 1, (batch, arch["image_size"], arch["image_size"], 3)).astype("float32")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = model.predict(images, batch_size=batch, verbose=0) if call == "predict" else model(images)
print(json.dumps(dict(built_mib=before / 1024, peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def peak_rss(root: Path, arch: dict, batch: int, call: str, timeout_s: float = 900) -> dict:
    """`{"built_mib", "peak_mib"}`: peak RSS after building the model, and after the forward (`call`)."""
    if call not in ("predict", "eager"):
        raise ValueError(f"`call` must be 'predict' or 'eager'. Received: call={call!r}")
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-c", _CHILD, json.dumps(arch), str(batch), call]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"memory run failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--before", default=None, help="another checkout to measure beside this one")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1. Received: --batch={args.batch}")
    roots = {"this checkout": ROOT} if args.before is None else {"before": Path(args.before), "after": ROOT}
    print(f"ViT-S/14 at 518 px, batch {args.batch}: peak RSS in MiB (after building the model -> after the forward)")
    print("| code | call | built | peak | forward's increase |\n|---|---|---|---|---|")
    for call in ("predict", "eager"):
        for name, root in roots.items():
            row = peak_rss(root, ARCH, args.batch, call)
            increase = row["peak_mib"] - row["built_mib"]
            print(f"| {name} | {call} | {row['built_mib']:.0f} | {row['peak_mib']:.0f} | {increase:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
