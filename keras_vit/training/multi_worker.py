"""A custom distributed training loop that works under `MultiWorkerMirroredStrategy`.

`model.fit` under `MultiWorkerMirroredStrategy` fails in Keras 3.15
(keras-team/keras#20585: the per-replica batch reaches the model as a
`PerReplica` value). `DistributedTrainer` runs the same mathematics by hand:
`strategy.run` of a replica step whose loss is averaged over the *global*
batch, gradients summed across replicas by the Keras optimizer, metrics summed
with `strategy.reduce`, and a `tf.train.Checkpoint` written by every worker
(the chief's copy kept) at each epoch so a restarted job resumes.

Every worker reads the same example stream (seeded), batches it by the global
batch and keeps its own replicas' rows, so a step sees exactly the global batch
a single-device run would: the trained weights match `fit` on one device.
Labels may be sparse class ids or one-hot / mixed (mixup, cutmix) rows; the
loss decides how they are read, and accuracy compares against their argmax.

`launch_local_workers` starts N workers on 127.0.0.1 with `TF_CONFIG` set, for
trying a multi-worker job on one machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_vit.training.strategy import is_chief, validate_global_batch
from keras_vit.validation import check_int


def _weighted_global_batches(
    dataset: tf.data.Dataset, global_batch_size: int, *, batched: bool, pad_remainder: bool
) -> tf.data.Dataset:
    """Global batches `(*element, weights)`: weight 1 for real rows, 0 for padding rows.

    Training drops a last partial batch (every replica needs equal rows);
    evaluation pads it with zero-weight rows so that every example counts once.
    """
    batches = dataset if batched else dataset.batch(global_batch_size, drop_remainder=not pad_remainder)

    def weigh(*batch):
        rows = tf.shape(tf.nest.flatten(batch)[0])[0]
        missing = global_batch_size - rows

        def pad(tensor):
            tensor = tf.pad(tensor, [[0, missing]] + [[0, 0]] * (len(tensor.shape) - 1))
            return tf.ensure_shape(tensor, [global_batch_size, *tensor.shape[1:]])

        weights = tf.concat([tf.ones([rows]), tf.zeros([missing])], axis=0)
        return (*tf.nest.map_structure(pad, batch), tf.ensure_shape(weights, [global_batch_size]))

    if not pad_remainder:  # a batched source may end in a partial batch: drop it as `drop_remainder` would
        batches = batches.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] == global_batch_size)
    return batches.map(weigh)


def distribute_global_batches(
    strategy: tf.distribute.Strategy,
    dataset: tf.data.Dataset,
    global_batch_size: int,
    *,
    batched: bool = False,
    pad_remainder: bool = False,
) -> tf.distribute.DistributedDataset:
    """Gives each replica its slice of every global batch, plus per-row weights.

    Args:
        strategy: the strategy whose replicas consume the batches.
        dataset: `tf.data.Dataset` of single examples `(x, y)` (or, with
            `batched=True`, of batches of at most `global_batch_size` rows), in
            the same order on every worker (seed any shuffle).
        global_batch_size: int. Examples per step over all replicas.
        batched: bool. `dataset` already yields global batches (e.g. a recipe
            pipeline whose mixup mixes across the global batch). Defaults to False.
        pad_remainder: bool. Keep a last partial batch, padded with zero-weight
            rows (evaluation); otherwise it is dropped (training). Defaults to False.

    Returns:
        A distributed dataset whose step `k` holds exactly global batch `k`
        as `(x, y, weights)` per replica.
    """
    per_replica = validate_global_batch(global_batch_size, strategy)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        start = context.input_pipeline_id * local * per_replica

        def split(*batch):
            def rows(tensor):
                piece = tensor[start : start + local * per_replica]
                return tf.reshape(piece, [local, per_replica, *piece.shape[1:]])

            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(rows, batch))

        batches = _weighted_global_batches(dataset, global_batch_size, batched=batched, pad_remainder=pad_remainder)
        return batches.flat_map(split).prefetch(tf.data.AUTOTUNE)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def _class_ids(labels: tf.Tensor) -> tf.Tensor:
    """Sparse ids `(b,)`/`(b, 1)` as they are; one-hot or mixed rows `(b, classes)` by their argmax."""
    if labels.shape.rank == 2 and labels.shape[-1] != 1:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    return tf.cast(tf.reshape(labels, [-1]), tf.int32)


class DistributedTrainer:
    """Trains a Keras classifier with a custom loop on any `tf.distribute` strategy.

    Build the model and optimizer inside `strategy.scope()` first. The loss
    is the mean over the global batch of `loss(y_true, y_pred)` per example
    (plus the model's regularisation losses), exactly what `fit` minimises.
    Global-norm clipping (`optimizer.global_clipnorm`) is applied to the
    gradient of the whole global batch, as on one device (the Keras optimizer
    alone would clip each replica's part before summing them).

    Args:
        model: keras.Model, built, its variables created in `strategy.scope()`.
        optimizer: keras.optimizers.Optimizer, created in `strategy.scope()`.
        loss: keras.losses.Loss (its unreduced `call` is used, so e.g.
            `CategoricalCrossentropy(label_smoothing=0.1)` on one-hot or mixed
            labels works) or a callable `(y_true, y_pred) -> (batch,)` per-example losses.
        global_batch_size: int. Examples per step over all replicas.
        strategy: tf.distribute.Strategy or None. Defaults to the current one.
        checkpoint_dir: str or None. Where epoch checkpoints go; a restarted job
            resumes from the latest. Every worker reads the chief's checkpoints
            from it, so on a real cluster use storage all workers see (GCS,
            NFS). Defaults to None (no checkpoints).
        max_to_keep: int. Checkpoints kept. Defaults to 2.
        top_k: ints k for extra "top{k}_accuracy" metrics. Defaults to ().

    Examples:
        >>> strategy = keras_vit.training.strategy.get_strategy("multi_worker")
        >>> with strategy.scope():
        ...     model = keras_vit.ViT("vit_digits_patch2_8")
        ...     optimizer = keras.optimizers.SGD(0.1)
        >>> trainer = DistributedTrainer(model, optimizer, keras.losses.SparseCategoricalCrossentropy(True),
        ...                              global_batch_size=64, strategy=strategy, checkpoint_dir="ckpt")
        >>> history = trainer.fit(lambda epoch: examples.shuffle(2048, seed=epoch), epochs=10)
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        loss,
        *,
        global_batch_size: int,
        strategy: tf.distribute.Strategy | None = None,
        checkpoint_dir: str | None = None,
        max_to_keep: int = 2,
        top_k: Sequence[int] = (),
    ):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch_size = global_batch_size
        validate_global_batch(global_batch_size, self.strategy)
        if not model.built:
            raise ValueError(
                f"Build the model (call it on a batch or create it from an Input) inside "
                f"strategy.scope() before training. Received: model={model.name!r} (unbuilt)"
            )
        outside = [
            v.path
            for v in model.trainable_variables
            if not self.strategy.extended.variable_created_in_scope(_tf_variable(v))
        ]
        if outside:
            raise ValueError(
                f"The model's variables were not created in this strategy's scope (e.g. {outside[0]}); "
                "build the model and optimizer inside `with strategy.scope():`."
            )
        if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in top_k):
            raise ValueError(f"`top_k` must hold ints >= 1. Received: top_k={tuple(top_k)!r}")
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and optimizer.inner_optimizer.global_clipnorm:
            raise ValueError(
                "Global-norm clipping with loss scaling (mixed_float16) is not supported by the custom "
                "loop; use bfloat16 mixed precision or clip_norm=None. "
                f"Received: global_clipnorm={optimizer.inner_optimizer.global_clipnorm}"
            )
        self.model, self.optimizer = model, optimizer
        self.top_k = tuple(top_k)
        self.loss_fn = loss.call if isinstance(loss, keras.losses.Loss) else loss
        with self.strategy.scope():
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint_dir = checkpoint_dir
        self._manager = None
        if checkpoint_dir:
            self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)
            self._manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir(), max_to_keep=max_to_keep)
        self._train_function = self._make_step(training=True)
        self._eval_function = self._make_step(training=False)

    # ---- checkpoints -----------------------------------------------------------------------
    def _write_dir(self) -> str:
        # every worker must take part in saving; only the chief's copy is kept
        if is_chief(self.strategy):
            return self.checkpoint_dir
        task_id = self.strategy.cluster_resolver.task_id
        return os.path.join(self.checkpoint_dir, f".worker_{task_id}_tmp")

    def restore(self) -> int:
        """Restores the latest checkpoint of `checkpoint_dir`, if any; returns the epoch to start from."""
        if self._manager is None:
            return 0
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def save(self) -> str | None:
        """Writes a checkpoint (all workers must call it); returns the chief's path."""
        if self._manager is None:
            return None
        path = self._manager.save(checkpoint_number=int(self.epoch.numpy()))
        if not is_chief(self.strategy):
            shutil.rmtree(self._write_dir(), ignore_errors=True)
        return path

    # ---- steps -----------------------------------------------------------------------------
    def _gradients(self, tape: tf.GradientTape, scaled_loss, variables) -> list:
        """The replica's gradients; with global-norm clipping, the clipped global gradient's share of it."""
        gradients = tape.gradient(scaled_loss, variables)
        clip = getattr(self.optimizer, "global_clipnorm", None)
        replicas = self.strategy.num_replicas_in_sync
        if not clip or replicas == 1:
            return gradients
        # The optimizer clips before it sums replicas: clip the summed gradient here, then hand each replica
        # 1/replicas of it, whose norm is below the threshold, so the optimizer's own clip is a no-op.
        context = tf.distribute.get_replica_context()
        present = [i for i, g in enumerate(gradients) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
        clipped, _ = tf.clip_by_global_norm(summed, clip)
        for i, gradient in zip(present, clipped):
            gradients[i] = gradient / replicas
        return gradients

    def _make_step(self, training: bool) -> Callable:
        model, optimizer, loss_fn, strategy = self.model, self.optimizer, self.loss_fn, self.strategy
        global_batch, top_k = self.global_batch_size, self.top_k

        def replica_step(x, y, weights):
            with tf.GradientTape() as tape:
                logits = model(x, training=training)
                per_example = tf.cast(loss_fn(y, logits), tf.float32)
                loss = tf.nn.compute_average_loss(per_example, sample_weight=weights, global_batch_size=global_batch)
                regularization = tf.constant(0.0)
                if training and model.losses:
                    regularization = tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                    loss += regularization
                scaled = optimizer.scale_loss(loss) if training else loss
            if training:
                variables = model.trainable_variables
                optimizer.apply_gradients(zip(self._gradients(tape, scaled, variables), variables))
            ids = _class_ids(y)
            logits = tf.cast(logits, tf.float32)
            sums = {
                "loss": tf.reduce_sum(per_example * weights),
                "regularization": regularization,
                "accuracy": tf.reduce_sum(
                    weights * tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), ids), tf.float32)
                ),
                "count": tf.reduce_sum(weights),
            }
            for k in top_k:
                sums[f"top{k}_accuracy"] = tf.reduce_sum(
                    weights * tf.cast(tf.math.in_top_k(ids, logits, k), tf.float32)
                )
            return sums

        @tf.function
        def step(batch):
            sums = strategy.run(replica_step, args=batch)
            return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for key, value in sums.items()}

        return step

    def _run_epoch(self, dataset, step, max_steps: int | None) -> dict[str, float]:
        totals: dict[str, float] = {}
        steps = 0
        for batch in dataset:
            for key, value in step(batch).items():
                totals[key] = totals.get(key, 0.0) + float(value)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        if not steps:
            raise ValueError(
                f"The dataset gave no full global batch of {self.global_batch_size} examples; use "
                "more data or a smaller global batch."
            )
        count, regularization = totals.pop("count"), totals.pop("regularization")
        logs = {key: value / count for key, value in totals.items()}
        logs["loss"] += regularization / steps  # like `fit`: each step's loss includes the regularisation
        return logs

    # ---- public loop -----------------------------------------------------------------------
    def fit(
        self,
        dataset: tf.data.Dataset | Callable[[int], tf.data.Dataset],
        *,
        epochs: int,
        steps_per_epoch: int | None = None,
        validation_data: tf.data.Dataset | None = None,
        verbose: bool = True,
        batched: bool = False,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, list[float]]:
        """Trains for `epochs`, resuming from `checkpoint_dir` when it holds a checkpoint.

        Args:
            dataset: `tf.data.Dataset` of single `(x, y)` examples, or a
                function `epoch -> Dataset` (so a per-epoch seeded shuffle
                replays exactly after a restart).
            epochs: int. Total epochs, counting those already checkpointed.
            steps_per_epoch: int or None. Cap on steps per epoch. Defaults to None (whole dataset).
            validation_data: example dataset evaluated after each epoch (every
                example counts once), or None.
            verbose: bool. Print one line per epoch (chief only). Defaults to True.
            batched: bool. The datasets already yield global batches (see
                `distribute_global_batches`). Defaults to False.
            on_epoch_end: called as `on_epoch_end(epoch, logs)` on every worker
                after each epoch's checkpoint (epoch counts from 0). Defaults to None.

        Returns:
            History dict of per-epoch "loss", "accuracy" (and "val_*") of the epochs run now.
        """
        check_int(epochs, "epochs", minimum=1)
        history: dict[str, list[float]] = {}
        start = self.restore()
        validation = (
            distribute_global_batches(
                self.strategy, validation_data, self.global_batch_size, batched=batched, pad_remainder=True
            )
            if validation_data is not None
            else None
        )
        for epoch in range(start, epochs):
            examples = dataset(epoch) if callable(dataset) else dataset
            logs = self._run_epoch(
                distribute_global_batches(self.strategy, examples, self.global_batch_size, batched=batched),
                self._train_function,
                steps_per_epoch,
            )
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self._run_epoch(validation, self._eval_function, None).items()})
            self.epoch.assign(epoch + 1)
            self.save()
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if verbose and is_chief(self.strategy):
                print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
        return history

    def evaluate(self, dataset: tf.data.Dataset, *, batched: bool = False) -> dict[str, float]:
        """Mean loss and accuracy over an example dataset; a last partial batch counts too (zero-weight padding)."""
        return self._run_epoch(
            distribute_global_batches(
                self.strategy, dataset, self.global_batch_size, batched=batched, pad_remainder=True
            ),
            self._eval_function,
            None,
        )


def _tf_variable(variable):
    return getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) else variable


# ---- local multi-worker launcher ---------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: Sequence[int], index: int, host: str = "127.0.0.1") -> str:
    """The `TF_CONFIG` JSON of worker `index` in a cluster of workers on `host`."""
    return json.dumps(
        {"cluster": {"worker": [f"{host}:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    )


def launch_local_workers(
    command: Sequence[str],
    num_workers: int = 2,
    *,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    log_dir: str | None = None,
) -> list[int]:
    """Runs `command` as `num_workers` processes on 127.0.0.1, each with its `TF_CONFIG`.

    Args:
        command: argv of the worker program, e.g. `[sys.executable, "train.py"]`.
        num_workers: int. Defaults to 2.
        timeout: float. Seconds before every worker is killed. Defaults to 600.
        env: extra environment variables. Defaults to None.
        log_dir: str or None. Where `worker_{i}.log` files go. Defaults to None (inherit stdout/stderr).

    Returns:
        The workers' exit codes (in worker order).
    """
    check_int(num_workers, "num_workers", minimum=1)
    ports = free_ports(num_workers)
    processes, logs = [], []
    for index in range(num_workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index)}
        out = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"worker_{index}.log"), "w")  # noqa: SIM115 (closed below)
            logs.append(out)
        processes.append(
            subprocess.Popen(list(command), env=worker_env, stdout=out, stderr=subprocess.STDOUT if out else None)
        )
    deadline = time.monotonic() + timeout
    try:
        codes = []
        for process in processes:
            codes.append(process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        return codes
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        raise
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for out in logs:
            out.close()


def save_weights_npz(model: keras.Model, path: str) -> None:
    """Writes the model's weights to an `.npz` atomically (temporary name, then rename)."""
    arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def load_weights_npz(path: str) -> list[np.ndarray]:
    """Reads weights written by `save_weights_npz`, in model order."""
    with np.load(path) as data:
        return [data[key] for key in sorted(data.files)]
