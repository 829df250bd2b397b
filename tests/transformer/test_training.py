"""Sequence training parts against PyTorch's cross-entropy and the paper's formulas."""

import keras
import numpy as np
import pytest
import torch

from keras_vit.training.sequence import (
    InverseSqrtSchedule,
    LabelSmoothedSequenceLoss,
    TokenAccuracy,
    exact_match,
    teacher_forcing_batch,
    transformer_optimizer,
)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_matches_torch_cross_entropy(smoothing, rng):
    logits = rng.normal(size=(3, 5, 7)).astype("float32") * 3
    labels = rng.integers(1, 7, (3, 5))
    labels[0, 3:] = 0  # padding
    labels[2, 1:] = 0
    ours = float(LabelSmoothedSequenceLoss(smoothing)(labels, logits))
    theirs = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 7),
        torch.from_numpy(labels).reshape(-1),
        ignore_index=0,
        label_smoothing=smoothing,
    ).item()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_loss_sample_weight_and_config(rng):
    logits = rng.normal(size=(2, 4, 5)).astype("float32")
    labels = np.array([[1, 2, 3, 0], [4, 4, 0, 0]])
    loss = LabelSmoothedSequenceLoss(0.1)
    # Weighting a row by 0 leaves the mean over the other row's tokens.
    only_first = float(loss(labels, logits, sample_weight=np.array([1.0, 0.0])))
    np.testing.assert_allclose(only_first, float(loss(labels[:1], logits[:1])), rtol=1e-6)
    clone = LabelSmoothedSequenceLoss.from_config(loss.get_config())
    assert (clone.smoothing, clone.pad_token_id) == (0.1, 0)
    with pytest.raises(ValueError, match=r"Label id 5 is outside the logits' vocabulary \[0, 5\)"):
        loss(np.array([[5, 1, 0, 0]]), logits[:1])
    with pytest.raises(ValueError, match="smoothing=1.0"):
        LabelSmoothedSequenceLoss(1.0)


def test_inverse_sqrt_schedule_formula():
    schedule = InverseSqrtSchedule(512, warmup_steps=4000)
    steps = np.array([0, 999, 3999, 15999])  # optimizer iterations; the paper's step_num is iteration + 1
    rates = np.array([float(schedule(s)) for s in steps])
    step_num = steps + 1.0
    expected = 512**-0.5 * np.minimum(step_num**-0.5, step_num * 4000**-1.5)
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    np.testing.assert_allclose(rates[2], 6.98771e-4, rtol=1e-4)  # the peak, 1 / sqrt(512 * 4000)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    np.testing.assert_allclose(float(restored(10)), float(schedule(10)))
    optimizer = transformer_optimizer(512)
    assert (optimizer.beta_2, optimizer.epsilon) == (0.98, 1e-9)
    with pytest.raises(ValueError, match="warmup_steps=0"):
        InverseSqrtSchedule(512, warmup_steps=0)


def test_token_accuracy_ignores_padding():
    metric = TokenAccuracy()
    labels = np.array([[3, 4, 0], [5, 0, 0]])
    predictions = np.array([[3, 1, 0], [5, 2, 2]])  # 2 of the 3 real tokens right; padding mismatches ignored
    metric.update_state(labels, np.eye(6, dtype="float32")[predictions])
    np.testing.assert_allclose(float(metric.result()), 2 / 3, rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_teacher_forcing_batch_and_exact_match():
    targets = np.array([[5, 6, 7], [8, 0, 0]])
    decoder_tokens, labels = teacher_forcing_batch(targets, start_token_id=1, end_token_id=2)
    np.testing.assert_array_equal(decoder_tokens, [[1, 5, 6, 7], [1, 8, 0, 0]])
    np.testing.assert_array_equal(labels, [[5, 6, 7, 2], [8, 2, 0, 0]])
    predicted = np.array([[5, 6, 7, 2, 0], [8, 3, 0, 0, 0]])
    assert exact_match(predicted, labels) == 0.5
