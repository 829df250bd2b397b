"""A custom distributed training loop that works under `MultiWorkerMirroredStrategy`.

`model.fit` under `MultiWorkerMirroredStrategy` fails in Keras 3.15
(keras-team/keras#20585: the per-replica batch reaches the model as a
`PerReplica` value). `DistributedTrainer` runs the same mathematics by hand:
`strategy.run` of a replica step whose loss is averaged over the *global*
batch, gradients summed across replicas by the Keras optimizer, metrics summed
with `strategy.reduce`. Models that compute their own loss (`keras_vit.MAE`)
train with `loss=None`. The chief backs up the whole training state every N
steps and at each epoch end (`keras_vit.training.resume`'s atomic backup
folders), so a job killed at any moment and rerun ends bitwise as if it had
never stopped.

Every worker reads the same example stream (seeded), batches it by the global
batch and keeps its own replicas' rows, so a step sees exactly the global batch
a single-device run would: the trained weights match `fit` on one device.
Labels may be sparse class ids or one-hot / mixed (mixup, cutmix) rows; the
loss decides how they are read, and accuracy compares against their argmax.

`launch_local_workers` starts N workers on 127.0.0.1 with `TF_CONFIG` set, for
trying a multi-worker job on one machine.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_vit.models.mae import MAE
from keras_vit.training.resume import BackupError, newest_readable_backup, prune_backups, report, write_backup
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
    skip_batches: int = 0,
    max_batches: int | None = None,
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
        skip_batches: int. Global batches to leave out at the start (a resumed epoch). Defaults to 0.
        max_batches: int or None. Global batches to give at most (after the skipped ones). Defaults to None.

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
        batches = batches.skip(skip_batches).take(-1 if max_batches is None else max_batches)
        return batches.flat_map(split).prefetch(tf.data.AUTOTUNE)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def _class_ids(labels: tf.Tensor) -> tf.Tensor:
    """Sparse ids `(b,)`/`(b, 1)` as they are; one-hot or mixed rows `(b, classes)` by their argmax."""
    if labels.shape.rank == 2 and labels.shape[-1] != 1:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    return tf.cast(tf.reshape(labels, [-1]), tf.int32)


@dataclasses.dataclass
class Progress:
    """Where training stands: `step` global batches into `epoch` (0-based), the epoch's running sums, the history."""

    epoch: int = 0
    step: int = 0
    totals: dict[str, float] = dataclasses.field(default_factory=dict)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)


class DistributedTrainer:
    """Trains a Keras model with a custom loop on any `tf.distribute` strategy.

    Build the model and optimizer inside `strategy.scope()` first. With a
    `loss`, the model is a classifier and the loss is the mean over the global
    batch of `loss(y_true, y_pred)` per example (plus the model's
    regularisation losses), exactly what `fit` minimises. With `loss=None` the
    model computes its own: it returns a dict whose "loss" is the mean over
    the rows it was given (e.g. `keras_vit.MAE`; labels are ignored), and the
    replicas' losses are averaged by their rows. An MAE's masking noise is
    drawn for the whole global batch and each replica takes its rows, so the
    patches hidden are those one device would hide.

    Global-norm clipping (`optimizer.global_clipnorm`) is applied to the
    gradient of the whole global batch, as on one device (the Keras optimizer
    alone would clip each replica's part before summing them).

    Exact resume: with a `checkpoint_dir`, the chief backs up the whole state
    (model variables with their seed-generator states, optimizer variables
    with the step, the epoch's running sums, the history and the position)
    every `backup_every_steps` steps and at each epoch end, atomically, keeping
    the previous backup; a job rerun with the same command resumes at the
    step it was backed up at and ends bitwise where an uninterrupted job ends.

    Args:
        model: keras.Model, built, its variables created in `strategy.scope()`.
        optimizer: keras.optimizers.Optimizer, created in `strategy.scope()`.
        loss: keras.losses.Loss (its unreduced `call` is used, so e.g.
            `CategoricalCrossentropy(label_smoothing=0.1)` on one-hot or mixed
            labels works), a callable `(y_true, y_pred) -> (batch,)` per-example
            losses, or None for a model that returns its own `{"loss": ...}`.
        global_batch_size: int. Examples per step over all replicas.
        strategy: tf.distribute.Strategy or None. Defaults to the current one.
        checkpoint_dir: str or None. Where backups go; a restarted job resumes
            from the newest readable one. Every worker reads the chief's backups
            from it, so on a real cluster use storage all workers see (NFS).
            Defaults to None (no backups).
        max_to_keep: int >= 2. Backups kept (an unreadable newest one falls
            back to the one before). Defaults to 2.
        backup_every_steps: int or None. Steps between backups inside an epoch
            (one more at every epoch end). Defaults to None (epoch ends only).
        top_k: ints k for extra "top{k}_accuracy" metrics (classifiers). Defaults to ().

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
        backup_every_steps: int | None = None,
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
        if loss is None and top_k:
            raise ValueError(
                f"top-k accuracy needs class logits; a model with its own loss (loss=None) has none. "
                f"Received: top_k={tuple(top_k)!r}"
            )
        check_int(max_to_keep, "max_to_keep", minimum=2)
        if backup_every_steps is not None:
            check_int(backup_every_steps, "backup_every_steps", minimum=1)
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
        self.checkpoint_dir = checkpoint_dir
        self.max_to_keep = max_to_keep
        self.backup_every_steps = backup_every_steps
        self._train_function = self._make_step(training=True)
        self._eval_function = self._make_step(training=False)

    # ---- backups ---------------------------------------------------------------------------
    def state_variables(self) -> list:
        """Every variable the rest of the run depends on: the model's (seed generators included), the optimizer's."""
        variables, seen = [], set()
        for variable in [*self.model.variables, *self.optimizer.variables]:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
        return variables

    def restore(self) -> Progress:
        """Loads the newest readable backup of `checkpoint_dir`, if any; returns where to go on from."""
        selected = newest_readable_backup(self.checkpoint_dir) if self.checkpoint_dir else None
        if selected is None:
            return Progress()
        path, info, arrays = selected
        variables = self.state_variables()
        expected = [list(variable.shape) for variable in variables]
        if [shape for _, shape in info["variables"]] != expected:
            raise BackupError(
                f"Backup {path} holds {len(info['variables'])} variables that do not match the {len(expected)} "
                f"of the model and optimizer being trained: it belongs to another model or recipe. Use a new "
                f"checkpoint_dir, or remove {self.checkpoint_dir} to train from the start."
            )
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"v{i}"])
        report(f"Resuming from backup {path} (epoch {info['epoch'] + 1}, step {info['step']}).")
        return Progress(info["epoch"], info["step"], info["totals"], info["history"])

    def save(self, progress: Progress) -> str | None:
        """Backs up the state at `progress` (the chief writes; the others, holding the same values, skip it).

        Returns:
            The backup's path on the chief, else None.
        """
        if not self.checkpoint_dir or not is_chief(self.strategy):
            return None
        variables = self.state_variables()
        arrays = {f"v{i}": keras.ops.convert_to_numpy(variable) for i, variable in enumerate(variables)}
        info = {
            "epoch": progress.epoch,
            "step": progress.step,
            "global_step": int(keras.ops.convert_to_numpy(self.optimizer.iterations)),
            "variables": [[variable.path, list(variable.shape)] for variable in variables],
            "totals": progress.totals,
            "history": progress.history,
        }
        name = f"step-{progress.epoch:06d}-{progress.step:09d}"
        path = write_backup(self.checkpoint_dir, name, info, arrays)
        prune_backups(self.checkpoint_dir, self.max_to_keep)
        return path

    def _check_workers_agree(self, progress: Progress) -> None:
        """Every worker must resume at the same position (a worker that sees no backup would start over)."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        position = tf.constant([[progress.epoch, progress.step]], tf.int64)

        @tf.function
        def gather():
            return self.strategy.run(lambda: tf.distribute.get_replica_context().all_gather(position, axis=0))

        positions = self.strategy.experimental_local_results(gather())[0].numpy()
        if len({tuple(row) for row in positions.tolist()}) > 1:
            raise ValueError(
                f"The workers resumed from different backups ((epoch, step) per replica: "
                f"{[tuple(row) for row in positions.tolist()]}). Put checkpoint_dir (a recipe's run_dir) on "
                "storage every worker sees, e.g. NFS."
            )

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

    def _global_batch_noise(self, rows: int):
        """This replica's rows of MAE masking noise drawn for the whole global batch (what one device draws)."""
        noise = keras.random.uniform((self.global_batch_size, self.model.num_patches), seed=self.model.noise_generator)
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
        return noise[start : start + rows]

    def _classifier_sums(self, x, y, weights, training: bool):
        """(loss to minimise, sums to report) of a classifier on one replica's rows."""
        logits = self.model(x, training=training)
        per_example = tf.cast(self.loss_fn(y, logits), tf.float32)
        loss = tf.nn.compute_average_loss(per_example, sample_weight=weights, global_batch_size=self.global_batch_size)
        ids = _class_ids(y)
        logits = tf.cast(logits, tf.float32)
        sums = {
            "loss": tf.reduce_sum(per_example * weights),
            "accuracy": tf.reduce_sum(
                weights * tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), ids), tf.float32)
            ),
        }
        for k in self.top_k:
            sums[f"top{k}_accuracy"] = tf.reduce_sum(weights * tf.cast(tf.math.in_top_k(ids, logits, k), tf.float32))
        return loss, sums

    def _own_loss_sums(self, x, weights, training: bool):
        """(loss to minimise, sums to report) of a model returning its own mean loss over the rows it gets."""
        if training:  # training batches are never padded
            rows = x.shape[0] if isinstance(x, tf.Tensor) and x.shape[0] is not None else None
            noise = {"noise": self._global_batch_noise(rows)} if isinstance(self.model, MAE) and rows else {}
            outputs = self.model(x, training=True, **noise)
        else:  # evaluation: leave the zero-weight padding rows out
            x = tf.nest.map_structure(lambda tensor: tf.boolean_mask(tensor, weights > 0), x)
            outputs = self.model(x, training=False)
        if not isinstance(outputs, dict) or "loss" not in outputs:
            raise ValueError(
                f"With loss=None the model must return a dict with its own 'loss'. Received: outputs of type "
                f"{type(outputs).__name__}{' with keys ' + str(sorted(outputs)) if isinstance(outputs, dict) else ''}"
            )
        count = tf.reduce_sum(weights)
        mean = tf.cast(outputs["loss"], tf.float32)
        total = tf.where(count > 0, mean * count, 0.0)  # an all-padding replica adds nothing
        return total / self.global_batch_size, {"loss": total}

    def _make_step(self, training: bool) -> Callable:
        model, optimizer, strategy = self.model, self.optimizer, self.strategy

        def replica_step(x, *rest):
            *labels, weights = rest
            with tf.GradientTape() as tape:
                if self.loss_fn is None:
                    loss, sums = self._own_loss_sums(x, weights, training)
                else:
                    loss, sums = self._classifier_sums(x, labels[0], weights, training)
                regularization = tf.constant(0.0)
                if training and model.losses:
                    regularization = tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                    loss += regularization
                scaled = optimizer.scale_loss(loss) if training else loss
            if training:
                variables = model.trainable_variables
                optimizer.apply_gradients(zip(self._gradients(tape, scaled, variables), variables))
            return dict(sums, regularization=regularization, count=tf.reduce_sum(weights))

        @tf.function
        def step(batch):
            sums = strategy.run(replica_step, args=batch)
            return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for key, value in sums.items()}

        return step

    def _no_batch_error(self) -> ValueError:
        return ValueError(
            f"The dataset gave no full global batch of {self.global_batch_size} examples; use more data or a "
            "smaller global batch."
        )

    @staticmethod
    def _logs(totals: dict[str, float], steps: int) -> dict[str, float]:
        totals = dict(totals)
        count, regularization = totals.pop("count"), totals.pop("regularization")
        logs = {key: value / count for key, value in totals.items()}
        logs["loss"] += regularization / steps  # like `fit`: each step's loss includes the regularisation
        return logs

    def _train_epoch(self, batches, progress: Progress, last_step: int | None) -> dict[str, float]:
        """Runs the epoch's remaining steps from `progress`, backing up every `backup_every_steps` (not at its end)."""
        since_backup = 0
        for batch in batches:
            sums = {key: float(value) for key, value in self._train_function(batch).items()}
            for key, value in sums.items():
                progress.totals[key] = progress.totals.get(key, 0.0) + value
            progress.step += 1
            since_backup += 1
            due = self.backup_every_steps and since_backup >= self.backup_every_steps and progress.step != last_step
            if due and math.isfinite(sums["loss"]):
                self.save(progress)  # never back up a diverged state
                since_backup = 0
        if not progress.step:
            raise self._no_batch_error()
        return self._logs(progress.totals, progress.step)

    def _evaluate_batches(self, batches) -> dict[str, float]:
        totals: dict[str, float] = {}
        steps = 0
        for batch in batches:
            for key, value in self._eval_function(batch).items():
                totals[key] = totals.get(key, 0.0) + float(value)
            steps += 1
        if not steps:
            raise self._no_batch_error()
        return self._logs(totals, steps)

    # ---- public loop -----------------------------------------------------------------------
    def fit(
        self,
        dataset: tf.data.Dataset | Callable[..., tf.data.Dataset],
        *,
        epochs: int,
        steps_per_epoch: int | None = None,
        validation_data: tf.data.Dataset | None = None,
        verbose: bool = True,
        batched: bool = False,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, list[float]]:
        """Trains for `epochs`, resuming from the newest backup in `checkpoint_dir` when there is one.

        Args:
            dataset: `tf.data.Dataset` of single `(x, y)` examples (or `(x,)`
                for a model with its own loss), or a function `epoch -> Dataset`,
                or `(epoch, skip_batches) -> Dataset` that itself starts at global
                batch `skip_batches` (e.g. `keras_vit.data.make_pipeline(skip_batches=...)`,
                which skips without computing). A resumed epoch must replay
                exactly: make the shuffle a function of the epoch.
            epochs: int. Total epochs, counting those already backed up.
            steps_per_epoch: int or None. Cap on steps per epoch. Defaults to None (whole dataset).
            validation_data: example dataset evaluated after each epoch (every
                example counts once), or None.
            verbose: bool. Print one line per epoch (chief only). Defaults to True.
            batched: bool. The datasets already yield global batches (see
                `distribute_global_batches`). Defaults to False.
            on_epoch_end: called as `on_epoch_end(epoch, logs)` on every worker
                after each epoch, before its backup (epoch counts from 0). Defaults to None.

        Returns:
            History dict of per-epoch "loss", "accuracy" (and "val_*") of every
            epoch, those restored from a backup included.
        """
        check_int(epochs, "epochs", minimum=1)
        if steps_per_epoch is not None:
            check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
        progress = self.restore()
        self._check_workers_agree(progress)
        validation = (
            distribute_global_batches(
                self.strategy, validation_data, self.global_batch_size, batched=batched, pad_remainder=True
            )
            if validation_data is not None
            else None
        )
        skips_itself = callable(dataset) and len(inspect.signature(dataset).parameters) >= 2
        while progress.epoch < epochs:
            epoch, skip = progress.epoch, progress.step
            if skips_itself:
                examples, skip_here = dataset(epoch, skip), 0
            else:
                examples, skip_here = (dataset(epoch) if callable(dataset) else dataset), skip
            limit = None if steps_per_epoch is None else steps_per_epoch - skip
            batches = distribute_global_batches(
                self.strategy,
                examples,
                self.global_batch_size,
                batched=batched,
                skip_batches=skip_here,
                max_batches=limit,
            )
            logs = self._train_epoch(batches, progress, steps_per_epoch)
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self._evaluate_batches(validation).items()})
            for key, value in logs.items():
                progress.history.setdefault(key, []).append(value)
            if verbose and is_chief(self.strategy):
                print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
            progress = Progress(epoch + 1, 0, {}, progress.history)
            self.save(progress)  # the commit point: a kill before it replays the epoch's end exactly
        return progress.history

    def evaluate(self, dataset: tf.data.Dataset, *, batched: bool = False) -> dict[str, float]:
        """Mean loss (and accuracy) over an example dataset; a last partial batch counts too (zero-weight padding)."""
        return self._evaluate_batches(
            distribute_global_batches(
                self.strategy, dataset, self.global_batch_size, batched=batched, pad_remainder=True
            )
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
