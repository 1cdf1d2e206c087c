"""Every render path reproduces sequential processing (``render_sequential``, one nn.LSTM pass).

Exactness is checked against the PyTorch reference on real DI guitar when the shared data is
present (synthetic plucked notes otherwise), against closed forms where the network reduces
to one (zero weights; saturated gates, where the cell is a running sum), and on the edges of
chunk planning. The compiled paths are skipped when numba cannot be imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ampxfer_lib.model import render as R
from ampxfer_lib.errors import AudioError, ConfigError
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights

torch.set_num_threads(1)
RATE = 44100
REALDATA = Path(os.environ.get("AMPXFER_REALDATA")
                or Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
FAST = ("numba", "chunked")
needs_numba = pytest.mark.skipif(not R.numba_available(), reason="numba is not importable here")


def esr(y, ref) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.sum((np.asarray(y, np.float64) - ref) ** 2) / np.sum(ref ** 2))


def plucked(seconds: float, seed: int = 0) -> np.ndarray:
    """Decaying harmonic notes at random onsets and pitches, peak 0.5: (T,) float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n)
    tt = np.arange(n) / RATE
    for onset in np.sort(rng.uniform(0, seconds * 0.8, size=max(1, int(4 * seconds)))):
        f0 = rng.uniform(82, 660)
        env = np.where(tt >= onset, np.exp(-(tt - onset) * rng.uniform(2, 6)), 0.0)
        x += env * sum(np.sin(2 * np.pi * f0 * h * (tt - onset)) / h for h in range(1, 6))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


_GUITAR = {}


def guitar(seconds: float = 1.5) -> np.ndarray:
    """Real DI (a busy stretch of one clip, 48k -> 44.1k) when present, else synthetic notes."""
    if seconds not in _GUITAR:
        clip = REALDATA / "di" / "Pop_Punk.flac"
        if clip.is_file():
            import soundfile as sf
            import soxr

            a, sr = sf.read(str(clip), dtype="float32", always_2d=True)
            a = soxr.resample(a.mean(axis=1), sr, RATE).astype(np.float32)
            _GUITAR[seconds] = np.ascontiguousarray(a[2 * RATE: 2 * RATE + int(seconds * RATE)])
        else:
            _GUITAR[seconds] = plucked(seconds)
    return _GUITAR[seconds]


def capture_like(hidden: int, inputs: int = 1, skip: bool = True, seed: int = 0) -> ModelWeights:
    """Seeded weights with the spread of trained captures (std 0.2 recurrent, open forget gates)."""
    rng = np.random.default_rng(seed)
    H, C = hidden, inputs
    b = rng.standard_normal(4 * H) * 0.7
    b[H:2 * H] += 0.9
    params = {
        "rec.weight_ih_l0": rng.standard_normal((4 * H, C)) * 0.4,
        "rec.weight_hh_l0": rng.standard_normal((4 * H, H)) * 0.2 * np.sqrt(20 / H),
        "rec.bias_ih_l0": b,
        "rec.bias_hh_l0": rng.standard_normal(4 * H) * 0.1,
        "lin.weight": rng.standard_normal((1, H)) * 0.45,
        "lin.bias": np.array([0.01]),
    }
    return ModelWeights(ModelConfig(input_size=C, hidden_size=H, skip=skip), params)


def zero_model(hidden: int = 5, skip: bool = True, head_bias: float = 0.125) -> ModelWeights:
    cfg = ModelConfig(hidden_size=hidden, skip=skip)
    params = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    params["lin.bias"][0] = head_bias
    return ModelWeights(cfg, params)


def integrator_model(wg: float = 0.5, big: float = 40.0) -> ModelWeights:
    """Unit 0 has i = f = o = 1 (biases saturate the sigmoids) and g = tanh(wg * x), no
    recurrence: c[t] = sum_{s<=t} tanh(wg x[s]), h = tanh(c), y = h + x. It never forgets,
    so no warm-up can recover its state. Unit 1 is all zeros (h = 0)."""
    cfg = ModelConfig(hidden_size=2)
    p = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    H = 2
    for gate in (0, 1, 3):  # i, f, o
        p["rec.bias_ih_l0"][gate * H] = big
    p["rec.weight_ih_l0"][2 * H, 0] = wg
    p["lin.weight"][0, 0] = 1.0
    return ModelWeights(cfg, p)


# --------------------------------------------------------------------------- tanh
@needs_numba
def test_tanh32_is_within_three_ulp_of_float64_tanh():
    from ampxfer_lib.model.f32math import tanh32_array

    x = np.concatenate([np.linspace(-12, 12, 1_000_001, dtype=np.float32),
                        np.geomspace(1e-30, 1, 100_000).astype(np.float32)])
    x = np.concatenate([x, -x])
    out = np.empty_like(x)
    tanh32_array(x, out)
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - ref) / ulp) <= 3.0
    assert np.array_equal(out[x.size // 2:], -out[: x.size // 2])  # odd exactly
    zero = np.zeros(1, np.float32)
    tanh32_array(zero, out[:1])
    assert out[0] == 0.0
    big = np.array([9.5, 50.0, 3e38], np.float32)
    tanh32_array(big, out[:3])
    assert np.all(np.abs(out[:3] - 1.0) <= 6e-8)


@needs_numba
def test_gate_activations_are_within_three_ulp_relative():
    """Sigmoid stays accurate relative to its size where it is tiny (the reason it is not
    computed as 0.5 + 0.5 tanh(z / 2)); the g rows get tanh(z / 2) of the doubled input."""
    from ampxfer_lib.model.render_kernels import gate32_array

    z = np.concatenate([np.linspace(-30, 30, 600_001, dtype=np.float32),
                        np.geomspace(1e-30, 1, 50_000).astype(np.float32)])
    z = np.concatenate([z, -z])
    out = np.empty_like(z)
    gate32_array(z, False, out)
    ref = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    assert np.max(np.abs(out - ref) / np.spacing(ref.astype(np.float32))) <= 3.0
    gate32_array(z, True, out)
    ref = np.tanh(z.astype(np.float64) / 2)
    assert np.max(np.abs(out - ref) / np.spacing(np.abs(ref).astype(np.float32))) <= 3.0
    far = np.array([-40.0, -100.0, 40.0, 1e30], np.float32)  # clamped at |z| = 87
    gate32_array(far, False, out[:4])
    np.testing.assert_allclose(out[:4], 1.0 / (1.0 + np.exp(-far.astype(np.float64))), rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("method", ["torch", "numba", "chunked"])
def test_zero_weights_with_skip_output_input_plus_bias_exactly(method):
    if method != "torch" and not R.numba_available():
        pytest.skip("numba is not importable here")
    x = guitar(0.5)
    y = R.render(zero_model(), x, method=method, warmup=64, chunks=4 if method == "chunked" else None)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x + np.float32(0.125))


@pytest.mark.parametrize("method", ["torch", "numba", "chunked"])
def test_zero_weights_without_skip_output_the_bias(method):
    if method != "torch" and not R.numba_available():
        pytest.skip("numba is not importable here")
    y = R.render(zero_model(hidden=3, skip=False, head_bias=-0.25), guitar(0.2), method=method)
    np.testing.assert_array_equal(y, np.full(y.shape, -0.25, np.float32))


@pytest.mark.parametrize("method", ["torch", "numba", "chunked"])
def test_saturated_gates_make_a_running_sum(method):
    if method != "torch" and not R.numba_available():
        pytest.skip("numba is not importable here")
    x = guitar(1.0)
    c = np.cumsum(np.tanh(0.5 * x.astype(np.float64)))
    expected = np.tanh(c) + x
    stats = {}
    y = R.render(integrator_model(), x, method=method, warmup=256,
                 chunks=8 if method == "chunked" else None, stats=stats)
    # float32 accumulation over 44100 steps drifts by ~sqrt(T) * eps * |c| (~5e-5 here);
    # any path that forgot the running sum would be off by O(1)
    assert np.max(np.abs(y - expected)) < 2e-4
    assert esr(y, expected) < 1e-9
    if method == "chunked":
        # the warm-up cannot recover a running sum: every later chunk is re-rendered in full
        assert stats["chunks"] == 8 and stats["rerendered"] == list(range(1, 8))
        assert stats["rerendered_samples"] == x.size - R.plan_chunks(x.size, 8, 256)[0].end


@needs_numba
def test_slow_memory_is_caught_up_not_fully_rerendered():
    """A cell that forgets with time constant 1000 samples: a 64-sample warm-up is far too
    short, so each later chunk is re-rendered from the exact state, but only until the two
    runs meet (about ln(1/STATE_TOL) * 1000 samples), not to its end."""
    w = integrator_model()
    w.params["rec.bias_ih_l0"][2] = np.log(0.999 / 0.001)  # forget gate of unit 0 = 0.999
    x = guitar(3.0)
    stats = {}
    y = R.render(w, x, method="chunked", threads=2, warmup=64, chunks=4, stats=stats)
    assert stats["rerendered"] == [1, 2, 3]
    kept = x.size - R.plan_chunks(x.size, 4, 64)[0].end
    assert 3 * 1024 <= stats["rerendered_samples"] < kept / 2
    ref = R.render_sequential(w, x)
    assert esr(y, ref) <= 1e-9 and np.max(np.abs(y - ref)) < 1e-4


# --------------------------------------------------------------------------- exactness
@needs_numba
@pytest.mark.parametrize("hidden", [20, 7])
@pytest.mark.parametrize("inputs", [1, 2, 3])
@pytest.mark.parametrize("skip", [True, False])
def test_fast_paths_match_sequential(hidden, inputs, skip):
    w = capture_like(hidden, inputs, skip, seed=hidden * 10 + inputs)
    knobs = [0.3, 0.8][: inputs - 1]
    x = guitar(1.5)
    ref = R.render_sequential(w, x, knobs)
    exact = R.render(w, x, knobs, method="numba")
    assert esr(exact, ref) <= 1e-9
    assert np.max(np.abs(exact - ref)) < 1e-4
    stats = {}
    chunked = R.render(w, x, knobs, method="chunked", threads=2, chunks=8, stats=stats)
    assert stats["chunks"] == 8
    assert esr(chunked, ref) <= 1e-9
    assert np.max(np.abs(chunked - ref)) < 1e-4


@needs_numba
def test_chunked_uses_the_warmup_and_does_not_depend_on_threads():
    w = capture_like(20, seed=3)
    x = guitar(1.5)
    runs = []
    for threads in (1, 2):
        stats = {}
        runs.append(R.render(w, x, method="chunked", threads=threads, chunks=8, stats=stats))
        assert stats["rerendered"] == []  # converged warm-ups are accepted, not redone
    np.testing.assert_array_equal(runs[0], runs[1])
    # a chunk's kept output equals the exact pass to float32 rounding, even right at its start
    exact = R.render(w, x, method="numba")
    assert np.max(np.abs(runs[0] - exact)) < 1e-5


@needs_numba
def test_auto_picks_the_compiled_chunked_path_and_plans_by_length():
    stats = {}
    w = capture_like(20, seed=4)
    R.render(w, guitar(1.5), stats=stats, threads=2, warmup=4096)
    assert stats["method"] == "chunked" and stats["chunks"] == 8  # 4 per core in lockstep
    assert stats["rerendered"] == []
    R.render(w, guitar(1.5), stats=stats, threads=2, warmup=16384)
    assert stats["chunks"] == 2  # long warm-ups: one chunk per core
    R.render(w, guitar(0.2), stats=stats, threads=2, warmup=4096)  # too short for warm-ups
    assert stats["chunks"] == 1 and stats["rerendered"] == []


def test_without_numba_auto_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(R, "_kernels", lambda: None)
    w = capture_like(7, seed=9)
    x = guitar(0.2)
    stats = {}
    np.testing.assert_array_equal(R.render(w, x, stats=stats), R.render_sequential(w, x))
    assert stats["method"] == "torch"
    with pytest.raises(ConfigError, match="needs numba"):
        R.render(w, x, method="chunked")


@needs_numba
def test_sweep_matches_single_renders():
    w = capture_like(20, inputs=2, seed=5)
    x = guitar(0.5)
    settings = [(0.0,), (0.25,), (0.5,), (0.75,), (1.0,)]  # four in lockstep + one alone
    for threads in (1, 2):
        ys = R.render_sweep(w, x, settings, threads=threads)
        assert ys.shape == (5, x.size) and ys.dtype == np.float32
        for row, knobs in zip(ys, settings):
            assert esr(row, R.render_sequential(w, x, knobs)) <= 1e-9
            assert np.max(np.abs(row - R.render(w, x, knobs, method="numba"))) < 1e-6
    ys = R.render_sweep(w, x, settings[:2], method="torch")
    np.testing.assert_array_equal(ys[1], R.render_sequential(w, x, settings[1]))
    assert R.render_sweep(w, x, []).shape == (0, x.size)


@pytest.mark.realdata
@needs_numba
def test_real_captures_render_within_esr_1e9():
    models = sorted((REALDATA / "models" / "neuralpi").glob("*.json"))
    if not models or not (REALDATA / "di").is_dir():
        pytest.skip(f"{REALDATA} is absent (real data is optional)")
    x = guitar(3.0)
    for path in models:
        w = load_model(path)
        knobs = [0.5] * (w.config.input_size - 1)
        ref = R.render_sequential(w, x, knobs)
        for method in FAST:
            y = R.render(w, x, knobs, method=method, threads=2, chunks=8 if method == "chunked" else None)
            assert esr(y, ref) <= 1e-9, (path.name, method)


# --------------------------------------------------------------------------- edges
@pytest.mark.parametrize("length", [1, 2, 9, 10, 11, 100, 4097])
@pytest.mark.parametrize("n_chunks", [2, 3, 4, 8])
@pytest.mark.parametrize("warmup", [1, 4])
def test_plan_chunks_covers_the_file_with_equal_steps(length, n_chunks, warmup):
    n = -(-(length + (n_chunks - 1) * warmup) // n_chunks)
    if n <= warmup:
        with pytest.raises(ValueError):
            R.plan_chunks(length, n_chunks, warmup)
        return
    chunks = R.plan_chunks(length, n_chunks, warmup)
    assert chunks[0] == R.Chunk(0, 0, n) or (len(chunks) == 1 and chunks[0].end == length)
    assert chunks[-1].end == length
    assert len(chunks) <= n_chunks
    for prev, ch in zip(chunks, chunks[1:]):
        assert ch.first_out == prev.end  # outputs tile [0, length) without gaps or overlap
        assert ch.begin >= 0 and ch.first_out - ch.begin >= warmup
        assert ch.end - ch.begin == chunks[0].end - chunks[0].begin  # lockstep-able


@needs_numba
@pytest.mark.parametrize("length", [0, 1, 2, 7, 15, 16, 17])
def test_tiny_inputs(length):
    """Empty, one sample, and lengths around a chunk: with warm-up 3, four chunks of 7 steps
    cover 16 samples exactly, 15 fits in chunks of 6, 17 needs 7 with spare warm-up."""
    w = capture_like(7, seed=6)
    x = guitar(0.1)[:length]
    ref = R.render_sequential(w, x)
    assert ref.shape == (length,)
    for method in ("torch",) + FAST:
        chunks = None
        if method == "chunked" and length >= 4:
            chunks = 4 if -(-(length + 9) // 4) > 3 else None
        y = R.render(w, x, method=method, warmup=3, chunks=chunks)
        assert y.shape == (length,) and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("method", ["torch", "numba", "chunked"])
def test_float64_and_strided_audio(method):
    if method != "torch" and not R.numba_available():
        pytest.skip("numba is not importable here")
    w = capture_like(20, seed=7)
    base = guitar(1.0)
    wide = np.repeat(base.astype(np.float64), 2)  # float64, and x[::2] is a strided view
    view = wide[::2]
    assert not view.flags["C_CONTIGUOUS"]
    expected = R.render(w, base, method=method, threads=2)
    np.testing.assert_array_equal(R.render(w, view, method=method, threads=2), expected)
    np.testing.assert_array_equal(R.render(w, base.astype(np.float64), method=method, threads=2), expected)
    assert esr(expected, R.render_sequential(w, base)) <= 1e-9


def test_pack_model_pads_with_silent_units():
    w = capture_like(7, inputs=3, seed=8)
    p = R.pack_model(w, [(0.2, 0.4), (1.0, 0.0)])
    assert (p.Hp, p.Hq) == (8, 16) and p.bias.shape == (2, 32) and p.w_hhT.shape == (8, 32)
    for block in range(4):
        assert np.all(p.bias[:, block * 8 + 7] == 0) and np.all(p.w_in[block * 8 + 7] == 0)
    assert np.all(p.w_hhT[7] == 0) and p.head_w[7] == 0
    # knobs fold into the bias: (b_ih + b_hh + W_ih[:, 1:] @ knobs); the g rows are doubled
    H = 7
    b = w.bias.astype(np.float64) + w.weight_ih[:, 1:].astype(np.float64) @ [0.2, 0.4]
    np.testing.assert_allclose(p.bias[0, :H], b[:H], rtol=1e-6)                    # i
    np.testing.assert_allclose(p.bias[0, 16:16 + H], 2 * b[2 * H:3 * H], rtol=1e-6)  # g
    assert p.g_rows.tolist() == [False] * 16 + [True] * 8 + [False] * 8


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", ["auto", "torch", "numba", "chunked"])
def test_wrong_knob_count_is_a_clear_error(method):
    if method in FAST and not R.numba_available():
        pytest.skip("numba is not importable here")
    x = guitar(0.1)
    with pytest.raises(ConfigError, match="takes 1 knob value"):
        R.render(capture_like(7, inputs=2), x, method=method)
    with pytest.raises(ConfigError, match="takes 0 knob value.*drop --knob"):
        R.render(capture_like(7), x, [0.5], method=method)
    with pytest.raises(ConfigError, match="takes 2 knob value"):
        R.render_sweep(capture_like(7, inputs=3), x, [(0.5,)], method=method)


def test_bad_arguments_are_clear_errors():
    w = capture_like(7)
    with pytest.raises(ConfigError, match="mono audio"):
        R.render(w, np.zeros((10, 2), np.float32))
    bad = guitar(0.1).copy()
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        R.render(w, bad)
    with pytest.raises(ConfigError, match="unknown render method"):
        R.render(w, guitar(0.1), method="fast")
    if R.numba_available():
        with pytest.raises(ConfigError, match="threads"):
            R.render(w, guitar(0.1), method="chunked", threads=0)
        with pytest.raises(ConfigError, match="too few"):
            R.render(w, guitar(0.1)[:100], method="chunked", chunks=8, warmup=200)
