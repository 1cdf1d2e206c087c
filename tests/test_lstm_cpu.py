import numpy as np
import pytest
import torch

from ampxfer_lib.model import cpu_lstm as lstm_cpu
from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.weights import ModelConfig

pytestmark = pytest.mark.skipif(not lstm_cpu.available(), reason="numba is not importable")


def _reference(n_in, n_h, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(n_in, n_h), torch.nn.Linear(n_h, 1)


@pytest.mark.parametrize("n_in", [1, 3])
def test_lstm_head_matches_nn_lstm_values_and_gradients(n_in):
    n_t, n_b, n_h = 23, 5, 6
    lstm, lin = _reference(n_in, n_h)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_t, n_b, n_in, generator=gen)
    h0 = 0.3 * torch.randn(1, n_b, n_h, generator=gen)
    c0 = 0.3 * torch.randn(1, n_b, n_h, generator=gen)
    w_y = torch.randn(n_t, n_b, generator=gen)  # an arbitrary loss weighting every output
    params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, lin.weight]

    leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
    out, (h_n, c_n) = lstm(leaves[0], (leaves[1], leaves[2]))
    y_ref = lin(out)[..., 0] - lin.bias
    (torch.sum(y_ref * w_y) + 0.5 * h_n.sum() - 0.25 * c_n.sum()).backward()
    expected = [p.grad.clone() for p in params] + [t.grad.clone() for t in leaves]
    for p in params:
        p.grad = None

    xt = x.permute(0, 2, 1).contiguous().requires_grad_()  # (T, C, B)
    h0t = h0[0].t().contiguous().requires_grad_()  # (H, B)
    c0t = c0[0].t().contiguous().requires_grad_()
    y, (h_nt, c_nt) = lstm_cpu.lstm_head(xt, (h0t, c0t), *params)
    assert y.shape == (n_t, n_b) and h_nt.shape == (n_h, n_b)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_nt, h_n[0].t(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_nt, c_n[0].t(), rtol=1e-5, atol=1e-6)
    (torch.sum(y * w_y) + 0.5 * h_nt.sum() - 0.25 * c_nt.sum()).backward()
    got = [p.grad for p in params] + [xt.grad.permute(0, 2, 1), h0t.grad.t()[None], c0t.grad.t()[None]]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_advance_and_infer_match_nn_lstm():
    lstm, lin = _reference(2, 5, seed=3)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 301, 2, generator=gen)  # (B, T, C)
    params = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x.transpose(0, 1))
        y_ref = (lin(out)[..., 0] - lin.bias).t()
    h, c = lstm_cpu.advance(x.permute(1, 2, 0).contiguous(), None, *params)
    torch.testing.assert_close(h, h_n[0].t(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_n[0].t(), rtol=1e-5, atol=1e-6)
    y = lstm_cpu.infer(x, *params, lin.weight)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=2e-6)


def test_exp_is_accurate_and_saturates():
    from ampxfer_lib.model import f32math as k  # the activations of the training kernels

    xs = np.linspace(-87.0, 88.0, 20001).astype(np.float32)
    got = np.array([k.exp32(v) for v in xs], dtype=np.float64)
    rel = np.abs(got / np.exp(xs.astype(np.float64)) - 1.0)
    assert rel.max() < 5e-7  # about 4 ulp of float32
    assert k.sigmoid32(np.float32(-200.0)) < 1e-37 and k.sigmoid32(np.float32(200.0)) == 1.0
    assert k.tanh32(np.float32(-50.0)) == -1.0 and k.tanh32(np.float32(50.0)) == 1.0
    assert abs(k.tanh32(np.float32(1e-3)) - np.tanh(1e-3)) < 1e-7


def test_one_sigmoid_for_both_kernels_accurate_where_tiny():
    """The training kernels' sigmoid is within 3 ulp relative over [-87, 87] (also where it
    is tiny) and is, bit for bit, the render kernel's fused gate on its sigmoid rows."""
    from ampxfer_lib.model.f32math import sigmoid32_array
    from ampxfer_lib.model.render_kernels import gate32_array

    z = np.concatenate([np.linspace(-87, 87, 400_001, dtype=np.float32),
                        np.geomspace(1e-30, 1, 10_000).astype(np.float32)])
    z = np.concatenate([z, -z])
    out = np.empty_like(z)
    sigmoid32_array(z, out)
    ref = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    assert np.max(np.abs(out - ref) / np.spacing(ref.astype(np.float32))) <= 3.0
    gate = np.empty_like(z)
    gate32_array(z, False, gate)
    assert np.array_equal(gate, out)


def test_model_time_major_path_equals_batch_first_forward(monkeypatch):
    model = new_model(ModelConfig(input_size=2, hidden_size=7), seed=5)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 90, 2, generator=gen)  # (B, T, C)
    with torch.no_grad():
        expected = model(x)[..., 0].t()  # (T, B)
    model.reset_state()
    xt = x.permute(1, 2, 0).contiguous()  # (T, C, B)
    runs = {}
    for kernel in (True, False):  # False: the nn.LSTM path a GPU takes
        monkeypatch.setattr(lstm_cpu, "available", lambda: kernel)
        assert model.uses_cpu_kernel() is kernel
        state = model.advance_tm(xt[:30])
        y1, state = model.forward_tm(xt[30:60], state)
        y2, _ = model.forward_tm(xt[60:], model.detached(state))
        runs[kernel] = torch.cat([y1, y2]).detach()
        torch.testing.assert_close(runs[kernel], expected[30:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.infer(x)[..., 0].t(), expected, rtol=1e-5, atol=2e-6)
    assert model.state is None


def test_float64_falls_back_to_nn_lstm():
    model = AmpLSTM(ModelConfig()).double()
    assert not model.uses_cpu_kernel()
    y, state = model.forward_tm(torch.zeros(5, 1, 2, dtype=torch.float64))
    assert y.shape == (5, 2) and y.dtype == torch.float64 and state[0].shape == (1, 2, 20)
