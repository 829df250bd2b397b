"""Picks a `tf.distribute` strategy by name and checks batches against it.

`--strategy` flags, recipes and the custom multi-worker loop all go through
`get_strategy`, so a name means the same thing everywhere and a bad name or a
missing cluster fails before any training starts.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(
    name: str = "auto", *, device: str | None = None, tpu: str | None = None, communication: str = "auto"
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: str. One of `STRATEGIES`:
            "auto": `MirroredStrategy` over the local GPUs when there are several,
            else the default strategy. "default": the default (no-op) strategy.
            "one_device": `OneDeviceStrategy` on `device` (defaults to the
            first GPU, else the CPU). "mirrored": `MirroredStrategy` over all
            local GPUs (or the logical CPUs when there is no GPU).
            "multi_worker": `MultiWorkerMirroredStrategy` from the `TF_CONFIG`
            environment variable; `model.fit` does not work under it in Keras
            3 (keras-team/keras#20585), use `keras_vit.training.multi_worker`.
            "tpu": `TPUStrategy` through a `TPUClusterResolver`.
            Defaults to "auto".
        device: str or None. Device of "one_device", e.g. "/gpu:1". Defaults to None.
        tpu: str or None. TPU name or address for "tpu" (e.g. "local",
            "grpc://10.0.0.2:8470"). Defaults to None (the resolver's default,
            which works on Cloud TPU VMs).
        communication: str. Collective implementation of "multi_worker":
            "auto", "ring" or "nccl". Defaults to "auto".

    Returns:
        A `tf.distribute.Strategy`. Create it before building models or data
        sets, and build the model and optimizer inside `strategy.scope()`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Use one of {STRATEGIES}. Received: name={name!r}")
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        if device is None:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return _multi_worker_strategy(communication)
    return _tpu_strategy(tpu)


def read_tf_config() -> dict[str, Any]:
    """Parses and checks the `TF_CONFIG` environment variable of a multi-worker job.

    Returns:
        The parsed dict with "cluster" and "task" entries.
    """
    raw = os.environ.get("TF_CONFIG")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise ValueError(
            f"strategy 'multi_worker' needs the TF_CONFIG environment variable, e.g. {example}. "
            "Received: TF_CONFIG unset"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}); expected e.g. {example}. Received: TF_CONFIG={raw!r}"
        ) from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(
            f"TF_CONFIG needs a 'cluster' dict and a 'task' with 'type' and 'index', e.g. {example}. "
            f"Received: TF_CONFIG={raw!r}"
        )
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(
            f"TF_CONFIG task {task} is not in its cluster {cluster}; the index must point into "
            f"cluster[{task['type']!r}]. Received: TF_CONFIG={raw!r}"
        )
    return config


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes shared outputs (checkpoints, logs): the chief or worker 0."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type in (None, "worker") and not has_chief and resolver.task_id == 0


def _multi_worker_strategy(communication: str) -> tf.distribute.Strategy:
    read_tf_config()
    implementations = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }
    if communication not in implementations:
        raise ValueError(
            f"`communication` must be one of {tuple(implementations)}. Received: communication={communication!r}"
        )
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementations[communication])
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(
            f"strategy 'tpu' found no TPU ({type(error).__name__}: {error}). Run on a Cloud TPU VM, pass the TPU "
            f"name or address (tpu='local' or 'grpc://host:8470'), or pick another strategy such as 'auto'. "
            f"Received: tpu={tpu!r}"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def validate_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Checks that a global batch splits evenly across the strategy's replicas.

    An uneven split would give replicas different batch sizes, so the summed
    gradient would no longer be the global batch's mean gradient.

    Args:
        batch_size: int. The global batch size (all replicas together).
        strategy: the `tf.distribute.Strategy` that will run the steps.

    Returns:
        The per-replica batch size.
    """
    replicas = strategy.num_replicas_in_sync
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"The global batch size must be a positive int. Received: batch_size={batch_size!r}")
    if batch_size % replicas:
        lower, upper = batch_size - batch_size % replicas, batch_size + replicas - batch_size % replicas
        suggestions = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"The global batch size {batch_size} does not divide across the {replicas} replicas of "
            f"{type(strategy).__name__}. Use a multiple of {replicas}, e.g. {suggestions}. "
            f"Received: batch_size={batch_size}"
        )
    return batch_size // replicas


def check_jit_compile(jit_compile: bool | str, strategy: tf.distribute.Strategy) -> bool | str:
    """Rejects XLA under `MirroredStrategy`, which fails in Keras 3 (keras-team/keras#19005).

    Returns:
        `jit_compile` unchanged, or False for "auto" under a mirrored strategy.
    """
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
    if mirrored and strategy.num_replicas_in_sync > 1:
        if jit_compile is True:
            raise ValueError(
                f"XLA (jit_compile=True) fails under {type(strategy).__name__} in Keras 3 (keras-team/keras#19005). "
                "Use jit_compile=False or 'auto'. Received: jit_compile=True"
            )
        if jit_compile == "auto":
            return False
    return jit_compile
