import pytest

from nezha.train.schedule import lr_at


def test_lr_at_warmup_rises_linearly_to_peak():
    lrs = [lr_at(s, warmup=4, total=10, peak=1.0) for s in range(4)]
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_lr_at_decays_linearly_to_floor_after_warmup():
    assert lr_at(4, warmup=4, total=10, peak=1.0) == pytest.approx(1.0)
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
