"""L2-SP and the weight average: gradients and values in closed form."""

import pytest
import torch

from ampxfer_lib.training.regularize import ema_update_, l2_sp


def test_l2_sp_value_and_gradient():
    p = torch.tensor([1.0, 2.0, -1.0], requires_grad=True)
    q = torch.tensor([[0.5]], requires_grad=True)
    p0 = torch.tensor([0.0, 2.0, 1.0])
    q0 = torch.tensor([[1.5]])
    loss = l2_sp([p, q], [p0, q0], alpha=0.1)
    # 0.05 * ((1)^2 + 0 + (-2)^2 + (-1)^2) = 0.05 * 6
    assert float(loss) == pytest.approx(0.3)
    loss.backward()
    assert p.grad.tolist() == pytest.approx([0.1, 0.0, -0.2])
    assert q.grad.flatten().tolist() == pytest.approx([-0.1])
    with pytest.raises(ValueError):
        l2_sp([], [], 1.0)


def test_l2_sp_is_zero_at_the_start():
    w = torch.randn(4, 3, requires_grad=True)
    loss = l2_sp([w], [w.detach().clone()], alpha=5.0)
    assert float(loss) == 0.0
    loss.backward()
    assert torch.count_nonzero(w.grad) == 0


def test_ema_update_closed_form():
    avg = {"w": torch.tensor([4.0, -2.0], dtype=torch.float64)}
    c = {"w": torch.tensor([1.0, 1.0], dtype=torch.float64), "unused": torch.zeros(1)}
    for _ in range(5):
        ema_update_(avg, c, 0.9)
    # c + 0.9^5 (a0 - c)
    expected = [1.0 + 0.9 ** 5 * 3.0, 1.0 + 0.9 ** 5 * -3.0]
    assert avg["w"].tolist() == pytest.approx(expected, rel=1e-12)
    ema_update_(avg, c, 0.0)  # decay 0: the average is the current weights
    assert avg["w"].tolist() == [1.0, 1.0]
