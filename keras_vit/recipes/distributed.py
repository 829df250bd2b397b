"""Recipes under `MultiWorkerMirroredStrategy`: the custom loop where `fit` fails.

`model.fit` fails under `MultiWorkerMirroredStrategy` in Keras 3.15
(keras-team/keras#20585), so `keras_vit.recipes.run` trains multi-worker
recipes with `keras_vit.training.multi_worker.DistributedTrainer`: the same
pipelines (one-hot, mixed labels), loss, optimizer and schedule as `fit`.
Every worker runs the same command with the same `TF_CONFIG` cluster and run
folder; the chief alone writes the run folder's files. Epoch `e` reads the
training pipeline seeded by (seed, e), and a resumed epoch starts it at the
backed-up step, so a job killed at any moment and rerun from its backups
(`run_dir/backup_multi_worker`, every `backup_every_steps` steps and at each
epoch end, kept after the run: rerun with more epochs to continue) ends
bitwise as an uninterrupted job. Models with their own loss (MAE pretraining)
train with `loss=None`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_vit.recipes.config import Recipe
from keras_vit.training.io import atomic_path
from keras_vit.training.multi_worker import DistributedTrainer
from keras_vit.training.strategy import is_chief

BACKUP = "backup_multi_worker"


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` needs the custom loop (`fit` fails under it)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_recipe(recipe: Recipe) -> None:
    """Rejects settings the multi-worker loop does not run, before anything is built.

    Raises:
        ValueError: for recipes with their own train step (distillation,
            adversarial training), EMA weights or early stopping.
    """
    if type(recipe).training_model is not Recipe.training_model:
        raise ValueError(
            f"Recipe {recipe.name!r} trains through its own train step ({type(recipe).__name__}), "
            "which the multi-worker loop does not run. Use strategy 'mirrored' or one worker. "
            "Received: strategy='multi_worker'"
        )
    if recipe.ema:
        raise ValueError(
            "EMA weights are not supported with strategy 'multi_worker'. Set ema=False or use "
            "another strategy. Received: ema=True"
        )
    if recipe.early_stopping_patience is not None:
        raise ValueError(
            "Early stopping is not supported with strategy 'multi_worker'. Set "
            "early_stopping_patience=None or use another strategy. "
            f"Received: early_stopping_patience={recipe.early_stopping_patience}"
        )


def top_k_of(metrics: list) -> tuple[int, ...]:
    """The k of each `TopKCategoricalAccuracy` among a recipe's metrics (named "top{k}_accuracy")."""
    return tuple(m.k for m in metrics if isinstance(m, keras.metrics.TopKCategoricalAccuracy))


def write_history_row(path: str, epoch: int, logs: dict[str, float]) -> None:
    """Sets row `epoch` of a `CSVLogger`-style history file (earlier rows kept), atomically."""
    rows: dict[int, dict] = {}
    if os.path.isfile(path):
        with open(path, newline="") as file:
            rows = {int(row.pop("epoch")): row for row in csv.DictReader(file)}
    rows = {e: row for e, row in rows.items() if e < epoch}  # a resumed job rewrites what follows
    rows[epoch] = logs
    keys = sorted(logs)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", *keys])
        for e in sorted(rows):
            writer.writerow([e, *(rows[e].get(k, "") for k in keys)])


def train(parts, train_data_for_epoch: Callable[[int], tf.data.Dataset]) -> DistributedTrainer:
    """Trains prepared parts with `DistributedTrainer`, resuming exactly from the run's newest backup.

    Args:
        parts: `keras_vit.recipes.runner.Prepared` under a multi-worker strategy.
        train_data_for_epoch: `(epoch, skip_batches)` -> the training pipeline of
            that epoch from global batch `skip_batches` on.

    Returns:
        The trainer (its `evaluate(data, batched=True)` evaluates with every worker).
    """
    recipe, model = parts.recipe, parts.model
    trainer = DistributedTrainer(
        model,
        model.optimizer,
        recipe.loss(),
        global_batch_size=recipe.batch_size,
        strategy=parts.strategy,
        checkpoint_dir=os.path.join(parts.run_dir, BACKUP),
        backup_every_steps=recipe.backup_every_steps,
        top_k=top_k_of(recipe.metrics(len(parts.class_names))),
    )
    history_path = os.path.join(parts.run_dir, "history.csv")
    chief = is_chief(parts.strategy)

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        if chief:
            write_history_row(history_path, epoch, logs)

    trainer.fit(
        train_data_for_epoch,
        epochs=recipe.epochs,
        steps_per_epoch=parts.steps_per_epoch,
        validation_data=parts.val_data,
        verbose=bool(recipe.verbose),
        batched=True,
        on_epoch_end=log_epoch,
    )
    return trainer
