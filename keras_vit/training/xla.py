"""Chooses XLA for training: what `jit_compile="auto"` means in keras_vit.

Keras' own "auto" turns XLA off on CPU-only machines. Measured on this
project's benchmark machine (paired runs in one process, docs/benchmarks.md),
XLA train steps in float32 ran 1.18-1.25x as fast on the width-64 digits
model (the default recipe: XLA removes the per-op overhead that dominates a
narrow model), but on the 192-768 wide models 1.01-1.04x (ViT-Ti/16), 1.00x
(ViT-S/16), 0.98x (ViT-B/16) and 0.85-0.94x on the CIFAR model (0.78-0.86x at
its recipe's batch 128; XLA:CPU does not use the oneDNN-fused rank-2 matmuls);
under mixed bfloat16 XLA:CPU gives up oneDNN's native bfloat16 matmuls and ran
0.65-0.74x as fast. So on a CPU "auto" means XLA when the compute dtype is float32
and the model is narrower than `MIN_CPU_BF16_WIDTH` (128), the width from
which bfloat16 pays: both are where per-op overhead gives way to the matmuls.
On GPUs Keras' "auto" (XLA on) is kept; under a multi-replica mirrored
strategy XLA is off (`strategy.check_jit_compile`).
"""

from __future__ import annotations

import keras

from keras_vit.training.precision import MIN_CPU_BF16_WIDTH, gpu_compute_capabilities
from keras_vit.training.strategy import check_jit_compile

JIT_COMPILE_VALUES = (True, False, "auto")


def check_jit_compile_setting(value) -> None:
    """Raises ValueError unless `value` is True, False or "auto"."""
    if value not in JIT_COMPILE_VALUES:
        raise ValueError(f"`jit_compile` must be True, False or 'auto'. Received: jit_compile={value!r}")


def resolve_jit_compile(
    jit_compile: bool | str,
    policy: str | keras.DTypePolicy,
    strategy,
    *,
    gpus: list[tuple[int, int]] | None = None,
    width: int | None = None,
) -> bool | str:
    """The `jit_compile` argument to pass to `compile` for training under `policy` and `strategy`.

    Args:
        jit_compile: True or False (kept, checked against the strategy) or "auto".
        policy: the Keras dtype policy (name or object) the model trains under.
        strategy: the `tf.distribute.Strategy` the model trains under.
        gpus: override of the visible GPUs' compute capabilities (tests).
        width: the model's token width (hidden_dim); None: not known, treated as narrow.

    Returns:
        True, False, or "auto" (left to Keras) on GPU machines.
    """
    check_jit_compile_setting(jit_compile)
    jit_compile = check_jit_compile(jit_compile, strategy)
    if jit_compile != "auto":
        return jit_compile
    if gpu_compute_capabilities() if gpus is None else gpus:
        return "auto"
    narrow = width is None or width < MIN_CPU_BF16_WIDTH
    return keras.dtype_policies.get(policy).compute_dtype == "float32" and narrow
