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


def test_a_rebased_plateau_counts_a_recovery_from_a_spike_as_improvement():
    args = dict(lr=1e-2, factor=0.5, patience=2, min_lr=1e-3, threshold=0.0)
    # best 1.0, a spike to 8, then a steady climb back down that never gets below 1.0
    losses = [1.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.2]
    # against the run's best every validation after the spike is "bad": a decay every second one
    assert adaptive_lr(val_losses=losses, **args) == (1.25e-3, False)
    # rebased: the decay after 8, 6 starts a new best at 4, and 3, 2, 1.5, 1.2 each improve on it
    assert adaptive_lr(val_losses=losses, rebase=True, **args) == (5e-3, False)
    # a flat run still decays; rebased, one validation later each time (the first after a decay is the new best)
    assert adaptive_lr(val_losses=[1.0] * 7, **args) == (1.25e-3, False)
    assert adaptive_lr(val_losses=[1.0] * 7, rebase=True, **args) == (2.5e-3, False)
