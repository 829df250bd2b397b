"""FGSM/PGD against closed-form gradients, and PGD adversarial training on real digits."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_vit
from keras_vit.training.adversarial import (
    AdversarialTrainer,
    PixelSpace,
    evaluate_robustness,
    fgsm_attack,
    pgd_attack,
)

MEAN, STD = 0.3050, 0.3761  # vit_digits_patch2_8's normalisation


def linear_model(rng, classes=4):
    model = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(classes)])
    weights = rng.normal(size=(9, classes)).astype("float32")
    bias = rng.normal(size=classes).astype("float32")
    model.layers[-1].set_weights([weights, bias])
    return model, weights, bias


def test_fgsm_matches_the_closed_form_gradient(rng):
    model, weights, bias = linear_model(rng)
    pixels_clean = rng.uniform(0, 1, size=(8, 3, 3, 1)).astype("float32")
    labels = rng.integers(0, 4, 8)
    inputs = (pixels_clean - MEAN) / STD
    # d CE / d input = W (softmax(z) - onehot); pixels = input * std + mean, so the sign is the same
    z = inputs.reshape(8, 9) @ weights + bias
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gradient = (p - np.eye(4)[labels]) @ weights.T
    expected = np.clip(pixels_clean.reshape(8, 9) + 0.1 * np.sign(gradient), 0, 1)
    adversarial = fgsm_attack(model, inputs, labels, epsilon=0.1, pixels=PixelSpace([MEAN], [STD]))
    got = np.asarray(adversarial).reshape(8, 9) * STD + MEAN
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pgd_stays_in_the_ball_and_range_and_raises_the_loss(rng):
    model, _, _ = linear_model(rng)
    pixels = PixelSpace([MEAN], [STD])
    clean = rng.uniform(0, 1, size=(16, 3, 3, 1)).astype("float32")
    clean[:, 0] = 0.0  # pixels at the edge of the valid range must stay inside it
    labels = rng.integers(0, 4, 16)
    inputs = (clean - MEAN) / STD
    adversarial = pgd_attack(model, inputs, labels, epsilon=0.05, steps=5, pixels=pixels, seed=3)
    moved = np.asarray(adversarial) * STD + MEAN
    assert np.abs(moved - clean).max() <= 0.05 + 1e-5
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6

    def loss(x):
        return np.asarray(keras.losses.sparse_categorical_crossentropy(labels, model(x), from_logits=True))

    assert loss(adversarial).mean() > loss(inputs).mean()
    again = pgd_attack(model, inputs, labels, epsilon=0.05, steps=5, pixels=pixels, seed=3)
    np.testing.assert_array_equal(np.asarray(adversarial), np.asarray(again))


def test_attack_argument_errors(rng):
    model, _, _ = linear_model(rng)
    x, y = np.zeros((2, 3, 3, 1), "float32"), np.zeros(2, "int32")
    with pytest.raises(ValueError, match="epsilon"):
        pgd_attack(model, x, y, epsilon=-1)
    with pytest.raises(ValueError, match="steps"):
        pgd_attack(model, x, y, epsilon=0.1, steps=0)
    with pytest.raises(ValueError, match="std"):
        PixelSpace([0.5], None)
    with pytest.raises(ValueError, match="clean_weight"):
        AdversarialTrainer(model, epsilon=0.1, clean_weight=2.0)


def digits_split():
    digits = load_digits()
    images = ((digits.images / 16.0 - MEAN) / STD).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1400], order[1400:]
    return images[train], digits.target[train], images[test], digits.target[test]


TINY_DIGITS = dict(
    image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10
)


def test_adversarial_trainer_reports_clean_and_robust_accuracy():
    x, y, _, _ = digits_split()
    small = dict(TINY_DIGITS, patch_size=4, hidden_dim=16, mlp_dim=16)
    trainer = AdversarialTrainer(keras_vit.ViT(**small), epsilon=0.1, steps=1, pixels=PixelSpace([MEAN], [STD]))
    trainer.compile(keras.optimizers.Adam(3e-3))
    history = trainer.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "robust_accuracy"}
    result = trainer.evaluate(x[:64], y[:64], batch_size=64, verbose=0, return_dict=True)
    assert 0.0 <= result["robust_accuracy"] <= 1.0 and np.isfinite(result["loss"])


@pytest.mark.slow
def test_pgd_breaks_a_normal_model_and_adversarial_training_recovers_robustness():
    x, y, x_test, y_test = digits_split()
    pixels = PixelSpace([MEAN], [STD])
    attack = dict(epsilon=0.1, steps=5, pixels=pixels)

    keras.utils.set_random_seed(0)
    normal = keras_vit.ViT(**TINY_DIGITS)
    normal.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    normal.fit(x, y, batch_size=64, epochs=15, verbose=0)
    before = evaluate_robustness(normal, x_test, y_test, **attack)
    assert before["clean_accuracy"] >= 0.85
    assert before["robust_accuracy"] <= 0.5 * before["clean_accuracy"]  # PGD lowers accuracy sharply

    keras.utils.set_random_seed(0)
    robust = keras_vit.ViT(**TINY_DIGITS)
    trainer = AdversarialTrainer(robust, epsilon=0.1, steps=3, pixels=pixels)
    trainer.compile(keras.optimizers.Adam(3e-3))
    trainer.fit(x, y, batch_size=64, epochs=15, verbose=0)
    after = evaluate_robustness(robust, x_test, y_test, **attack)
    assert after["robust_accuracy"] >= before["robust_accuracy"] + 0.15, (before, after)


@pytest.mark.slow
def test_adversarial_recipe_reports_clean_and_robust_accuracy(tmp_path):
    from keras_vit import recipes
    from keras_vit.recipes.distill_adversarial import AdversarialRecipe

    assert isinstance(recipes.get_recipe("adversarial"), AdversarialRecipe)
    with pytest.raises(ValueError, match="epsilon"):
        recipes.get_recipe("adversarial").replace(epsilon=-0.1)
    result = recipes.run(
        "digits_adversarial",
        epochs=1,
        steps_per_epoch=4,
        eval_attack_steps=2,
        run_dir=str(tmp_path / "run"),
        verbose=0,
        tensorboard=False,
    )
    assert {"test_accuracy", "test_robust_accuracy"} <= set(result.metrics)
    assert result.metrics["attack_epsilon"] == 0.1
    assert (tmp_path / "run" / "model.keras").exists()


def test_adversarial_trainer_round_trips_through_a_keras_file(rng, tmp_path):
    model, _, _ = linear_model(rng)
    trainer = AdversarialTrainer(
        model, epsilon=0.05, steps=3, eval_steps=5, pixels=PixelSpace([MEAN], [STD]), clean_weight=0.25
    )
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    assert (loaded.epsilon, loaded.steps, loaded.eval_steps, loaded.clean_weight) == (0.05, 3, 5, 0.25)
    assert loaded.pixels.get_config() == trainer.pixels.get_config()
    x = rng.normal(size=(2, 3, 3, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
