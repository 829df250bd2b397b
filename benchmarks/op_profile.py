"""Where a Keras step's time goes, op type by op type (TensorFlow profiler, CPU).

    python -m benchmarks.op_profile --task predict --model vit_base_patch16_224 --batch 8
    python -m benchmarks.op_profile --task train --model vit_cifar_patch4_32 --batch 32 --library keras_hub
    python -m benchmarks.op_profile --task train --model vit_cifar_patch4_32 --batch 128 --by layer --inter-op-threads 1

Runs a few warm steps under `tf.profiler`, reads the trace (the XPlane
protobuf TensorFlow writes) and sums the time of every executed kernel by op
type. It shows what the graph rewriter fused (`_MklNativeFusedMatMul` with
bias and GELU, no separate `BiasAdd`/`Erf`) and what is left besides the
matmuls; the layer-norm share is the time of ops under a `norm` scope. `--by layer`
sums by the block sub-layer instead (attn, mlp, norm; matmuls on their own).
The train-time XLA kernels (`keras_vit.layers._fast.kernels`) are one row of
their own: the trace does not say which layer launched them.
Op times on two cores overlap, so shares, not sums, are the reading, unless
`--inter-op-threads 1` runs one op at a time (a few percent slower in all).
"""

from __future__ import annotations

import argparse
import collections
import glob
import itertools
import re
import sys
import tempfile

from benchmarks.worker import PRECISIONS

# Profiler bookkeeping events on the executor threads, not kernels ("Start" is
# `ExecutorState::ProcessAsync::Start`, which wraps an XLA kernel's own event).
NOT_KERNELS = {"Process", "Start", "StartRegion", "StopRegion", "Record", "MemoryAllocation", "MemoryDeallocation"}
# The event of an XLA-compiled function's execution; the trace does not name the op that launched it.
XLA_KERNEL = "ExecuteAsyncOnStream"
XLA_LABEL = "XLA kernels (_fast.kernels)"


def kernel_times(trace_dir: str) -> collections.Counter:
    """Seconds per `op_name:OpType` kernel event summed over a trace directory's XPlane file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    if not files:
        raise FileNotFoundError(f"No *.xplane.pb under {trace_dir}: the profiler wrote no trace.")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as handle:
        space.ParseFromString(handle.read())
    times = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name:
                    times[name] += event.duration_ps * 1e-12
    return times


def _rows(times: collections.Counter, steps: int, label) -> list[tuple[str, float, float]]:
    """(label, ms per step, share) rows, largest first, summing kernels by `label(scope, op_type)`."""
    totals = collections.Counter()
    for name, seconds in times.items():
        scope, op_type = name.rsplit(":", 1)
        if op_type not in NOT_KERNELS:
            totals[label(scope, op_type)] += seconds
    grand = sum(totals.values()) or 1.0
    return [(key, 1e3 * s / steps, s / grand) for key, s in totals.most_common()]


def _op_type_label(scope: str, op_type: str) -> str:
    if op_type == XLA_KERNEL:
        return XLA_LABEL
    in_norm = any("norm" in part for part in scope.split("/")[-3:-1])
    return f"LayerNorm/{op_type}" if in_norm else op_type


def by_op_type(times: collections.Counter, steps: int) -> list[tuple[str, float, float]]:
    """(op type, ms per step, share) rows, largest first; layer-norm ops as 'LayerNorm/<type>'."""
    return _rows(times, steps, _op_type_label)


def layer_of(scope: str, op_type: str) -> str:
    """'matmul' for matmul kernels, else the keras_vit block sub-layer (attn, mlp, norm) the op ran in,
    'optimizer' for the optimizer's update ops, or 'other'."""
    if "MatMul" in op_type or "Einsum" in op_type:
        return "matmul"
    if op_type == XLA_KERNEL:
        return XLA_LABEL
    parts = scope.split("/")
    for part, child in itertools.pairwise(parts):
        if re.fullmatch(r"block[_\d]*", part):  # block_3, or block_3_1 when TensorFlow deduplicated it
            return re.sub(r"[_\d]+$", "", child)  # attn_1 -> attn, norm1_1 -> norm
    if parts[0].startswith(("adam", "sgd", "layer_decay_")):
        return "optimizer"
    return "other"


def by_layer(times: collections.Counter, steps: int) -> list[tuple[str, float, float]]:
    """(sub-layer, ms per step, share) rows, largest first (see `layer_of`)."""
    return _rows(times, steps, layer_of)


def profile_step(step, steps: int = 3, group=by_op_type) -> list[tuple[str, float, float]]:
    """Warms `step` up, traces `steps` calls of it, returns `group` rows (`by_op_type` or `by_layer`)."""
    import tensorflow as tf

    for _ in range(2):
        step()
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        try:
            for _ in range(steps):
                step()
        finally:
            tf.profiler.experimental.stop()
        return group(kernel_times(trace_dir), steps)


def markdown(rows: list[tuple[str, float, float]], top: int = 20, first_column: str = "op type") -> str:
    """The `top` rows as a table, then the matmul and layer-norm shares of all kernel time."""
    lines = [f"| {first_column} | ms per step | share of kernel time |", "|---|---:|---:|"]
    lines += [f"| {op} | {ms:.2f} | {share:.1%} |" for op, ms, share in rows[:top]]
    norm = sum(share for op, _, share in rows if op.startswith("LayerNorm/") or op == "norm")
    matmul = sum(share for op, _, share in rows if "matmul" in op.lower())
    return "\n".join(lines) + f"\n\nmatmul kernels {matmul:.1%}, layer norm {norm:.1%} of kernel time"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("train", "predict"), default="predict")
    parser.add_argument("--model", default="vit_base_patch16_224", help="keras_vit registry name (any family)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--library", choices=("keras_vit", "keras_hub"), default="keras_vit")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--by", choices=("op", "layer"), default="op", help="group kernels by op type or sub-layer")
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=0,
        help="TensorFlow inter-op threads; 1 runs one op at a time (default 0: TensorFlow's choice)",
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.inter_op_threads < 0:
        parser.error("--batch and --steps must be >= 1, --inter-op-threads >= 0")
    # torch and timm before TensorFlow (see peers.py): timm counts a family model's FLOPs in `build_step`
    import timm.models.vision_transformer  # noqa: F401

    if args.inter_op_threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    from benchmarks import paired, peers

    arch = peers.resolve_model(args.model)
    step, _ = paired.build_step(args.task, (args.library, args.precision, False), arch, args.batch)
    print(f"{args.library} {args.task} {args.model} batch {args.batch} {args.precision}, no XLA\n")
    group, column = (by_op_type, "op type") if args.by == "op" else (by_layer, "sub-layer")
    print(markdown(profile_step(step, args.steps, group), first_column=column))
    return 0


if __name__ == "__main__":
    sys.exit(main())
