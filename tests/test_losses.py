import math

import numpy as np
import pytest
import torch

from ampxfer_lib.training.losses import (EPS, LossConfig, dc_loss, error_and_energy, esr, esr_from_sums, esr_numpy,
                                         make_loss, pre_emphasis, pre_emphasized_esr)


def sine(n=4410, f=500.0, rate=44100.0, amp=0.5, phase=0.0):
    t = torch.arange(n, dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * f * t + phase)).reshape(1, n, 1)


def test_esr_of_scaled_target_is_closed_form():
    y = sine()
    # p = g*y: error energy (1-g)^2 * E; ESR = (1-g)^2 E / (E + eps)
    energy = float(torch.mean(y ** 2))
    for g in (0.0, 0.5, 1.0, 1.5):
        expected = (1 - g) ** 2 * energy / (energy + EPS)
        assert float(esr(g * y, y)) == pytest.approx(expected, rel=1e-12)


def test_esr_of_a_sine_is_its_amplitude_ratio():
    # 500 Hz over exactly 50 periods: mean(y^2) = A^2 / 2 exactly in the discrete sum.
    y = sine(amp=0.5)
    assert float(torch.mean(y ** 2)) == pytest.approx(0.125, rel=1e-12)
    # A quadrature sine of the same amplitude: error energy = 2 * A^2/2 = A^2 (orthogonal)
    p = sine(amp=0.5, phase=math.pi / 2)
    assert float(esr(p, y, eps=0.0)) == pytest.approx(2.0, rel=1e-9)


def test_dc_loss_of_an_offset():
    y = sine(amp=0.5)
    # the sine has zero mean over whole periods, so the DC error is the offset itself
    for offset in (0.0, 0.1, -0.3):
        assert float(dc_loss(y + offset, y, eps=0.0)) == pytest.approx(offset ** 2 / 0.125, rel=1e-9, abs=1e-15)


def test_dc_loss_averages_over_batch_and_ignores_zero_mean_error():
    y = torch.cat([sine(), sine(amp=0.25)], dim=0)  # (2, T, 1)
    offsets = torch.tensor([0.2, -0.1], dtype=torch.float64).reshape(2, 1, 1)
    energy = float(torch.mean(y ** 2))
    expected = (0.2 ** 2 + 0.1 ** 2) / 2 / energy
    assert float(dc_loss(y + offsets, y, eps=0.0)) == pytest.approx(expected, rel=1e-9)
    # a zero-mean error (a quadrature sine) has no DC part
    assert float(dc_loss(y + sine(amp=0.1, phase=1.0), y, eps=0.0)) == pytest.approx(0.0, abs=1e-20)


def test_pre_emphasis_is_first_order_highpass():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0]], dtype=torch.float64).reshape(1, 4, 1)
    out = pre_emphasis(x, 0.85)
    assert out.shape == (1, 3, 1)
    assert out.flatten().tolist() == pytest.approx([2 - 0.85, 4 - 1.7, 8 - 3.4])
    # a constant is removed down to (1 - a) of it: H(1) = 1 - a
    c = torch.ones(1, 10, 1, dtype=torch.float64)
    assert torch.allclose(pre_emphasis(c, 0.85), torch.full((1, 9, 1), 0.15, dtype=torch.float64))


def test_pre_emphasized_esr_weights_highs():
    # The same error amplitude costs more at 10 kHz than at 100 Hz after the high-pass.
    y = sine(n=44100, f=1000.0)
    low = pre_emphasized_esr(y + sine(n=44100, f=100.0, amp=0.01), y)
    high = pre_emphasized_esr(y + sine(n=44100, f=10000.0, amp=0.01), y)
    # |H(e^jw)|^2 = 1 + a^2 - 2a cos w
    gain = lambda f: 1 + 0.85 ** 2 - 2 * 0.85 * math.cos(2 * math.pi * f / 44100)
    assert float(high / low) == pytest.approx(gain(10000.0) / gain(100.0), rel=2e-3)


def test_weighted_loss_equals_its_terms():
    torch.manual_seed(0)
    y = torch.randn(3, 500, 1, dtype=torch.float64)
    p = y + 0.1 * torch.randn(3, 500, 1, dtype=torch.float64) + 0.05
    agam = make_loss(LossConfig())
    assert float(agam(p, y)) == pytest.approx(float(0.75 * esr(p, y) + 0.25 * dc_loss(p, y)), rel=1e-12)
    pre = make_loss(LossConfig(1.0, 0.5, 0.85))
    assert float(pre(p, y)) == pytest.approx(float(pre_emphasized_esr(p, y) + 0.5 * dc_loss(p, y)), rel=1e-12)
    only_esr = make_loss(LossConfig(1.0, 0.0, None))
    assert float(only_esr(p, y)) == pytest.approx(float(esr(p, y)), rel=1e-12)


def test_loss_has_gradients():
    y = sine()
    p = (0.9 * y).clone().requires_grad_(True)
    make_loss(LossConfig())(p, y).backward()
    assert p.grad is not None and torch.all(torch.isfinite(p.grad))


def test_esr_numpy_metric():
    y = np.sin(np.linspace(0, 20, 1000))
    assert esr_numpy(y, y) == 0.0
    assert esr_numpy(0.5 * y, y) == pytest.approx(0.25, rel=1e-12)
    assert esr_numpy(np.zeros(5), np.zeros(5)) == 0.0
    assert esr_numpy(np.ones(5), np.zeros(5)) == math.inf


def test_pooled_esr_is_the_ratio_of_summed_errors_and_energies():
    y1, y2 = np.full(4, 2.0), np.full(6, 1.0)  # energies 16 and 6
    e1, e2 = error_and_energy(y1 - 1.0, y1), error_and_energy(y2 + 1.0, y2)
    assert e1 == (4.0, 16.0) and e2 == (6.0, 6.0)  # ESR 0.25 and 1.0 per signal
    assert esr_from_sums(e1[0] + e2[0], e1[1] + e2[1]) == 10.0 / 22.0  # pooled, not their mean 0.625
    assert esr_from_sums(0.0, 0.0) == 0.0 and esr_from_sums(1e-30, 0.0) == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        esr_numpy(np.zeros(5), np.zeros(4))
