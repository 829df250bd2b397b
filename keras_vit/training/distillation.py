"""DeiT knowledge distillation: the hard and soft losses and a `Distiller` model that trains with `fit`.

Touvron et al. 2020 (https://arxiv.org/abs/2012.12877), section 4:

    hard: 1/2 CE(softmax(Z_cls), y) + 1/2 CE(softmax(Z_dist), argmax Z_teacher)
    soft: (1 - lambda) CE(softmax(Z_cls), y) + lambda T^2 KL(softmax(Z_t / T) || softmax(Z_dist / T))

The KL term is the divergence of the student's tempered distribution from the
teacher's (`sum p_t (log p_t - log p_s)`), Hinton et al.'s formulation and what
DeiT's reference code computes; the `T^2` keeps its gradients on the scale of
the cross-entropy's. A distilled DeiT trains its class head on the labels and
its distillation head on the teacher; a student without a distillation token
uses its single head for both terms. At inference DeiT averages the two heads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_vit.validation import check_choice

DISTILLATION_MODES = ("hard", "soft")


def cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Per-example cross-entropy from logits, with integer or probability labels.

    Args:
        labels: int `(batch,)` class indices, or float `(batch, classes)` target
            distributions (e.g. from mixup/cutmix).
        logits: float `(batch, classes)`.
        label_smoothing: float in [0, 1). Mixes the targets with the uniform distribution.

    Returns:
        Float32 `(batch,)` losses.
    """
    logits = ops.cast(logits, "float32")
    classes = logits.shape[-1]
    if len(labels.shape) == len(logits.shape):
        targets = ops.cast(labels, "float32")
    else:
        targets = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), classes, dtype="float32")
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / classes
    return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)


def kl_divergence(teacher_logits, student_logits, temperature: float = 1.0):
    """Per-example `KL(softmax(t / T) || softmax(s / T))`, summed over classes.

    Returns:
        Float32 `(batch,)`.
    """
    teacher_log_probs = ops.log_softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    student_log_probs = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    return ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)


def hard_distillation_loss(labels, class_logits, distill_logits, teacher_logits, *, label_smoothing: float = 0.0):
    """DeiT hard distillation: `1/2 CE(cls, y) + 1/2 CE(dist, argmax teacher)` per example.

    Args:
        labels: the true labels, int `(batch,)` or float `(batch, classes)`.
        class_logits: the student's class-head logits `(batch, classes)`.
        distill_logits: the distillation-head logits (the class-head logits
            again for a student without a distillation token).
        teacher_logits: the frozen teacher's logits `(batch, classes)`.
        label_smoothing: float. Applied to the true labels' term only. Defaults to 0.

    Returns:
        Float32 `(batch,)` losses.
    """
    _check_classes(class_logits, distill_logits, teacher_logits)
    teacher_labels = ops.argmax(ops.stop_gradient(teacher_logits), axis=-1)
    return 0.5 * cross_entropy(labels, class_logits, label_smoothing) + 0.5 * cross_entropy(
        teacher_labels, distill_logits
    )


def soft_distillation_loss(
    labels,
    class_logits,
    distill_logits,
    teacher_logits,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
):
    """DeiT soft distillation: `(1 - alpha) CE(cls, y) + alpha T^2 KL(teacher/T || dist/T)` per example.

    Args:
        labels: the true labels, int `(batch,)` or float `(batch, classes)`.
        class_logits: the student's class-head logits `(batch, classes)`.
        distill_logits: the distillation-head logits (the class-head logits
            again for a student without a distillation token).
        teacher_logits: the frozen teacher's logits `(batch, classes)`.
        alpha: float in [0, 1]. Weight of the distillation term (the paper's lambda).
            Defaults to 0.5.
        temperature: float > 0. Softmax temperature T. Defaults to 1 (DeiT).
        label_smoothing: float. Applied to the true labels' term. Defaults to 0.

    Returns:
        Float32 `(batch,)` losses.
    """
    _check_classes(class_logits, distill_logits, teacher_logits)
    check_distillation_args(alpha=alpha, temperature=temperature, label_smoothing=label_smoothing)
    kl = kl_divergence(ops.stop_gradient(teacher_logits), distill_logits, temperature)
    return (1.0 - alpha) * cross_entropy(labels, class_logits, label_smoothing) + alpha * temperature**2 * kl


def check_distillation_args(
    *, mode: str = "soft", alpha: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0
) -> None:
    """Raises `ValueError` naming a bad distillation argument."""
    check_choice(mode, "mode", DISTILLATION_MODES)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` weights the distillation term and must be in [0, 1]. Received: alpha={alpha!r}")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}")


def _check_classes(*logits) -> None:
    classes = {x.shape[-1] for x in logits}
    if len(classes) != 1:
        raise ValueError(
            f"Student and teacher must predict the same classes; got logits with class counts {sorted(classes)}. "
            "Give the teacher a head with the student's num_classes. "
            f"Received shapes: {[tuple(x.shape) for x in logits]}"
        )


def load_teacher(teacher: keras.Model | str | os.PathLike, *, output_key: str | None = None) -> keras.layers.Layer:
    """Returns a frozen teacher from a Keras model, a `.keras` file or a SavedModel directory.

    Args:
        teacher: a `keras.Model` (frozen in place), a path to a `.keras` file,
            or a TensorFlow SavedModel directory (e.g. from `model.export()`),
            called through its `serving_default` signature.
        output_key: str or None. Which output of a SavedModel signature holds
            the logits, when it has several. Defaults to None (the only one).

    Returns:
        A non-trainable layer mapping images to logits.
    """
    if isinstance(teacher, keras.Model):
        teacher.trainable = False
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError(
            f"`teacher` must be a keras.Model, a .keras file or a SavedModel directory. Received: teacher={teacher!r}"
        )
    path = os.fspath(teacher)
    if path.endswith(".keras") and os.path.isfile(path):
        model = keras.saving.load_model(path)
        model.trainable = False
        return model
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelTeacher(path, output_key=output_key)
    raise ValueError(
        f"No teacher found at {path!r}: expected a .keras file or a SavedModel directory holding saved_model.pb "
        f"(write one with model.export(path)). Received: teacher={path!r}"
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class SavedModelTeacher(keras.layers.Layer):
    """A SavedModel's `serving_default` signature as a frozen logits layer.

    Args:
        directory: str. SavedModel directory.
        output_key: str or None. The signature output holding the logits. Defaults to None (the only one).
    """

    def __init__(self, directory: str, output_key: str | None = None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.directory = path = directory
        self.output_key = output_key
        self._saved = tf.saved_model.load(path)
        signatures = getattr(self._saved, "signatures", {})
        if "serving_default" not in signatures:
            raise ValueError(
                f"SavedModel {path!r} has no 'serving_default' signature (it has {sorted(signatures)}). "
                "Export the teacher with model.export(path)."
            )
        self._signature = signatures["serving_default"]
        _, input_specs = self._signature.structured_input_signature
        if len(input_specs) != 1:
            raise ValueError(
                f"The teacher signature must take one input (images); {path!r} takes {sorted(input_specs)}."
            )
        self._input_name = next(iter(input_specs))
        outputs = sorted(self._signature.structured_outputs)
        if output_key is None and len(outputs) != 1:
            raise ValueError(f"SavedModel {path!r} has outputs {outputs}; pass output_key= naming the logits.")
        if output_key is not None and output_key not in outputs:
            raise ValueError(f"SavedModel {path!r} has outputs {outputs}. Received: output_key={output_key!r}")
        self._output_key = output_key or outputs[0]

    def call(self, images):
        return self._signature(**{self._input_name: ops.cast(images, "float32")})[self._output_key]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "directory": self.directory, "output_key": self.output_key}


def _check_teacher_input(student, teacher, teacher_preprocess) -> None:
    """Fails early when the teacher cannot take the student's images as they are."""
    if teacher_preprocess is not None:
        return
    try:
        student_shape, teacher_shape = tuple(student.input_shape[1:]), tuple(teacher.input_shape[1:])
    except (AttributeError, ValueError):
        return  # a teacher without a fixed input shape (e.g. a SavedModel) is checked by its first call
    if None not in teacher_shape and student_shape != teacher_shape:
        raise ValueError(
            f"The teacher takes images of shape {teacher_shape} but the student's are {student_shape}. Pass "
            "teacher_preprocess= mapping student inputs to the teacher's (resize, normalisation), or use a teacher "
            "built for the student's input."
        )


def has_distillation_head(model: keras.Model) -> bool:
    """Whether `model` is a distilled ViT/DeiT with two heads (see `ViT.heads_model`)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "distillation_token", False) and getattr(config, "num_classes", 0))


@keras.saving.register_keras_serializable(package="keras_vit")
class Distiller(keras.Model):
    """Trains a student against a frozen teacher with DeiT's hard or soft distillation, through `fit`.

    A distilled DeiT student trains its class head on the labels and its
    distillation head on the teacher (`student.heads_model()`); any other
    student uses its single head for both terms. Metrics: the loss and the
    accuracy of the student's inference output (DeiT: the heads' average).
    Deploy `distiller.student`; saving the distiller (checkpoints) stores the
    teacher with it (a SavedModel teacher by its directory). With a SavedModel
    teacher the train step is never XLA-compiled (`jit_compile` is set False).

    Args:
        student: keras.Model. The model to train.
        teacher: keras.Model, `.keras` file or SavedModel directory (see `load_teacher`).
        mode: "hard" or "soft". Defaults to "hard" (DeiT's best).
        alpha: float. Weight of the distillation term in soft mode. Defaults to 0.5.
        temperature: float. Soft-mode temperature. Defaults to 1.0 (DeiT).
        label_smoothing: float. On the true labels' term. Defaults to 0.
        teacher_preprocess: callable or None. Maps the student's input batch to
            the teacher's (e.g. another size or normalisation). Defaults to None.
        teacher_output_key: str or None. See `load_teacher`.

    Examples:
        >>> distiller = Distiller(keras_vit.DeiT(...), teacher_model, mode="hard")
        >>> distiller.compile(keras.optimizers.AdamW(5e-4))
        >>> distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    """

    def __init__(
        self,
        student: keras.Model,
        teacher,
        *,
        mode: str = "hard",
        alpha: float = 0.5,
        temperature: float = 1.0,
        label_smoothing: float = 0.0,
        teacher_preprocess: Callable | None = None,
        teacher_output_key: str | None = None,
        **kwargs,
    ):
        check_distillation_args(mode=mode, alpha=alpha, temperature=temperature, label_smoothing=label_smoothing)
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.student = student
        self.teacher = load_teacher(teacher, output_key=teacher_output_key)
        self.teacher.trainable = False
        self.mode, self.alpha, self.temperature, self.label_smoothing = mode, alpha, temperature, label_smoothing
        self.teacher_preprocess = teacher_preprocess
        self.teacher_output_key = teacher_output_key
        _check_teacher_input(student, self.teacher, teacher_preprocess)
        self.two_heads = has_distillation_head(student)
        self.heads = student.heads_model() if self.two_heads else None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.built = student.built  # fit callbacks (BackupAndRestore) need a built model

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.student(images, training=training)

    def compile(self, *args, jit_compile="auto", **kwargs):
        # a SavedModel signature is an opaque TF function: XLA is never turned on around it
        if isinstance(self.teacher, SavedModelTeacher):
            jit_compile = False
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def get_config(self) -> dict[str, Any]:
        if self.teacher_preprocess is not None:
            raise ValueError(
                "A Distiller with a `teacher_preprocess` function cannot be serialized; save "
                "`distiller.student` instead."
            )
        teacher = (
            self.teacher.directory
            if isinstance(self.teacher, SavedModelTeacher)
            else keras.saving.serialize_keras_object(self.teacher)
        )
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": teacher,
            "mode": self.mode,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "label_smoothing": self.label_smoothing,
            "teacher_output_key": self.teacher_output_key,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"), custom_objects=custom_objects)
        teacher = config.pop("teacher")
        if isinstance(teacher, dict):
            teacher = keras.saving.deserialize_keras_object(teacher, custom_objects=custom_objects)
        return cls(student, teacher, **config)

    def teacher_logits(self, images):
        """The frozen teacher's logits for a batch of student inputs."""
        if self.teacher_preprocess is not None:
            images = self.teacher_preprocess(images)
        return ops.stop_gradient(ops.cast(self.teacher(images, training=False), "float32"))

    def student_heads(self, images, training=False):
        """(class logits, distillation logits); the same tensor twice for a one-head student."""
        if self.two_heads:
            outputs = self.heads(images, training=training)
            return outputs["cls"], outputs["dist"]
        logits = self.student(images, training=training)
        return logits, logits

    def distillation_loss(self, labels, class_logits, distill_logits, teacher_logits):
        """Per-example loss of the configured mode."""
        if self.mode == "hard":
            return hard_distillation_loss(
                labels, class_logits, distill_logits, teacher_logits, label_smoothing=self.label_smoothing
            )
        return soft_distillation_loss(
            labels,
            class_logits,
            distill_logits,
            teacher_logits,
            alpha=self.alpha,
            temperature=self.temperature,
            label_smoothing=self.label_smoothing,
        )

    def _step_loss(self, images, labels, sample_weight, training):
        teacher_logits = self.teacher_logits(images)
        class_logits, distill_logits = self.student_heads(images, training=training)
        per_example = self.distillation_loss(labels, class_logits, distill_logits, teacher_logits)
        loss = weighted_mean(per_example, sample_weight)
        if training and self.student.losses:
            loss = loss + ops.sum(ops.stack(self.student.losses))
        prediction = (class_logits + distill_logits) / 2.0 if self.two_heads else class_logits
        return loss, prediction

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, prediction = self._step_loss(images, labels, sample_weight, training=True)
            # fit runs this per replica and the optimizer sums gradients across replicas
            scaled = self.optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._update_metrics(loss, labels, prediction)

    def test_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, prediction = self._step_loss(images, labels, sample_weight, training=False)
        return self._update_metrics(loss, labels, prediction)

    def _update_metrics(self, loss, labels, prediction):
        batch = ops.shape(prediction)[0]
        self.loss_tracker.update_state(loss, sample_weight=batch)
        self.accuracy_tracker.update_state(correct(labels, prediction))
        return {m.name: m.result() for m in self.metrics}


def weighted_mean(per_example, sample_weight=None):
    """Keras's "sum_over_batch_size" reduction: `sum(w * loss) / batch`."""
    if sample_weight is None:
        return ops.mean(per_example)
    return ops.mean(per_example * ops.cast(ops.reshape(sample_weight, (-1,)), per_example.dtype))


def correct(labels, logits):
    """Float `(batch,)`: 1 where the arg-max prediction matches the (arg-max of the) label."""
    if len(labels.shape) == len(logits.shape):
        labels = ops.argmax(labels, axis=-1)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32")
