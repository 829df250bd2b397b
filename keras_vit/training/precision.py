"""Chooses the Keras dtype policy for training: `mixed_precision` True, False or "auto".

"auto" turns on `mixed_bfloat16` only where it is faster: with native
bfloat16 matrix units, and on a CPU only for models at least
`MIN_CPU_BF16_WIDTH` wide. Measured on this project's benchmark machine (AMD
EPYC with AVX512_BF16; paired runs in one process, docs/benchmarks.md), a
train step in mixed bfloat16 ran 1.27-1.30x (CIFAR model, width 192; 1.36-1.43x
at its recipe's batch 128) and 1.22-1.27x (ViT-Ti/16) as fast as the best
float32 setting and ViT-B/16 inference 1.63-1.73x, but the width-64 digits
model gained little (0.98-1.10x without XLA: the casts and float32 layer norms
cost most of what the matmuls save) and trains faster still in float32 with
XLA (`keras_vit.training.xla`). Without AVX512_BF16/AMX the bfloat16 matmuls
are emulated and slower than float32. On GPUs bfloat16 needs compute
capability 8.0 (Ampere) or newer; older GPUs stay float32 under "auto"
(float16 needs loss scaling, which the user asks for with
`mixed_precision=True`).
"""

from __future__ import annotations

from typing import Any

#: CPU feature flags (Linux /proc/cpuinfo names) of native bfloat16 dot products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIXED_PRECISION_VALUES = (True, False, "auto")
#: Narrowest token width (hidden_dim) for which "auto" picks bfloat16 on a CPU.
MIN_CPU_BF16_WIDTH = 128


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags listed in `path` (empty when it cannot be read, e.g. off Linux)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU has native bfloat16 dot products (AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each visible GPU, `[]` when TensorFlow sees none."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        found.append(tuple(capability) if capability else (0, 0))
    return found


def check_mixed_precision(value: Any) -> Any:
    """Validates a `mixed_precision` setting; returns it unchanged."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, bool):
        return value
    raise ValueError(
        "`mixed_precision` must be True, False or 'auto' (bfloat16 where the hardware has it). "
        f"Received: mixed_precision={value!r}"
    )


def resolve_policy(
    mixed_precision: Any = "auto",
    *,
    cpu_bf16: bool | None = None,
    gpus: list[tuple[int, int]] | None = None,
    width: int | None = None,
) -> str:
    """The Keras dtype policy name for a `mixed_precision` setting on this machine.

    Args:
        mixed_precision: bool or "auto". False: "float32". True: "mixed_float16"
            on GPU, "mixed_bfloat16" on CPU (the user's demand, even where
            slower). "auto": "mixed_bfloat16" where native bfloat16 is present
            (all GPUs compute capability >= 8.0, or no GPU and a CPU with
            AVX512_BF16/AMX-BF16 and a model at least `MIN_CPU_BF16_WIDTH`
            wide), else "float32".
        cpu_bf16: override of the CPU detection (tests). Defaults to `cpu_has_bf16()`.
        gpus: override of the GPU compute capabilities (tests). Defaults to the visible GPUs.
        width: the model's token width (hidden_dim); None: not known, no width limit.

    Returns:
        "float32", "mixed_bfloat16" or "mixed_float16".
    """
    check_mixed_precision(mixed_precision)
    if mixed_precision is False:
        return "float32"
    gpus = gpu_compute_capabilities() if gpus is None else gpus
    if mixed_precision is True:
        return "mixed_float16" if gpus else "mixed_bfloat16"
    if gpus:
        return "mixed_bfloat16" if all(capability >= (8, 0) for capability in gpus) else "float32"
    cpu_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    wide_enough = width is None or width >= MIN_CPU_BF16_WIDTH
    return "mixed_bfloat16" if cpu_bf16 and wide_enough else "float32"
