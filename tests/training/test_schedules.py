import math

import keras
import numpy as np
import pytest
from timm.scheduler import CosineLRScheduler

from keras_vit.training import WarmupCosine, scale_lr


def _formula(step, peak, total, warmup, start, end):
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * progress))


def test_matches_the_formula_at_every_step():
    schedule = WarmupCosine(5e-4, total_steps=100, warmup_steps=10, warmup_start_lr=1e-6, end_lr=1e-5)
    steps = np.arange(0, 110)
    got = np.array([float(schedule(s)) for s in steps])
    expected = np.array([_formula(s, 5e-4, 100, 10, 1e-6, 1e-5) for s in steps])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert got[10] == pytest.approx(5e-4) and got[100] == pytest.approx(1e-5) and got[109] == pytest.approx(1e-5)


def test_matches_timm_cosine_scheduler_with_warmup_prefix():
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    timm_schedule = CosineLRScheduler(
        optimizer, t_initial=40, lr_min=1e-3, warmup_t=8, warmup_lr_init=1e-4, warmup_prefix=True, t_in_epochs=True
    )
    ours = WarmupCosine(0.1, total_steps=48, warmup_steps=8, warmup_start_lr=1e-4, end_lr=1e-3)
    for step in range(0, 48):
        timm_schedule.step(step)
        assert float(ours(step)) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-5), step


def test_no_warmup_starts_at_peak_and_serializes():
    schedule = WarmupCosine(0.01, total_steps=20)
    assert float(schedule(0)) == pytest.approx(0.01)
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, WarmupCosine) and restored.get_config() == schedule.get_config()
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.05)
    rebuilt = keras.optimizers.AdamW.from_config(optimizer.get_config())
    assert float(rebuilt.learning_rate) == pytest.approx(0.01)


def test_linear_scaling_rule():
    assert scale_lr(5e-4, 1024, 512) == pytest.approx(1e-3)  # DeiT: 5e-4 x batch / 512
    assert scale_lr(5e-4, 1024, None) == 5e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(peak_lr=0, total_steps=10), r"peak_lr=0"),
        (dict(peak_lr=0.1, total_steps=0), r"total_steps=0"),
        (dict(peak_lr=0.1, total_steps=10, warmup_steps=11), r"warmup_steps=11"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupCosine(**kwargs)
