"""Runs ONE benchmark case and prints its result as one JSON line (`python -m benchmarks.worker CASE_JSON`).

The harness starts a fresh interpreter per case so that import order (torch
before TensorFlow), thread pools, XLA caches and peak memory never leak from
one case into the next. Timings are wall-clock medians after warm-up calls;
the first call (tracing and, with XLA, compilation) is reported on its own.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

RESULT_PREFIX = "BENCH_RESULT "
PRECISIONS = ("float32", "bfloat16")
KINDS = ("matmul", "products", "infer", "train", "recipe")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int, min_repeats: int, budget_s: float) -> dict:
    """Times `fn`: one first call, `warmup - 1` more untimed calls, then up to `repeats` timed ones.

    Stops repeating once `budget_s` seconds of timed calls have passed and at
    least `min_repeats` were made, so the biggest shapes stay affordable.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        fn()
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    spent = 0.0
    while len(seconds) < repeats and (len(seconds) < min_repeats or spent < budget_s):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        spent += seconds[-1]
    return dict(
        first_call_s=first,
        seconds=seconds,
        median_s=float(np.median(seconds)),
        median_cpu_s=float(np.median(cpu_seconds)),
    )


def synthetic_images(arch: dict, batch: int, channels_first: bool = False) -> np.ndarray:
    """Seeded standard-normal images of the architecture's size (float32, NHWC or NCHW)."""
    height, width = arch["image_size"]
    images = np.random.default_rng(0).standard_normal((batch, height, width, arch["num_channels"]))
    images = images.astype("float32")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if channels_first else images


def _set_keras_precision(precision: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")


def jit_kwargs(jit: bool | str) -> dict:
    """`compile` arguments for an XLA setting: none for "auto" (Keras' default)."""
    return {} if jit == "auto" else {"jit_compile": bool(jit)}


def compile_for_training(model, lib: str, jit: bool | str, learning_rate: float = 1e-3) -> None:
    """Compiles `model` the way every training case does: AdamW, sparse cross-entropy on logits.

    keras-hub trains with `keras.optimizers.AdamW`, keras_vit with the AdamW
    its recipes use (`keras_vit.training.LayerDecayAdamW`): the same update and
    hyper-parameters (Keras' defaults, weight decay 0.05), run as one fused
    TensorFlow kernel per variable.
    """
    import keras

    optimizer_class = keras.optimizers.AdamW
    if lib == "keras_vit":
        from keras_vit.training import LayerDecayAdamW as optimizer_class
    model.compile(
        optimizer=optimizer_class(learning_rate=learning_rate, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **jit_kwargs(jit),
    )


def matmul_call(size: int, dtype: str) -> Callable[[], Any]:
    """One call of a compiled `size` x `size` matmul in `dtype`, waited for (a corner copied to the host)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size), dtype="float32", seed=1), dtype)
    b = tf.cast(tf.random.normal((size, size), dtype="float32", seed=2), dtype)
    step = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], "float32")), autograph=False)
    return lambda: step().numpy()


def model_matmuls_call(arch: dict, batch: int, dtype: str) -> Callable[[], Any]:
    """One forward pass's matrix products alone, at the model's own shapes, one after the other.

    The ceiling a model's forward can reach on this machine: its elementwise
    work, softmax and layer norms taken out. The products run in one graph, in
    the model's order (control dependencies), and every result is fetched:
    TensorFlow prunes a product whose result nobody reads. (One compiled call
    per product measured 7% slower for ViT-B/16 and 25% for ViT-Ti/16 at
    batch 8, which would understate the ceiling.)
    """
    import tensorflow as tf

    from benchmarks import flops

    products = flops.forward_matmuls(arch, batch)
    operands = {}
    for count, m, k, n in set(products):
        shapes = [(m, k), (k, n)] if count == 1 else [(count, m, k), (count, k, n)]
        operands[count, m, k, n] = [tf.Variable(tf.cast(tf.random.normal(s, seed=1), dtype)) for s in shapes]

    @tf.function(autograph=False)
    def products_in_order():
        outputs = []
        for shape in products:
            with tf.control_dependencies(outputs[-1:]):
                outputs.append(tf.matmul(*operands[shape]))
        return outputs

    return lambda: products_in_order()[-1][..., :1, :1].numpy()


def run_matmul(case: dict) -> dict:
    """The machine's own dense matmul rate in TensorFlow (size x size, float32 and bfloat16)."""
    size = int(case.get("size", 2048))
    rates = {}
    for dtype in case.get("dtypes", ["float32"]):
        timing = time_calls(
            matmul_call(size, dtype),
            case.get("warmup", 2),
            case.get("repeats", 7),
            case.get("min_repeats", 3),
            case.get("budget_s", 10.0),
        )
        timing["gflops"] = 2 * size**3 / timing["median_s"] / 1e9
        rates[dtype] = timing
    return dict(size=size, rates=rates)


def run_products(case: dict, arch: dict) -> dict:
    """A model's forward matrix products alone at `case["batch"]` (`model_matmuls_call`): its matmul ceiling."""
    batch = int(case.get("batch", 8))
    timing = time_calls(
        model_matmuls_call(arch, batch, case["precision"]),
        case.get("warmup", 1),
        case.get("repeats", 5),
        case.get("min_repeats", 3),
        case.get("budget_s", 5.0),
    )
    return dict(batch=batch, images_per_s=batch / timing["median_s"], **timing)


def keras_predictor(case: dict, arch: dict) -> Callable[[np.ndarray], Any]:
    from benchmarks import peers

    _set_keras_precision(case["precision"])
    model = peers.build_keras_vit(arch) if case["lib"] == "keras_vit" else peers.build_keras_hub(arch)
    model.compile(**jit_kwargs(case.get("jit", "auto")))
    return model.predict_on_batch


def timm_predictor(case: dict, arch: dict) -> Callable[[np.ndarray], Any]:
    import torch

    from benchmarks import peers

    torch.set_num_threads(os.cpu_count() or 1)
    model = peers.build_timm(arch)
    bf16 = case["precision"] == "bfloat16"

    def predict(images):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(torch.from_numpy(images)).float().numpy()

    return predict


def timm_train_step(precision: str, arch: dict, batch: int) -> Callable[[], Any]:
    """One AdamW step of timm's model on PyTorch (cross-entropy; bfloat16 under `torch.autocast`, as timm trains)."""
    import torch

    from benchmarks import peers

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = peers.build_timm(arch).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images = torch.from_numpy(synthetic_images(arch, batch, channels_first=True))
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, arch["num_classes"], batch))
    bf16 = precision == "bfloat16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def run_infer(case: dict, arch: dict) -> dict:
    """Images/s at each batch size of `case["batches"]` (batch 1 gives the latency)."""
    if case["lib"] == "timm":
        predict, channels_first = timm_predictor(case, arch), True
    else:
        predict, channels_first = keras_predictor(case, arch), False
    rows = []
    for batch in case["batches"]:
        images = synthetic_images(arch, batch, channels_first)
        timing = time_calls(
            lambda images=images: predict(images),  # called now, within this iteration
            case.get("warmup", 2),
            case.get("repeats", 5),
            case.get("min_repeats", 3),
            case.get("budget_s", 15.0),
        )
        rows.append(dict(batch=batch, images_per_s=batch / timing["median_s"], **timing))
    return dict(batches=rows)


def run_train(case: dict, arch: dict) -> dict:
    """Images/s over full optimizer steps of `model.fit` (AdamW, cross-entropy), plus the loss per step.

    With `init_from="keras_hub"` the keras_vit model starts from the weights
    of the keras-hub model the other case builds (same seed), so both runs
    walk the same loss curve when their numerics agree.
    """
    import keras
    import tensorflow as tf

    from benchmarks import peers

    _set_keras_precision(case["precision"])
    keras.utils.set_random_seed(int(case.get("seed", 0)))
    if case["lib"] == "keras_hub":
        model = peers.build_keras_hub(arch)
    elif case["lib"] == "keras_vit":
        model = peers.build_keras_vit(arch)
        if case.get("init_from") == "keras_hub":
            keras.utils.set_random_seed(int(case.get("seed", 0)))
            source = peers.build_keras_hub(arch)
            peers.copy_keras_hub_to_keras_vit(source, model)
            del source
            gc.collect()
    else:
        raise ValueError(f"Training runs on the Keras libraries only. Received: lib={case['lib']!r}")
    compile_for_training(model, case["lib"], case.get("jit", "auto"), case.get("learning_rate", 1e-3))
    batch, warmup, steps = case["batch"], case.get("warmup", 2), case.get("steps", 5)
    if warmup < 1 or steps < 1:
        raise ValueError(
            f"Training needs >= 1 warm-up step (it compiles) and >= 1 timed step. "
            f"Received: warmup={warmup}, steps={steps}"
        )
    images = synthetic_images(arch, batch)
    labels = np.random.default_rng(1).integers(0, arch["num_classes"], batch).astype("int32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    timer = _StepTimer()
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    total = time.perf_counter() - start
    step_s, cpu_s = np.diff(timer.ends)[warmup - 1 :], np.diff(timer.cpu_ends)[warmup - 1 :]
    median = float(np.median(step_s))
    return dict(
        batch=batch,
        seconds=[float(s) for s in step_s],
        median_s=median,
        images_per_s=batch / median,
        median_cpu_s=float(np.median(cpu_s)),
        first_call_s=float(timer.ends[0] - start),
        fit_total_s=total,
        losses=timer.losses(),
    )


class _StepTimer:
    """Keras callback recording when each training step ends and the running-mean loss then."""

    def __init__(self):
        import keras

        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.means: list[float] = []
        self._callback = keras.callbacks.LambdaCallback(on_train_batch_end=self._record)

    def _record(self, batch, logs):
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.means.append(float(logs["loss"]))

    def losses(self) -> list[float]:
        """Per-step losses recovered from Keras' running means: l_k = k m_k - (k - 1) m_(k-1)."""
        means = np.asarray(self.means, dtype="float64")
        counts = np.arange(1, len(means) + 1)
        totals = means * counts
        return [float(v) for v in np.diff(np.concatenate([[0.0], totals]))]

    def __getattr__(self, name):  # behave as the wrapped Keras callback inside `fit`
        return getattr(self.__dict__["_callback"], name)


def run_recipe(case: dict) -> dict:
    """Trains a registered recipe end to end (float32 or mixed_bfloat16) and reports its test accuracy.

    This is the accuracy side of the bfloat16 question: the same recipe, seed
    and data in both precisions.
    """
    import tempfile

    from keras_vit.recipes import runner

    overrides = dict(case.get("overrides", {}))
    with tempfile.TemporaryDirectory(prefix="keras_vit_bench_") as run_dir:
        start = time.perf_counter()
        result = runner.run(
            case["recipe"],
            mixed_precision=case["precision"] == "bfloat16",
            run_dir=run_dir,
            tensorboard=False,
            verbose=0,
            **overrides,
        )
        seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    return dict(recipe=case["recipe"], overrides=overrides, train_and_eval_s=seconds, metrics=metrics)


def run_case(case: dict) -> dict:
    """Dispatches on `case["kind"]`; returns the result dict (without the case itself)."""
    kind = case.get("kind")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    if kind == "matmul":
        return run_matmul(case)
    if case.get("precision", "float32") not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={case['precision']!r}")
    case.setdefault("precision", "float32")
    if kind == "recipe":
        return run_recipe(case)
    from benchmarks import flops, peers

    arch = peers.resolve_model(case["model"], **case.get("overrides", {}))
    if kind == "products":
        return dict(run_products(case, arch), flops_per_image=flops.forward_flops(arch), arch=arch)
    result = run_infer(case, arch) if kind == "infer" else run_train(case, arch)
    per_image = flops.forward_flops(arch) if kind == "infer" else flops.train_flops(arch)
    return dict(result, flops_per_image=per_image, arch=arch)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit("usage: python -m benchmarks.worker CASE_JSON")
    case = json.loads(argv[1])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if case.get("lib") == "timm":
        import timm  # noqa: F401
        import torch  # noqa: F401  (torch and timm before TensorFlow, see peers.py)
    start = time.perf_counter()
    result = run_case(case)
    result.update(case_wall_s=time.perf_counter() - start, peak_rss_mib=peak_rss_mib())
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
