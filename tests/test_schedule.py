"""Learning-rate schedules: exact rates replayed from hand-made validation histories."""

import math

import pytest

from ampxfer_lib.training.schedule import adaptive_lr, exponential_lr


def test_exponential_reaches_its_floor_and_stays():
    assert exponential_lr(1e-2, 0.5, 1e-3, 1) == 1e-2
    assert exponential_lr(1e-2, 0.5, 1e-3, 3) == pytest.approx(2.5e-3)
    assert exponential_lr(1e-2, 0.5, 1e-3, 5) == 1e-3  # 6.25e-4 -> floor
    assert exponential_lr(1e-2, 0.5, 1e-3, 500) == 1e-3


def test_adaptive_decays_after_patience_and_converges_only_at_the_floor():
    args = dict(lr=1e-2, factor=0.5, patience=2, min_lr=2.5e-3)
    assert adaptive_lr(val_losses=[], **args) == (1e-2, False)
    # steady improvement: no decay however long
    assert adaptive_lr(val_losses=[1.0 / k for k in range(1, 50)], **args) == (1e-2, False)
    # 1.0 best, then two without improvement -> 5e-3; two more -> 2.5e-3 (the floor)
    assert adaptive_lr(val_losses=[1.0, 1.0, 1.0], **args) == (5e-3, False)
    assert adaptive_lr(val_losses=[1.0, 1.0, 1.0, 1.0, 1.0], **args) == (2.5e-3, False)
    # at the floor, two more without improvement: converged
    assert adaptive_lr(val_losses=[1.0] * 7, **args) == (2.5e-3, True)
    # an improvement resets the count but not the rate
    assert adaptive_lr(val_losses=[1.0, 1.0, 1.0, 0.5, 0.6], **args) == (5e-3, False)


def test_adaptive_improvement_must_beat_the_threshold():
    args = dict(lr=1.0, factor=0.1, patience=1, min_lr=1e-3)
    # 0.9995 is not 0.1% below 1.0: a plateau; 0.998 is
    assert adaptive_lr(val_losses=[1.0, 0.9995], **args) == (0.1, False)
    assert adaptive_lr(val_losses=[1.0, 0.998], **args) == (1.0, False)
    assert adaptive_lr(val_losses=[1.0, math.nan], **args) == (0.1, False)  # NaN never improves
