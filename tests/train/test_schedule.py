"""The learning-rate schedule against the original NEZHA ``create_optimizer`` (written out here with its formulas)."""

import pytest

from nezha.train.schedule import lr_at


def original_lr(global_step: int, *, init_lr: float, num_train_steps: int, num_warmup_steps: int) -> float:
    """NEZHA-TensorFlow/optimization.py create_optimizer, step by step (tf.train.polynomial_decay, power 1)."""
    crossover = init_lr * (1.0 - num_warmup_steps / num_train_steps)
    adjusted_init_lr = init_lr * (init_lr / crossover)
    decay_step = min(global_step, num_train_steps)  # cycle=False
    lr = adjusted_init_lr * (1 - decay_step / num_train_steps) ** 1.0
    if num_warmup_steps and global_step < num_warmup_steps:
        lr = init_lr * global_step / num_warmup_steps
    return lr


@pytest.mark.parametrize("warmup,total", [(10, 100), (1, 5), (0, 50), (30, 40)])
def test_lr_at_equals_the_original_schedule_at_every_step(warmup, total):
    for step in range(total + 3):
        want = original_lr(step, init_lr=2e-4, num_train_steps=total, num_warmup_steps=warmup)
        assert lr_at(step, warmup=warmup, total=total, peak=2e-4) == pytest.approx(want, rel=1e-12, abs=1e-18), step


def test_lr_at_warmup_starts_at_zero_and_is_continuous_at_the_crossover():
    assert lr_at(0, warmup=4, total=10, peak=1.0) == 0.0
    assert [lr_at(s, warmup=4, total=10, peak=1.0) for s in range(6)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 5 / 6])


def test_lr_at_decays_linearly_to_floor_after_warmup():
    assert lr_at(7, warmup=4, total=10, peak=1.0) == pytest.approx(0.5)
    assert lr_at(10, warmup=4, total=10, peak=1.0, floor=0.1) == pytest.approx(0.1)
    assert lr_at(50, warmup=4, total=10, peak=1.0) == 0.0


def test_lr_at_polynomial_power_and_floor():
    # halfway through decay with power 2: floor + (peak - floor) * 0.25
    assert lr_at(5, warmup=0, total=10, peak=2.0, floor=1.0, power=2.0) == pytest.approx(1.25)


def test_lr_at_no_warmup_starts_at_peak():
    assert lr_at(0, warmup=0, total=100, peak=3e-4) == pytest.approx(3e-4)


def test_lr_at_rejects_negative_warmup():
    with pytest.raises(ValueError, match="warmup"):
        lr_at(0, warmup=-1, total=10, peak=1.0)
