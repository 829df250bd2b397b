"""`Recipe`: every setting of a training run, as data.

A recipe is a frozen dataclass: named and documented in the registry
(`register_recipe`), changed with `recipe.replace(epochs=5)` (unknown names
and bad values fail before anything is built), and saved with every run as
`recipe.json`. Recipes that train differently (distillation, adversarial
training) subclass `Recipe`, add their fields and override the hooks
`training_model`, `loss` and `extra_metrics`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from typing import Any

import keras

from keras_vit.data.augment import Augment, AugmentSettings
from keras_vit.training.precision import check_mixed_precision
from keras_vit.training.xla import check_jit_compile_setting

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
CROPS = ("random_resized", "pad_crop", "resize")


@dataclasses.dataclass(frozen=True)
class Recipe(AugmentSettings):
    """Settings of a training run.

    Model:
        model: registered model name (`keras_vit.list_models()`).
        model_overrides: architecture overrides passed to `create_model`.
        image_size: train/evaluate at this size (position embeddings
            resampled on fine-tuning); None keeps the model's.
        drop_path_rate: stochastic depth of the model (None keeps the variant's).
        init_from: a `.keras` model to start from (fine-tuning, probes); its
            head is replaced when the class count differs.
        freeze_backbone: train only the head (linear probe).
        requires_init: the recipe only makes sense from a trained model
            (fine-tuning, probes): running it without `init_from` fails.
    Data:
        dataset: "digits", "cifar10", "cifar100", "folder" or "tfds:<name>".
        data_dir: local copy of the data (required for "folder").
        train_split, eval_split: split names of the data set.
        classes: keep only these class indices (relabelled 0..k-1), or None.
        train_per_class: keep this many training images per class (seeded), or None.
        train_part: (start, end) fractions of a seeded shuffle of the training
            split to keep, e.g. (0, 0.5) and (0.5, 1) for two disjoint halves.
        val_fraction: part of the training split held out for validation,
            early stopping and the best checkpoint; with 0 the evaluation
            split is shown per epoch for the learning curve only (nothing is
            selected on it).
        crop, crop_scale, pad, hflip: training crop (`keras_vit.data.TrainCrop`).
        randaugment_ops, randaugment_magnitude, random_erasing, mixup_alpha,
        cutmix_alpha, mix_prob, switch_prob: augmentation (`keras_vit.data.Augment`).
    Optimisation:
        epochs, batch_size (global), steps_per_epoch (cap; None: whole split).
        optimizer: "adamw" or "sgd"; lr (peak), base_batch_size (lr is scaled
        by batch_size / base_batch_size when set), weight_decay, momentum (SGD), beta_2 (AdamW),
        warmup_epochs (capped at epochs), warmup_start_lr, min_lr (cosine end), clip_norm (global
        norm), label_smoothing, layer_decay (layer-wise lr decay), ema and
        ema_momentum (weight averaging), early_stopping_patience.
    System:
        seed, strategy (auto|default|one_device|mirrored|multi_worker|tpu),
        mixed_precision (True, False or "auto": mixed bfloat16 where the CPU/GPU has
        native bfloat16 and, on a CPU, the model is at least 128 wide, see
        `keras_vit.training.precision`), jit_compile (True, False or
        "auto": XLA on a CPU when training a model narrower than 128 in float32,
        otherwise off; Keras' choice on GPU, see `keras_vit.training.xla`),
        steps_per_execution (steps per compiled call: fewer Python round trips
        for small models; callbacks see every N-th batch), backup_every_steps
        (optimizer steps between the backups a killed run resumes from, besides
        one at every epoch end; see `keras_vit.training.TrainingBackup`), run_dir
        (None: runs/<name>-<timestamp>), tensorboard, verbose.
    Documentation:
        name, description, source (paper or code the settings come from).
    """

    name: str = "custom"
    description: str = ""
    source: str = ""
    # model
    model: str = "vit_digits_patch2_8"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    image_size: int | None = None
    drop_path_rate: float | None = None
    init_from: str | None = None
    freeze_backbone: bool = False
    requires_init: bool = False
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    classes: tuple | None = None
    train_per_class: int | None = None
    train_part: tuple | None = None
    val_fraction: float = 0.0
    crop: str = "random_resized"
    crop_scale: tuple = (0.08, 1.0)
    pad: int = 4
    hflip: bool = True
    # randaugment_ops, randaugment_magnitude, random_erasing, mixup_alpha, cutmix_alpha, mix_prob and
    # switch_prob come from `AugmentSettings` (keyword-only, declared once with `keras_vit.data.Augment`)
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    steps_per_epoch: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    base_batch_size: int | None = None
    weight_decay: float = 0.05
    momentum: float = 0.9
    beta_2: float = 0.999
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    clip_norm: float | None = None
    label_smoothing: float = 0.0
    layer_decay: float | None = None
    ema: bool = False
    ema_momentum: float = 0.9999
    early_stopping_patience: int | None = None
    # system
    seed: int = 0
    strategy: str = "auto"
    mixed_precision: Any = "auto"
    jit_compile: Any = "auto"
    steps_per_execution: int = 1
    backup_every_steps: int = 200
    run_dir: str | None = None
    tensorboard: bool = True
    verbose: Any = "auto"

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        self.validate()

    # ---- checks ---------------------------------------------------------------------------
    def _check_types(self) -> None:
        kinds = {
            "int": (int,),
            "float": (int, float),
            "bool": (bool,),
            "str": (str,),
            "tuple": (tuple, list),
            "dict": (dict,),
        }
        for field in dataclasses.fields(self):
            names = [n.strip() for n in str(field.type).split("|")]
            value = getattr(self, field.name)
            if "Any" in names or (value is None and "None" in names):
                continue
            allowed = tuple(t for n in names for t in kinds.get(n, ()))
            wrong_bool = isinstance(value, bool) and bool not in allowed
            if allowed and (not isinstance(value, allowed) or wrong_bool):
                raise ValueError(
                    f"Recipe setting `{field.name}` must be of type {field.type}. Received: {field.name}={value!r}"
                )

    def validate(self) -> None:
        """Raises `ValueError` naming the bad setting and the fix; runs on every construction."""
        self._check_types()

        def positive_int(field, allow_none=False):
            value = getattr(self, field)
            if allow_none and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"`{field}` must be a positive int{' or None' if allow_none else ''}. Received: {field}={value!r}"
                )

        for field in ("epochs", "batch_size", "steps_per_execution", "backup_every_steps"):
            positive_int(field)
        for field in ("steps_per_epoch", "train_per_class", "base_batch_size", "image_size"):
            positive_int(field, allow_none=True)
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive. Received: lr={self.lr!r}")
        for field in ("weight_decay", "warmup_epochs", "warmup_start_lr", "min_lr"):
            if getattr(self, field) < 0:
                raise ValueError(f"`{field}` must be >= 0. Received: {field}={getattr(self, field)!r}")
        for field in ("label_smoothing", "val_fraction", "random_erasing"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{field}` must be in [0, 1). Received: {field}={value!r}")
        self.augment()  # checks the other augmentation settings
        if self.pad < 0:
            raise ValueError(f"`pad` must be >= 0 (0 turns it off). Received: pad={self.pad!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"`optimizer` must be 'adamw' or 'sgd'. Received: optimizer={self.optimizer!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}. Expected one of {STRATEGIES}.")
        if self.crop not in CROPS:
            raise ValueError(f"`crop` must be one of {CROPS}. Received: crop={self.crop!r}")
        check_mixed_precision(self.mixed_precision)
        check_jit_compile_setting(self.jit_compile)
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"`layer_decay` must be in (0, 1] or None. Received: layer_decay={self.layer_decay!r}")
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1). Received: drop_path_rate={self.drop_path_rate!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"`clip_norm` must be positive or None. Received: clip_norm={self.clip_norm!r}")
        if not 0.0 < self.beta_2 < 1.0:
            raise ValueError(f"`beta_2` must be in (0, 1). Received: beta_2={self.beta_2!r}")
        if self.early_stopping_patience is not None and self.val_fraction == 0:
            raise ValueError(
                "`early_stopping_patience` needs a validation split: set val_fraction > 0 (early "
                "stopping on the evaluation split would select on test data)."
            )
        if self.init_from is not None and not str(self.init_from).endswith(".keras"):
            raise ValueError(f"`init_from` must be a '.keras' model file. Received: init_from={self.init_from!r}")
        if self.freeze_backbone and self.layer_decay not in (None, 1.0):
            raise ValueError(
                "A linear probe (freeze_backbone=True) trains only the head; layer_decay does not "
                "apply. Set layer_decay=None."
            )

    # ---- changing and saving ---------------------------------------------------------------
    def replace(self, **overrides) -> Recipe:
        """A copy with `overrides` applied; unknown names fail with the closest valid ones."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            hints = {u: difflib.get_close_matches(u, valid, n=3) for u in unknown}
            hint = "; ".join(f"{u!r}: did you mean {', '.join(h)}?" if h else repr(u) for u, h in hints.items())
            raise ValueError(f"Unknown recipe setting(s) for {self.name!r}: {hint}. Valid settings: {sorted(valid)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        config["recipe_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        return config

    def settings(self) -> dict[str, Any]:
        """{setting: value} of this recipe (the CLI checks `--set key=value` types against it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def augment(self) -> Augment:
        """The batch augmentation of this recipe (`keras_vit.data.Augment`)."""
        return Augment(**self.augment_settings())

    # ---- hooks for recipes that train differently -------------------------------------------
    def training_model(self, model: keras.Model, train_data=None) -> keras.Model:
        """The model `fit` trains; override to wrap `model` (e.g. a distillation trainer). Default: `model`."""
        return model

    def loss(self) -> keras.losses.Loss:
        """The training loss: cross-entropy on one-hot (possibly mixed) labels with label smoothing."""
        return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.label_smoothing)

    def metrics(self, num_classes: int) -> list:
        """Metrics reported per epoch and at evaluation."""
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes > 10:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
        return metrics

    def extra_metrics(self, model: keras.Model, test_data) -> dict[str, float]:
        """Extra evaluation numbers for the metrics JSON (e.g. robust accuracy). Default: none."""
        return {}


def parse_settings(pairs: list[str], recipe) -> dict:
    """`["lr=3e-3", "hflip=False"]` -> {"lr": 0.003, "hflip": False}, checked against the recipe's settings."""
    defaults = recipe.settings()
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set takes key=value. Received: --set {pair!r}")
        if key not in defaults:
            recipe.replace(**{key: None})  # raises with the closest valid names
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string such as dataset=cifar10
        if isinstance(defaults[key], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        settings[key] = value
    return settings
