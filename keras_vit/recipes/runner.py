"""Run a recipe: whole (`run`) or as parts to call `fit` yourself (`prepare`).

    result = keras_vit.recipes.run("digits_vit", epochs=50)        # trains, evaluates, writes the run folder
    parts = keras_vit.recipes.prepare("digits_vit")                # compiled model, data sets, callbacks
    parts.train_model.fit(parts.train_data, epochs=parts.recipe.epochs,
                          validation_data=parts.val_data, callbacks=parts.callbacks)

Every check (recipe values, strategy, batch split across replicas, data
paths, the model to start from) runs in `prepare`, before any training.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_vit import data as vit_data
from keras_vit.recipes import distributed
from keras_vit.recipes.config import Recipe
from keras_vit.recipes.registry import get_recipe
from keras_vit.training.callbacks import build_callbacks
from keras_vit.training.finetune import freeze_backbone, transfer_weights
from keras_vit.training.io import save_model, write_json
from keras_vit.training.optimizers import build_optimizer
from keras_vit.training.precision import resolve_policy
from keras_vit.training.reporting import plot_learning_curves
from keras_vit.training.resume import TrainingBackup, fit_resumable
from keras_vit.training.schedules import WarmupCosine, scale_lr
from keras_vit.training.strategy import check_jit_compile, get_strategy, is_chief, validate_global_batch
from keras_vit.training.xla import resolve_jit_compile


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, ready for `fit`.

    Attributes:
        recipe: the final recipe (overrides applied).
        model: the model being trained (a `ViT`).
        train_model: what `fit` trains: `model`, or a wrapper from the recipe's
            `training_model` hook (distillation, adversarial training).
        train_data, val_data, test_data: batched `tf.data` pipelines; `val_data`
            is the validation split, or the evaluation split when
            `val_fraction` is 0 (monitoring only).
        callbacks: checkpoints, logs, early stopping, BackupAndRestore (none
            under "multi_worker", whose custom loop checkpoints and logs itself).
        strategy: the `tf.distribute.Strategy` the model lives in.
        run_dir: the run folder.
        steps_per_epoch: optimizer steps per epoch.
        preprocessing: resize/normalise settings used for every split.
        class_names: classes of the training data.
        train_data_for_epoch: `(epoch, skip_batches=0)` -> the training pipeline of
            that epoch from batch `skip_batches` on, a pure function of its
            arguments (exact resume; the multi-worker loop replays epochs with it).
    """

    recipe: Recipe
    model: keras.Model
    train_model: keras.Model
    train_data: tf.data.Dataset
    val_data: tf.data.Dataset
    test_data: tf.data.Dataset
    callbacks: list
    strategy: Any
    run_dir: str
    steps_per_epoch: int
    preprocessing: vit_data.Preprocessing
    class_names: tuple
    train_data_for_epoch: Callable[..., tf.data.Dataset] | None = None


@dataclasses.dataclass
class RunResult:
    """What `run` returns: the run folder, the final metrics and the trained model."""

    run_dir: str
    metrics: dict
    history: dict
    model: keras.Model


def resolve(recipe: str | Recipe, **overrides) -> Recipe:
    """A recipe by name or object, with `overrides` applied and checked."""
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(base, Recipe):
        raise ValueError(f"`recipe` must be a name or a Recipe. Received: {type(recipe).__name__}")
    return base.replace(**overrides) if overrides else base


def _jit_compile(recipe: Recipe, strategy, policy: str, user_set: bool, width: int | None):
    if not user_set and recipe.jit_compile is True and check_jit_compile("auto", strategy) is False:
        return False  # a recipe's default, not the user's demand: drop XLA quietly where it fails
    return resolve_jit_compile(recipe.jit_compile, policy, strategy, width=width)


def load_sources(recipe: Recipe, num_channels: int | None = None):
    """(train, validation or None, evaluation) `ImageSource`s of a recipe, subsets applied."""
    kwargs = {}
    if recipe.dataset == "folder":
        if not recipe.data_dir:
            raise ValueError(
                "dataset='folder' needs a data path (--data_dir): a folder with one subfolder per "
                "class, or with train/ and val/ folders that have them."
            )
        kwargs["num_channels"] = num_channels or 3
    train = vit_data.load_source(recipe.dataset, recipe.train_split, recipe.data_dir, **kwargs)
    if recipe.dataset == "folder":
        kwargs["class_names"] = train.class_names
    test = vit_data.load_source(recipe.dataset, recipe.eval_split, recipe.data_dir, **kwargs)
    if recipe.classes is not None or recipe.train_per_class is not None or recipe.train_part is not None:
        train = vit_data.subset_source(train, recipe.classes, recipe.train_per_class, recipe.seed, recipe.train_part)
        test = vit_data.subset_source(test, recipe.classes, None, recipe.seed)
    val = None
    if recipe.val_fraction:
        train, val = vit_data.split_source(train, recipe.val_fraction, recipe.seed)
    return train, val, test


def epoch_seed(seed: int, epoch: int) -> int:
    """The data seed of one epoch: distinct for every (seed, epoch) pair (not `seed + epoch`, which collides)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def default_run_dir(recipe: Recipe) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{recipe.name}-{stamp}")


def build_model(recipe: Recipe, num_classes: int) -> keras.Model:
    """The recipe's model with `num_classes` classes, started from `init_from` when set."""
    from keras_vit.models import MAE, create_model
    from keras_vit.weights import load_pretrained

    arch = dict(recipe.model_overrides, num_classes=num_classes)
    if recipe.image_size is not None:
        arch["image_size"] = recipe.image_size
    if recipe.drop_path_rate is not None:
        arch["drop_path_rate"] = recipe.drop_path_rate
    model = create_model(recipe.model, **arch)
    if recipe.init_from is not None:
        source = keras.saving.load_model(recipe.init_from, compile=False)
        if isinstance(source, MAE):  # its encoder, by the checkpoint path (position embeddings resampled there)
            load_pretrained(model, recipe.init_from)
        else:
            transfer_weights(source, model)
    if recipe.freeze_backbone:
        freeze_backbone(model)
    return model


def prepare(recipe: str | Recipe, **overrides) -> Prepared:
    """Checks a recipe and builds its compiled model, pipelines and callbacks.

    Args:
        recipe: registered name or `Recipe`.
        **overrides: recipe settings to change (e.g. `epochs=5`).

    Returns:
        `Prepared`; call `prepared.train_model.fit(...)` yourself or pass it to `fit_prepared`.
        Sets the global seed and mixed-precision policy of the recipe (`run` restores the policy after).
    """
    from keras_vit.models import model_spec

    recipe = resolve(recipe, **overrides)
    if recipe.requires_init and recipe.init_from is None:
        raise ValueError(
            f"Recipe {recipe.name!r} fine-tunes a trained model: pass init_from (--init) with a "
            "'.keras' file, e.g. the model.keras of an earlier run."
        )
    if recipe.init_from is not None and not os.path.isfile(recipe.init_from):
        raise ValueError(f"init_from {recipe.init_from!r} does not exist. Pass the path of a saved '.keras' model.")
    if recipe.strategy == "multi_worker":
        distributed.check_recipe(recipe)
    spec = model_spec(recipe.model)
    strategy = get_strategy(recipe.strategy)
    validate_global_batch(recipe.batch_size, strategy)
    width = {**spec.arch, **recipe.model_overrides}.get("hidden_dim")
    policy = resolve_policy(recipe.mixed_precision, width=width)
    jit_compile = _jit_compile(recipe, strategy, policy, "jit_compile" in overrides, width)
    steps_per_execution = recipe.steps_per_execution
    if strategy.num_replicas_in_sync > 1 and "steps_per_execution" not in overrides:
        steps_per_execution = 1  # multi-step execution fails under MirroredStrategy here (TF 2.21, Keras 3.15)
    channels = int(spec.arch.get("num_channels", len(spec.mean)))
    train_src, val_src, test_src = load_sources(recipe, channels)
    preprocessing = vit_data.Preprocessing.from_spec(spec, recipe.image_size)
    steps = train_src.num_examples // recipe.batch_size
    if steps == 0:
        raise ValueError(
            f"{train_src.num_examples} training examples make no full batch of {recipe.batch_size}. "
            "Use a smaller batch_size."
        )
    if recipe.steps_per_epoch:
        steps = min(steps, recipe.steps_per_epoch)
    # `fit` runs whole executions, so an epoch of 5 steps at 11 per execution would run 11: use a divisor
    steps_per_execution = max(d for d in range(1, min(steps_per_execution, steps) + 1) if steps % d == 0)
    run_dir = recipe.run_dir or default_run_dir(recipe)
    recipe = recipe.replace(run_dir=run_dir)

    keras.utils.set_random_seed(recipe.seed)
    keras.mixed_precision.set_global_policy(policy)
    crop = vit_data.TrainCrop(recipe.crop, recipe.crop_scale, pad=recipe.pad, hflip=recipe.hflip)
    augment = recipe.augment()

    def train_data_for_epoch(epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        return vit_data.make_pipeline(
            train_src,
            preprocessing,
            recipe.batch_size,
            training=True,
            crop=crop,
            augment=augment,
            seed=epoch_seed(recipe.seed, epoch),
            skip_batches=skip_batches,
        )

    train_data = train_data_for_epoch(0)
    test_data = vit_data.make_pipeline(test_src, preprocessing, recipe.batch_size, training=False)
    val_data = (
        vit_data.make_pipeline(val_src, preprocessing, recipe.batch_size, training=False)
        if val_src is not None
        else test_data
    )

    with strategy.scope():
        model = build_model(recipe, train_src.num_classes)
        lr = scale_lr(recipe.lr, recipe.batch_size, recipe.base_batch_size)
        total = steps * recipe.epochs
        schedule = WarmupCosine(
            lr,
            total_steps=total,
            warmup_steps=min(int(round(steps * recipe.warmup_epochs)), total),
            warmup_start_lr=recipe.warmup_start_lr,
            end_lr=recipe.min_lr,
        )
        optimizer = build_optimizer(
            recipe.optimizer,
            schedule,
            model=model,
            weight_decay=recipe.weight_decay,
            momentum=recipe.momentum,
            beta_2=recipe.beta_2,
            clip_norm=recipe.clip_norm,
            layer_decay=recipe.layer_decay,
            use_ema=recipe.ema,
            ema_momentum=recipe.ema_momentum,
        )
        train_model = recipe.training_model(model, train_data)
        train_model.compile(
            optimizer=optimizer,
            loss=recipe.loss(),
            metrics=recipe.metrics(train_src.num_classes),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
    os.makedirs(run_dir, exist_ok=True)  # the callbacks write there from the first epoch
    callbacks = (
        []
        if distributed.is_multi_worker(strategy)
        else build_callbacks(
            run_dir,
            has_validation=val_src is not None,
            early_stopping_patience=recipe.early_stopping_patience,
            ema=recipe.ema,
            backup_every_steps=recipe.backup_every_steps,
            tensorboard=recipe.tensorboard,
        )
    )
    return Prepared(
        recipe,
        model,
        train_model,
        train_data,
        val_data,
        test_data,
        callbacks,
        strategy,
        run_dir,
        steps,
        preprocessing,
        train_src.class_names,
        train_data_for_epoch,
    )


def _read_history(path: str) -> dict[str, list[float]]:
    """The per-epoch history from `history.csv` (complete across resumed runs; last row per epoch wins)."""
    import csv

    if not os.path.isfile(path):
        return {}
    rows: dict[int, dict] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            rows[int(row.pop("epoch"))] = row
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value))
    return history


def fit_prepared(parts: Prepared) -> RunResult:
    """Trains prepared parts, evaluates on the evaluation split and writes the run folder.

    Writes `model.keras`, `history.csv`, `metrics.json`, `learning_curve.png`,
    `recipe.json` and checkpoints under `parts.run_dir`. Under
    `MultiWorkerMirroredStrategy` every worker trains and evaluates with the
    custom loop (`keras_vit.recipes.distributed`) and only the chief writes.
    """
    recipe, run_dir = parts.recipe, parts.run_dir
    chief = is_chief(parts.strategy)
    os.makedirs(run_dir, exist_ok=True)
    if chief:
        write_json(os.path.join(run_dir, "recipe.json"), recipe.to_dict())
    start = time.perf_counter()
    if distributed.is_multi_worker(parts.strategy):
        trainer = distributed.train(parts, parts.train_data_for_epoch)
        train_seconds = time.perf_counter() - start
        evaluation = trainer.evaluate(parts.test_data, batched=True)
    else:
        fit_resumable(
            parts.train_model,
            parts.train_data_for_epoch,
            epochs=recipe.epochs,
            steps_per_epoch=parts.steps_per_epoch,
            callbacks=parts.callbacks,
            validation_data=parts.val_data,
            verbose=recipe.verbose,
        )
        train_seconds = time.perf_counter() - start
        evaluation = parts.train_model.evaluate(parts.test_data, verbose=0, return_dict=True)
    metrics = {f"test_{k}": float(v) for k, v in evaluation.items()}
    metrics.update(parts.recipe.extra_metrics(parts.model, parts.test_data))
    history = _read_history(os.path.join(run_dir, "history.csv"))
    metrics.update(
        {
            "recipe": recipe.name,
            "model": recipe.model,
            "dataset": recipe.dataset,
            "eval_split": recipe.eval_split,
            "epochs": len(history.get("loss", [])) or recipe.epochs,
            "train_seconds": round(train_seconds, 2),
            "num_params": int(parts.model.count_params()),
            "num_replicas": parts.strategy.num_replicas_in_sync,
            # what mixed_precision="auto" chose: the policy of the first layer with weights
            "precision": next((layer.dtype_policy.name for layer in parts.model.layers if layer.weights), "float32"),
            "xla": bool(getattr(parts.train_model, "jit_compile", False)),  # what jit_compile="auto" chose
            "preprocessing": dataclasses.asdict(parts.preprocessing),
            "class_names": list(parts.class_names),
        }
    )
    if not chief:  # the chief writes the run folder; the other workers only took part in training
        return RunResult(run_dir, metrics, history, parts.model)
    save_model(parts.model, os.path.join(run_dir, "model.keras"))
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    if history:
        plot_learning_curves(
            history,
            os.path.join(run_dir, "learning_curve.png"),
            title=f"{recipe.name}: test accuracy {metrics.get('test_accuracy', float('nan')):.4f}",
        )
    for callback in parts.callbacks:  # the results are written: the backups have served
        if isinstance(callback, TrainingBackup):
            callback.delete()
    return RunResult(run_dir, metrics, history, parts.model)


def run(recipe: str | Recipe, **overrides) -> RunResult:
    """Runs a recipe whole: checks, trains, evaluates and writes the run folder.

    Args:
        recipe: registered name or `Recipe`.
        **overrides: recipe settings to change.

    Returns:
        `RunResult` with the run folder, metrics (`test_accuracy`, ...), history and model.
    """
    policy = keras.mixed_precision.global_policy().name
    try:
        return fit_prepared(prepare(recipe, **overrides))
    finally:
        keras.mixed_precision.set_global_policy(policy)


def evaluate(model_path: str, recipe: str | Recipe = "digits_vit", **overrides) -> dict[str, float]:
    """Evaluates a saved `.keras` model on a recipe's evaluation split.

    The model's own registered variant (when it has one) gives the
    preprocessing; otherwise the recipe's model does.

    Returns:
        {"test_loss", "test_accuracy", ...}.
    """
    from keras_vit.models import model_spec

    if not os.path.isfile(model_path):
        raise ValueError(
            f"Model file {model_path!r} does not exist. Pass a '.keras' file, e.g. runs/<run>/model.keras."
        )
    recipe = resolve(recipe, **overrides)
    model = keras.saving.load_model(model_path, compile=False)
    variant = getattr(model, "variant", None)
    spec = model_spec(variant or recipe.model)
    channels = int(spec.arch.get("num_channels", len(spec.mean)))
    _, _, test_src = load_sources(recipe.replace(val_fraction=0.0), channels)
    size = tuple(model.input_shape[1:3])
    preprocessing = vit_data.Preprocessing.from_spec(spec, size)
    classes = model.output_shape[-1]
    if classes != test_src.num_classes:
        raise ValueError(
            f"The model predicts {classes} classes but {recipe.dataset} has {test_src.num_classes}. "
            "Evaluate on the data set the model was trained for."
        )
    test_data = vit_data.make_pipeline(test_src, preprocessing, recipe.batch_size, training=False)
    model.compile(loss=recipe.loss(), metrics=recipe.metrics(classes))
    result = model.evaluate(test_data, verbose=0, return_dict=True)
    return {f"test_{k}": float(v) for k, v in result.items()}
