"""Paired, interleaved timing of Keras variants in ONE process: the tool for deciding a setting here.

    python -m benchmarks.paired --task train --model vit_cifar_patch4_32 --batch 32 --rounds 12 \
        keras_hub:float32:auto keras_vit:float32:xla keras_vit:float32:off keras_vit:bfloat16:off
    python -m benchmarks.paired --task predict --model vit_base_patch16_224 --batch 8 \
        keras_hub:float32:auto keras_vit:float32:off matmul:float32

On this project's shared 2-core machine the same computation runs in a fast or
a ~1.35x slower state that changes every few seconds (other tenants of the
host), CPU time included, so two cases measured one after the other in
separate processes can differ by more than the effect under test. Here every
variant (library:precision:xla) is built in the same process and the rounds
cycle through them, a few steps each, in a rotating order; each round gives
every variant's time relative to the first variant's in the same round, and
the report is the median of those per-round ratios with its quartiles. A
`matmul:float32` variant (TensorFlow's 2048x2048 matmul) in the rotation
gives each model's share of the machine's matmul rate round by round;
`timm:float32` / `timm:bfloat16` puts timm on PyTorch in the same rotation
(AdamW steps for `--task train`; bfloat16 under `torch.autocast`); with
`matmul:bfloat16` too, each row is compared with the matmul of its own
precision; `products:float32` / `products:bfloat16` (predict only) runs the
model's own matrix products alone, at its shapes: the rate its forward could
reach here in that precision if everything but the matmuls took no time; `lean:float32` (predict only) runs
the same forward as keras_vit in the fewest stock TensorFlow ops, with the
layer norms' affines and the query scale folded into the weights
(`benchmarks.lean_forward`): what a graph of stock TensorFlow kernels reaches
with nothing left to fold. `--model` takes any registered name: a model of
another family (SigLIP, CLIP, DINOv2, EVA, BEiT, ...) is built by name on
every side (`peers.family_arch`; keras-hub only for SigLIP, CLIP and DINOv2)
and its FLOPs are read from timm's forward (`flops.timm_forward_matmuls`);
`--depth` and `--image-size` shrink it on every side. `benchmarks.run` stays the one-process-per-case run
the README tables come from (peak memory, first-call times); this module
decides settings.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import machine
from benchmarks.worker import PRECISIONS

XLA = {"xla": True, "off": False, "auto": "auto"}
TASKS = ("train", "predict")
MATMUL_SIZE = 2048


def parse_variant(text: str) -> tuple[str, str, bool | str]:
    """'keras_vit:float32:xla' -> ("keras_vit", "float32", True); 'matmul:float32' -> ("matmul", "float32", False).

    'timm:float32' / 'timm:bfloat16' is timm's model on PyTorch (bfloat16
    through `torch.autocast`); 'products:float32' is the model's own
    matrix products alone, at its shapes (predict only; `worker.model_matmuls_call`);
    'lean:float32' its forward in the fewest stock TensorFlow ops (predict only; `lean_forward`).
    """
    parts = text.split(":")
    if parts[0] in ("matmul", "timm", "products") and len(parts) == 2 and parts[1] in PRECISIONS:
        return parts[0], parts[1], False
    if parts == ["lean", "float32"]:
        return "lean", "float32", False
    if (
        len(parts) != 3
        or parts[0] not in ("keras_vit", "keras_hub")
        or parts[1] not in PRECISIONS
        or parts[2] not in XLA
    ):
        raise ValueError(
            "A variant is library:precision:xla with library keras_vit|keras_hub, precision "
            "float32|bfloat16 and xla xla|off|auto (Keras' default), or matmul:float32|bfloat16, "
            "or timm:float32|bfloat16, or products:float32|bfloat16, or lean:float32. "
            f"Received: {text!r}"
        )
    return parts[0], parts[1], XLA[parts[2]]


def build_step(task: str, variant: tuple[str, str, bool | str], arch: dict, batch: int):
    """(a zero-argument callable running one train step, predict call or matmul, its FLOPs)."""
    import keras
    import tensorflow as tf

    from benchmarks import flops, peers, worker

    lib, precision, jit = variant
    if lib == "matmul":
        return worker.matmul_call(MATMUL_SIZE, precision), 2 * MATMUL_SIZE**3
    if lib == "timm" and task == "train":
        return worker.timm_train_step(precision, arch, batch), batch * flops.train_flops(arch)
    if lib in ("products", "lean") and task != "predict":
        raise ValueError(f"{lib} variants time predict only. Received: task={task!r}")
    if lib == "lean" and "registry_name" in arch:
        raise ValueError(f"lean variants cover the plain ViT only. Received: model={arch['registry_name']!r}")
    if lib == "products":
        return worker.model_matmuls_call(arch, batch, precision), batch * flops.forward_flops(arch)
    if lib == "timm":
        predict = worker.timm_predictor({"precision": precision}, arch)
        images = worker.synthetic_images(arch, batch, channels_first=True)
        return (lambda: predict(images)), batch * flops.forward_flops(arch)
    dtype = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    if lib == "keras_vit" and task == "predict" and precision == "bfloat16":
        dtype = "bfloat16"  # keras_vit's bfloat16 inference form (`inference_copy`): weights cast once, not per call
    keras.utils.set_random_seed(0)
    model = (peers.build_keras_hub if lib == "keras_hub" else peers.build_keras_vit)(arch, dtype=dtype)
    images = tf.constant(worker.synthetic_images(arch, batch))
    if lib == "lean":
        from benchmarks.lean_forward import lean_forward

        forward = lean_forward(model)
        return (lambda: forward(images).numpy()), batch * flops.forward_flops(arch)
    if task == "predict":
        model.compile(**worker.jit_kwargs(jit))
        return (lambda: model.predict_on_batch(images)), batch * flops.forward_flops(arch)
    labels = tf.constant(np.random.default_rng(1).integers(0, arch["num_classes"], batch).astype("int32"))
    worker.compile_for_training(model, lib, jit, learning_rate=1e-4)
    return (lambda: model.train_on_batch(images, labels)), batch * flops.train_flops(arch)


def interleave(steps: list, rounds: int, calls: int) -> np.ndarray:
    """Seconds per call, shape (rounds, variants): each round runs `calls` calls of every variant, rotated."""
    for step in steps:  # trace / compile and warm up outside the timing
        step()
        step()
    seconds = np.zeros((rounds, len(steps)))
    for round_index in range(rounds):
        shift = round_index % len(steps)
        for index in list(range(shift, len(steps))) + list(range(shift)):
            start = time.perf_counter()
            for _ in range(calls):
                steps[index]()
            seconds[round_index, index] = (time.perf_counter() - start) / calls
    return seconds


def summarize(names: list[str], seconds: np.ndarray, flops_per_call: list[float]) -> str:
    """Markdown: per variant GFLOP/s, its per-round speed vs the first variant and vs TensorFlow's matmul in
    the variant's own precision (if in the rotation), and, with a `products:` variant of the same precision, vs the
    model's own matrix products alone (its ceiling in that precision)."""
    speedups = seconds[:, :1] / seconds  # > 1: faster than the first variant in the same round
    rates = np.asarray(flops_per_call) / seconds / 1e9  # GFLOP/s, (rounds, variants)
    precisions = [name.split(":")[1] for name in names]
    matmul = {p: i for i, (name, p) in enumerate(zip(names, precisions)) if name.startswith("matmul:")}
    products = {p: i for i, (name, p) in enumerate(zip(names, precisions)) if name.startswith("products:")}
    header = (
        "| variant | GFLOP/s (median) | vs first, per-round median (quartiles) | rounds faster | "
        "/ matmul in its precision, per-round median (quartiles) |"
    )
    lines = [
        header + (" / own products |" if products else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if products else ""),
    ]

    def spread(values):
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return f"{median:.2f} ({q1:.2f}-{q3:.2f})"

    for i, name in enumerate(names):
        own = matmul.get(precisions[i])
        share = spread(rates[:, i] / rates[:, own]) if own is not None else "n/a"
        versus, faster = "n/a", "n/a"  # a matmul and a model, or two matmuls, do not compare by time
        if not name.startswith("matmul") and not names[0].startswith("matmul"):
            versus, faster = spread(speedups[:, i]), f"{int(np.sum(speedups[:, i] > 1.0))}/{len(speedups)}"
        line = f"| {name} | {np.median(rates[:, i]):.1f} | {versus} | {faster} | {share} |"
        if products:
            ceiling = products.get(precisions[i])
            useful = ceiling is not None and not name.startswith("matmul")
            line += f" {spread(rates[:, i] / rates[:, ceiling]) if useful else 'n/a'} |"
        lines.append(line)
    return "\n".join(lines)


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="library:precision:xla, e.g. keras_vit:float32:xla; first = base")
    parser.add_argument("--task", choices=TASKS, default="train")
    parser.add_argument(
        "--model", default="vit_cifar_patch4_32", help="keras_vit registry name (any family: SigLIP, EVA, ...)"
    )
    parser.add_argument("--depth", type=int, help="override the model's depth on every side (a quicker check)")
    parser.add_argument("--image-size", type=int, help="override the model's image size on every side")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=3, help="train steps or predict calls per variant per round")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.batch < 1:
        parser.error("--rounds, --calls and --batch must be >= 1")
    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as error:
        parser.error(str(error))
    # torch and timm before TensorFlow (see peers.py): timm runs as a variant and counts family models' FLOPs
    import timm.models.vision_transformer  # noqa: F401

    from benchmarks import peers

    overrides = {key: value for key, value in (("depth", args.depth), ("image_size", args.image_size)) if value}
    arch = peers.resolve_model(args.model, **overrides)
    built = [build_step(args.task, v, arch, args.batch) for v in variants]
    seconds = interleave([step for step, _ in built], args.rounds, args.calls)
    info = machine.describe()
    sized = "".join(f", {key} {value}" for key, value in overrides.items())
    print(
        f"{args.task} {args.model}{sized} batch {args.batch}, {args.rounds} rounds x {args.calls} calls, "
        f"{info['date']}, {info['cpu']} ({info['host_kind']}; AMX-BF16 {yes(info['amx_bf16'])}, "
        f"AVX512-BF16 {yes(info['avx512_bf16'])}, AVX512-FP16 {yes(info['avx512_fp16'])}), "
        f"load {machine.load_average()[0]:.1f}\n"
    )
    print(summarize(args.variants, seconds, [flops_per_call for _, flops_per_call in built]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
