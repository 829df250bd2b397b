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


def distribute_global_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                              global_batch_size: int) -> tf.distribute.DistributedDataset:
    """Batches an example dataset by the global batch and gives each replica its slice.

    Args:
        strategy: the strategy whose replicas consume the batches.
        dataset: `tf.data.Dataset` of single examples `(x, y)`, in the same
            order on every worker (seed any shuffle).
        global_batch_size: int. Examples per step over all replicas; the last
            partial batch is dropped so that every replica gets equal rows.

    Returns:
        A distributed dataset whose step `k` holds exactly global batch `k`.
    """
    per_replica = validate_global_batch(global_batch_size, strategy)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        start = context.input_pipeline_id * local * per_replica

        def split(*batch):
            def rows(tensor):
                piece = tensor[start:start + local * per_replica]
                return tf.reshape(piece, [local, per_replica, *piece.shape[1:]])

            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(rows, batch))

        batches = dataset.batch(global_batch_size, drop_remainder=True)
        return batches.flat_map(split).prefetch(tf.data.AUTOTUNE)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


class DistributedTrainer:
    """Trains a Keras classifier with a custom loop on any `tf.distribute` strategy.

    Build the model and optimizer inside `strategy.scope()` first. The loss
    is the mean over the global batch of `loss(y_true, y_pred)` per example
    (plus the model's regularisation losses), exactly what `fit` minimises.

    Args:
        model: keras.Model, built, its variables created in `strategy.scope()`.
        optimizer: keras.optimizers.Optimizer, created in `strategy.scope()`.
        loss: keras.losses.Loss (its unreduced `call` is used) or a callable
            `(y_true, y_pred) -> (batch,)` per-example losses.
        global_batch_size: int. Examples per step over all replicas.
        strategy: tf.distribute.Strategy or None. Defaults to the current one.
        checkpoint_dir: str or None. Where epoch checkpoints go; a restarted job
            resumes from the latest. Every worker reads the chief's checkpoints
            from it, so on a real cluster use storage all workers see (GCS,
            NFS). Defaults to None (no checkpoints).
        max_to_keep: int. Checkpoints kept. Defaults to 2.

    Examples:
        >>> strategy = keras_vit.training.strategy.get_strategy("multi_worker")
        >>> with strategy.scope():
        ...     model = keras_vit.ViT("vit_digits_patch2_8")
        ...     optimizer = keras.optimizers.SGD(0.1)
        >>> trainer = DistributedTrainer(model, optimizer, keras.losses.SparseCategoricalCrossentropy(True),
        ...                              global_batch_size=64, strategy=strategy, checkpoint_dir="ckpt")
        >>> history = trainer.fit(lambda epoch: examples.shuffle(2048, seed=epoch), epochs=10)
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, loss, *, global_batch_size: int,
                 strategy: tf.distribute.Strategy | None = None, checkpoint_dir: str | None = None,
                 max_to_keep: int = 2):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch_size = global_batch_size
        validate_global_batch(global_batch_size, self.strategy)
        if not model.built:
            raise ValueError(f"Build the model (call it on a batch or create it from an Input) inside "
                             f"strategy.scope() before training. Received: model={model.name!r} (unbuilt)")
        outside = [v.path for v in model.trainable_variables
                   if not self.strategy.extended.variable_created_in_scope(_tf_variable(v))]
        if outside:
            raise ValueError(f"The model's variables were not created in this strategy's scope (e.g. {outside[0]}); "
                             "build the model and optimizer inside `with strategy.scope():`.")
        self.model, self.optimizer = model, optimizer
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
    def _make_step(self, training: bool) -> Callable:
        model, optimizer, loss_fn, strategy = self.model, self.optimizer, self.loss_fn, self.strategy
        global_batch = self.global_batch_size

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=training)
                per_example = tf.cast(loss_fn(y, logits), tf.float32)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if training and model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = optimizer.scale_loss(loss) if training else loss
            if training:
                variables = model.trainable_variables
                optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                  tf.cast(tf.reshape(y, [-1]), tf.int32)), tf.float32))
            return loss, hits

        @tf.function
        def step(batch):
            loss, hits = strategy.run(replica_step, args=batch)
            return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                    strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))

        return step

    def _run_epoch(self, dataset, step, max_steps: int | None) -> dict[str, float]:
        total_loss = total_hits = 0.0
        steps = 0
        for batch in dataset:
            loss, hits = step(batch)
            total_loss, total_hits, steps = total_loss + float(loss), total_hits + float(hits), steps + 1
            if max_steps is not None and steps >= max_steps:
                break
        if not steps:
            raise ValueError(f"The dataset gave no full global batch of {self.global_batch_size} examples; use "
                             "more data or a smaller global batch.")
        return {"loss": total_loss / steps, "accuracy": total_hits / (steps * self.global_batch_size)}

    # ---- public loop -----------------------------------------------------------------------
    def fit(self, dataset: tf.data.Dataset | Callable[[int], tf.data.Dataset], *, epochs: int,
            steps_per_epoch: int | None = None, validation_data: tf.data.Dataset | None = None,
            verbose: bool = True) -> dict[str, list[float]]:
        """Trains for `epochs`, resuming from `checkpoint_dir` when it holds a checkpoint.

        Args:
            dataset: `tf.data.Dataset` of single `(x, y)` examples, or a
                function `epoch -> Dataset` (so a per-epoch seeded shuffle
                replays exactly after a restart).
            epochs: int. Total epochs, counting those already checkpointed.
            steps_per_epoch: int or None. Cap on steps per epoch. Defaults to None (whole dataset).
            validation_data: example dataset evaluated after each epoch, or None.
            verbose: bool. Print one line per epoch (chief only). Defaults to True.

        Returns:
            History dict of per-epoch "loss", "accuracy" (and "val_*").
        """
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be an int >= 1. Received: epochs={epochs!r}")
        history: dict[str, list[float]] = {}
        start = self.restore()
        validation = (distribute_global_batches(self.strategy, validation_data, self.global_batch_size)
                      if validation_data is not None else None)
        for epoch in range(start, epochs):
            examples = dataset(epoch) if callable(dataset) else dataset
            logs = self._run_epoch(distribute_global_batches(self.strategy, examples, self.global_batch_size),
                                   self._train_function, steps_per_epoch)
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self._run_epoch(validation, self._eval_function, None).items()})
            self.epoch.assign(epoch + 1)
            self.save()
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if verbose and is_chief(self.strategy):
                print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
        return history

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        """Mean loss and accuracy over an example dataset (full global batches only)."""
        return self._run_epoch(distribute_global_batches(self.strategy, dataset, self.global_batch_size),
                               self._eval_function, None)


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
    return json.dumps({"cluster": {"worker": [f"{host}:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def launch_local_workers(command: Sequence[str], num_workers: int = 2, *, timeout: float = 600,
                         env: dict[str, str] | None = None, log_dir: str | None = None) -> list[int]:
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
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"`num_workers` must be an int >= 1. Received: num_workers={num_workers!r}")
    ports = free_ports(num_workers)
    processes, logs = [], []
    for index in range(num_workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index)}
        out = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"worker_{index}.log"), "w")  # noqa: SIM115 (closed below)
            logs.append(out)
        processes.append(subprocess.Popen(list(command), env=worker_env, stdout=out, stderr=subprocess.STDOUT
                                          if out else None))
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

