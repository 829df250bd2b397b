"""DeiT distillation losses against numpy/torch, and the Distiller model under fit."""

import keras
import numpy as np
import pytest
import torch

import keras_vit
from keras_vit.training.distillation import (
    Distiller,
    SavedModelTeacher,
    cross_entropy,
    hard_distillation_loss,
    kl_divergence,
    load_teacher,
    soft_distillation_loss,
)

TINY = dict(image_size=8, patch_size=4, num_channels=1, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=5)


def np_log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ce(labels, logits):
    return -np_log_softmax(logits)[np.arange(len(labels)), labels]


def np_kl(teacher, student, t):
    lt, ls = np_log_softmax(teacher / t), np_log_softmax(student / t)
    return (np.exp(lt) * (lt - ls)).sum(-1)


@pytest.fixture
def logits(rng):
    batch, classes = 6, 5
    return (
        rng.integers(0, classes, batch),
        rng.normal(size=(batch, classes)).astype("float32") * 3,
        rng.normal(size=(batch, classes)).astype("float32") * 3,
        rng.normal(size=(batch, classes)).astype("float32") * 3,
    )


def test_hard_distillation_matches_numpy(logits):
    y, cls, dist, teacher = logits
    got = np.asarray(hard_distillation_loss(y, cls, dist, teacher))
    expected = 0.5 * np_ce(y, cls) + 0.5 * np_ce(teacher.argmax(-1), dist)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (0.1, 3.0), (1.0, 0.5)])
def test_soft_distillation_matches_numpy(logits, alpha, temperature):
    y, cls, dist, teacher = logits
    got = np.asarray(soft_distillation_loss(y, cls, dist, teacher, alpha=alpha, temperature=temperature))
    expected = (1 - alpha) * np_ce(y, cls) + alpha * temperature**2 * np_kl(teacher, dist, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_kl_and_cross_entropy_match_torch(logits):
    y, cls, dist, teacher = logits
    t = 2.0
    reference = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor(dist) / t, -1),
        torch.log_softmax(torch.tensor(teacher) / t, -1),
        reduction="none",
        log_target=True,
    ).sum(-1)
    np.testing.assert_allclose(np.asarray(kl_divergence(teacher, dist, t)), reference.numpy(), rtol=1e-5, atol=1e-6)
    smoothed = torch.nn.functional.cross_entropy(
        torch.tensor(cls), torch.tensor(y), label_smoothing=0.1, reduction="none"
    )
    np.testing.assert_allclose(np.asarray(cross_entropy(y, cls, 0.1)), smoothed.numpy(), rtol=1e-5, atol=1e-6)
    one_hot = np.eye(5, dtype="float32")[y]
    np.testing.assert_allclose(np.asarray(cross_entropy(one_hot, cls)), np_ce(y, cls), rtol=1e-5, atol=1e-6)


def test_loss_argument_errors(logits):
    y, cls, dist, teacher = logits
    with pytest.raises(ValueError, match="alpha"):
        soft_distillation_loss(y, cls, dist, teacher, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        soft_distillation_loss(y, cls, dist, teacher, temperature=0)
    with pytest.raises(ValueError, match="same classes"):
        hard_distillation_loss(y, cls, dist, teacher[:, :3])
    with pytest.raises(ValueError, match="mode"):
        Distiller(keras_vit.DeiT(**TINY), keras_vit.ViT(**TINY), mode="medium")


def _data(rng, n=32):
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 5, n).astype("int32")


def test_distiller_trains_both_heads_and_reports_the_formula(rng):
    x, y = _data(rng)
    student, teacher = keras_vit.DeiT(**TINY), keras_vit.ViT(**TINY)
    teacher.get_layer("head").set_weights([rng.normal(size=(16, 5)).astype("float32"), np.zeros(5, "float32")])
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = {v.path: np.array(v) for v in student.trainable_variables}
    heads = student.heads_model()(x)
    expected = np.mean(
        0.5 * np_ce(y, np.asarray(heads["cls"]))
        + 0.5 * np_ce(np.asarray(teacher(x)).argmax(-1), np.asarray(heads["dist"]))
    )

    distiller = Distiller(student, teacher, mode="hard")
    distiller.compile(keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)

    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    changed = {v.path for v in student.trainable_variables if not np.array_equal(student_before[v.path], np.array(v))}
    assert {"head", "head_dist"} <= {path.split("/")[0] for path in changed}
    assert set(distiller.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_soft_distillation_of_a_one_head_student(rng):
    x, y = _data(rng)
    student, teacher = keras_vit.ViT(**TINY), keras_vit.ViT(**TINY)
    teacher.get_layer("head").set_weights([rng.normal(size=(16, 5)).astype("float32"), np.zeros(5, "float32")])
    logits = np.asarray(student(x))
    expected = np.mean(0.5 * np_ce(y, logits) + 0.5 * 4.0 * np_kl(np.asarray(teacher(x)), logits, 2.0))
    distiller = Distiller(student, teacher, mode="soft", alpha=0.5, temperature=2.0)
    distiller.compile(keras.optimizers.SGD(0.1))
    result = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)


def test_teacher_from_savedmodel_and_keras_file(rng, tmp_path):
    x, _ = _data(rng, 4)
    teacher = keras_vit.ViT(**TINY)
    teacher.get_layer("head").set_weights([rng.normal(size=(16, 5)).astype("float32"), np.ones(5, "float32")])
    expected = np.asarray(teacher(x))
    teacher.export(str(tmp_path / "teacher_sm"), verbose=False)
    from_savedmodel = load_teacher(str(tmp_path / "teacher_sm"))
    assert isinstance(from_savedmodel, SavedModelTeacher) and not from_savedmodel.trainable
    np.testing.assert_allclose(np.asarray(from_savedmodel(x)), expected, rtol=1e-5, atol=1e-6)
    teacher.save(tmp_path / "teacher.keras")
    distiller = Distiller(keras_vit.DeiT(**TINY), str(tmp_path / "teacher.keras"))
    np.testing.assert_allclose(np.asarray(distiller.teacher_logits(x)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="No teacher found"):
        load_teacher(str(tmp_path / "missing"))


# ---- recipes and CLI ---------------------------------------------------------------------------
def test_distillation_recipes_are_registered_and_checked():
    from keras_vit import recipes
    from keras_vit.recipes.distill_adversarial import DistillRecipe

    assert {"deit_distill", "digits_deit_distill"} <= set(recipes.list_recipes())
    recipe = recipes.get_recipe("deit_distill")
    assert isinstance(recipe, DistillRecipe) and recipe.distill_mode == "hard" and "2012.12877" in recipe.source
    with pytest.raises(ValueError, match="mode"):
        recipe.replace(distill_mode="medium")
    with pytest.raises(ValueError, match="needs --teacher"):
        run_cli(["--recipe=digits_deit_distill"])
    with pytest.raises(ValueError, match="not a distillation recipe"):
        run_cli(["--recipe=digits_vit", "--teacher=x.keras"])
    with pytest.raises(ValueError, match="--set takes key=value"):
        run_cli(["--teacher=x.keras", "--set=lr"])


def run_cli(args):
    from absl import flags

    from keras_vit.recipes import cli_distill

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["keras-vit distill", *args])
    try:
        cli_distill.main(["distill"])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_distill_command_trains_a_deit_student_from_a_teacher_file(tmp_path):
    teacher = keras_vit.create_model("vit_digits_patch2_8")
    teacher.save(tmp_path / "teacher.keras")
    run_dir = tmp_path / "run"
    run_cli(
        [
            f"--teacher={tmp_path / 'teacher.keras'}",
            "--epochs=1",
            f"--run_dir={run_dir}",
            "--mode=soft",
            "--temperature=2",
            "--set=steps_per_epoch=3",
            "--set=lr=1e-3",
        ]
    )
    import json

    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert (recipe["steps_per_epoch"], recipe["lr"], recipe["distill_temperature"]) == (3, 1e-3, 2.0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["recipe"] == "digits_deit_distill" and 0.0 <= metrics["test_accuracy"] <= 1.0
    student = keras.saving.load_model(run_dir / "model.keras")
    assert student.config.distillation_token and student.output_shape == (None, 10)


def test_distiller_round_trips_through_a_keras_file(rng, tmp_path):
    x, _ = _data(rng, 4)
    teacher = keras_vit.ViT(**TINY)
    teacher.get_layer("head").set_weights([rng.normal(size=(16, 5)).astype("float32"), np.ones(5, "float32")])
    student = keras_vit.DeiT(**TINY)
    student.get_layer("head_dist").set_weights([rng.normal(size=(16, 5)).astype("float32"), np.ones(5, "float32")])
    distiller = Distiller(student, teacher, mode="soft", alpha=0.3, temperature=2.0)
    distiller.save(tmp_path / "distiller.keras")  # what recipe checkpoints do
    loaded = keras.saving.load_model(tmp_path / "distiller.keras")
    assert (loaded.mode, loaded.alpha, loaded.temperature, loaded.two_heads) == ("soft", 0.3, 2.0, True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(student(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.teacher_logits(x)), np.asarray(teacher(x)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="teacher takes images of shape"):
        Distiller(keras_vit.DeiT(**dict(TINY, image_size=16)), teacher)
