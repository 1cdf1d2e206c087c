"""Play audio through a model: exact, from the zero state, at the model's rate.

``render(weights, audio, knobs)`` is the one entry point. Every path it may take reproduces
sequential processing (one LSTM pass over the whole file from the zero state,
:func:`render_sequential`) to float32 rounding; they differ only in speed:

``"torch"``
    :func:`render_sequential`: the reference, ``nn.LSTM``; used when numba is missing.
    render() feeds it 2**20 samples per call (same result, bit for bit) because one call
    over a whole file keeps ~550 bytes per sample (4 GB for 3 minutes).
``"numba"``
    One pass of a compiled per-sample kernel (:mod:`ampxfer_lib.model.render_kernels`), one core.
``"chunked"``
    The compiled kernel on overlapping chunks, four chunks per core in lockstep, all cores.
    Chunk 0 starts from the zero state like the file does; every later chunk starts from
    the zero state ``warmup`` samples before its first output sample, which the LSTM forgets
    by then (see ``DEFAULT_WARMUP``). This is then *checked*, not assumed: each chunk's
    state where its output begins is compared with the previous chunk's final state, and a
    chunk whose state did not converge is rendered again from the exact state until the two
    runs meet (or to its end). A model that never forgets costs time, never accuracy.
``"auto"``
    ``"chunked"`` when numba imports (it plans a single exact pass itself when the clip is
    too short for chunks to pay off), else ``"torch"``.

Memory: the compiled paths hold the input and output as float32 (8 bytes per sample) plus
a few hundred bytes of state per chunk, whatever the file length.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from ampxfer_lib.errors import AudioError, ConfigError
from ampxfer_lib.model.network import AmpLSTM
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.validate import number

METHODS = ("auto", "numba", "chunked", "torch")

#: Samples of warm-up before each chunk after the first (186 ms at 44.1 kHz). Measured with
#: bench/warmup_convergence.py on the 34 shared captures (knob models at 0, 0.5 and 1) and
#: the real DI, boundaries every 4 s: in 37 of the 40 settings 99 % of boundaries need at
#: most 8100 samples for the state to agree with the sequential one to STATE_TOL (typically
#: 300-5000). The exceptions: HT40 at full gain (29000 at one boundary of 43), ProCoRat
#: (15000) and a compressor, XoticCompSP (median 12000, often more than 32768). Rendering 60
#: s in 32 chunks with this warm-up re-rendered 30 of 1302 chunk starts (28 of them the
#: compressor's) and the worst ESR against the reference, 3.0e-10, is HT40's one-pass ESR.
#: A warm-up that has not converged is caught by the state check and costs re-rendering
#: time, never accuracy.
DEFAULT_WARMUP = 8192

#: A chunk's warmed-up state agrees with the exact one when every h and c entry differs by
#: at most STATE_TOL * max(1, |entry|). Two exact float32 runs never agree bit for bit: on
#: high-gain captures their states stay up to 1e-5..3e-4 apart (rounding differences are
#: amplified where the model is sensitive), so a much tighter tolerance re-renders
#: converged chunks for nothing. With 1e-4 and warm-ups of 4096+ samples the chunked ESR
#: against the reference matched the one-pass kernel's on every capture except the
#: compressor (1.8e-10 instead of 7.6e-11 with 32 chunks); 1e-3 let it reach 1.2e-8
#: (bench/warmup_convergence.py --sweep).
STATE_TOL = 1e-4

#: Cost of one sample of one stream in the four-stream kernel relative to the one-stream
#: kernel (measured on a 2-core AMD EPYC (Zen 4), hidden 20: 0.55-0.6). Used only to plan.
FOUR_STREAM_COST = 0.6

#: A chunk whose warm-up has not converged is re-rendered from the exact state only until
#: the two runs meet: the warmed-up run keeps its state every CHECK_STRIDE samples (at most
#: MAX_CHECKPOINTS of them) to compare against.
CHECK_STRIDE = 1024
MAX_CHECKPOINTS = 64

#: Samples per nn.LSTM call when render() falls back to PyTorch (bounds its memory to ~0.6 GB).
TORCH_SEGMENT = 1 << 20

_kernels_module = None
_kernels_error: Optional[str] = None


def _kernels():
    """The numba kernel module, or None when numba cannot be imported (imported once)."""
    global _kernels_module, _kernels_error
    if _kernels_module is None and _kernels_error is None:
        try:
            from ampxfer_lib.model import render_kernels as lstm_kernels
            _kernels_module = lstm_kernels
        except Exception as exc:  # ImportError, or numba/llvmlite broken on this machine
            _kernels_error = f"{type(exc).__name__}: {exc}"
    return _kernels_module


def numba_available() -> bool:
    """True when the compiled paths ("numba", "chunked") can run here."""
    return _kernels() is not None


def _knob_values(knobs: Sequence[float], input_size: int) -> List[float]:
    knobs = [float(k) for k in (() if knobs is None else knobs)]
    if len(knobs) != input_size - 1:
        raise ConfigError(
            f"the model takes {input_size - 1} knob value(s) but {len(knobs)} were given"
            + ("; pass --knob V for each knob (0..1)" if input_size > 1 else "; drop --knob")
        )
    return knobs


def _mono_float32(audio) -> np.ndarray:
    """(T,) of any real dtype/stride -> C-contiguous float32 copy-if-needed, checked finite."""
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ConfigError(f"expected mono audio of shape (T,), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise AudioError("the audio to render contains NaN or infinite samples; "
                         "check the recording (or the processing before render)")
    return x


def model_input(audio: np.ndarray, knobs: Sequence[float], input_size: int) -> np.ndarray:
    """Stack the guitar signal and constant knob channels: (T,) -> (T, input_size) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ConfigError(f"expected mono audio of shape (T,), got {audio.shape}")
    knobs = _knob_values(knobs, input_size)
    x = np.empty((audio.shape[0], input_size), dtype=np.float32)
    x[:, 0] = audio
    for i, k in enumerate(knobs):
        x[:, i + 1] = k
    return x


def render_sequential(weights: ModelWeights, audio: np.ndarray, knobs: Sequence[float] = (),
                      threads: Optional[int] = None, segment: Optional[int] = None) -> np.ndarray:
    """Reference path: one ``nn.LSTM`` call over the whole file. (T,) -> (T,) float32.

    PyTorch holds every sample's gates and outputs (about 550 bytes per sample for hidden
    20, 4 GB for 3 minutes); ``segment`` feeds the file in pieces of that many samples
    instead, carrying the state across (the same recurrence, memory bounded).
    """
    x = model_input(audio, knobs, weights.config.input_size)
    if x.shape[0] == 0:  # nn.LSTM refuses empty sequences
        return np.zeros(0, dtype=np.float32)
    model = AmpLSTM.from_weights(weights).eval()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    step = int(segment) if segment else x.shape[0]
    y = np.empty(x.shape[0], dtype=np.float32)
    try:
        with torch.inference_mode():
            xt = torch.from_numpy(x)[None]
            for i in range(0, x.shape[0], step):
                y[i:i + step] = model(xt[:, i:i + step])[0, :, 0].numpy()
    finally:
        if threads:
            torch.set_num_threads(old_threads)
    return y


# --------------------------------------------------------------------------- packed model
@dataclass(frozen=True)
class PackedModel:
    """A model laid out for the compiled kernels (see :mod:`ampxfer_lib.model.render_kernels`).

    ``bias`` (K, G) has one row per knob setting, the knob channels folded in (they are
    constant, so ``W_ih[:, 1:] @ knobs`` is just more bias). ``hidden_size`` is the real H;
    ``Hp`` (even) and ``Hq`` (multiple of 16) the padded sizes the kernels run on.
    """

    hidden_size: int
    Hp: int
    Hq: int
    w_in: np.ndarray    # (G,)
    bias: np.ndarray    # (K, G)
    w_hhT: np.ndarray   # (Hp, G)
    g_rows: np.ndarray  # (G,) bool, True on the g (cell input) gate rows
    head_w: np.ndarray  # (Hp,)
    head_b: np.float32
    skipf: np.float32


def pack_model(weights: ModelWeights, knob_settings: Sequence[Sequence[float]] = ((),)) -> PackedModel:
    """Lay out ``weights`` for the kernels, one bias row per entry of ``knob_settings``."""
    cfg = weights.config
    H = cfg.hidden_size
    Hp = H + (H % 2)
    Hq = -(-Hp // 16) * 16
    G = 4 * Hp
    # g rows doubled (exact): the kernels evaluate tanh(g) as tanh(2g / 2), sharing exp(-|z|)
    # with the sigmoid gates i, f, o
    scale = np.array([1.0, 1.0, 2.0, 1.0], dtype=np.float64)

    def gates(a: np.ndarray) -> np.ndarray:
        """(4H, ...) -> (4Hp, ...) float64, blocks padded with zeros and scaled."""
        a = np.asarray(a, dtype=np.float64).reshape((4, H) + a.shape[1:])
        a = a * scale.reshape((4, 1) + (1,) * (a.ndim - 2))
        out = np.zeros((4, Hp) + a.shape[2:], dtype=np.float64)
        out[:, :H] = a
        return out.reshape((G,) + a.shape[2:])

    w_ih = weights.weight_ih.astype(np.float64)
    b = weights.params["rec.bias_ih_l0"].astype(np.float64) + weights.params["rec.bias_hh_l0"]
    rows = []
    for knobs in knob_settings:
        k = np.asarray(_knob_values(knobs, cfg.input_size), dtype=np.float64)
        rows.append(gates(b + (w_ih[:, 1:] @ k if k.size else 0.0)))
    w_hhT = np.zeros((Hp, G), dtype=np.float64)
    w_hhT[:H] = gates(weights.weight_hh).T[:H]
    head_w = np.zeros(Hp, dtype=np.float64)
    head_w[:H] = weights.head_weight
    return PackedModel(
        hidden_size=H, Hp=Hp, Hq=Hq,
        w_in=np.ascontiguousarray(gates(w_ih[:, 0]), dtype=np.float32),
        bias=np.ascontiguousarray(np.stack(rows), dtype=np.float32),
        w_hhT=np.ascontiguousarray(w_hhT, dtype=np.float32),
        g_rows=np.repeat(np.array([False, False, True, False]), Hp),
        head_w=np.ascontiguousarray(head_w, dtype=np.float32),
        head_b=np.float32(weights.head_bias),
        skipf=np.float32(1.0 if cfg.skip else 0.0),
    )


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Chunk:
    """Samples ``begin .. end-1`` are processed; outputs ``first_out .. end-1`` are kept."""

    begin: int
    first_out: int
    end: int


def plan_chunks(length: int, n_chunks: int, warmup: int) -> List[Chunk]:
    """Split ``length`` samples into ``n_chunks`` chunks of equal step count.

    Chunk 0 starts at 0 (zero state, no warm-up); chunk k > 0 keeps
    ``[chunks[k-1].end, end)`` and processes at least ``warmup`` samples before it. All
    chunks process the same number of samples ``n`` so four can run in lockstep; the last
    one takes any rounding slack as extra warm-up. Needs ``n > warmup``.
    """
    if n_chunks <= 1 or length == 0:
        return [Chunk(0, 0, length)]
    n = -(-(length + (n_chunks - 1) * warmup) // n_chunks)
    if n <= warmup or n > length:
        raise ValueError(f"{length} samples are too few for {n_chunks} chunks with warm-up {warmup}")
    chunks = [Chunk(0, 0, n)]
    while chunks[-1].end < length:
        end = min(length, chunks[-1].end + (n - warmup))
        chunks.append(Chunk(end - n, chunks[-1].end, end))
    return chunks


def _n_threads(threads: Optional[int]) -> int:
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        return int(threads)
    # As many cores as torch may use in this process: a training worker pinned to one
    # thread (two runs in parallel on two cores) then renders on one core too.
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = max(1, os.cpu_count() or 1)
    return max(1, min(cores, torch.get_num_threads()))


def choose_chunks(length: int, threads: int, warmup: int) -> int:
    """Number of chunks (1, ``threads`` or ``4 * threads``) with the least estimated time."""
    best_n, best_cost = 1, float(length)
    for n_chunks, cost_per_step in ((threads, 1.0), (4 * threads, FOUR_STREAM_COST)):
        if n_chunks <= 1:
            continue
        steps = -(-(length + (n_chunks - 1) * warmup) // n_chunks)
        if steps <= 2 * warmup or steps > length:  # chunks must keep most of what they compute
            continue
        per_thread = steps * (n_chunks // threads) * cost_per_step
        if per_thread < best_cost:
            best_n, best_cost = n_chunks, per_thread
    return best_n


# --------------------------------------------------------------------------- numba paths
class _State:
    """Per-chunk state: running (h, c), and checkpoints of it every ``stride`` samples from
    the chunk's first output sample on (h_ck, c_ck: (n, M, Hp), (n, M, Hq))."""

    def __init__(self, n: int, packed: PackedModel, checkpoints: int = 1, stride: int = 1 << 30):
        self.stride = int(stride)
        self.h = np.zeros((n, packed.Hp), dtype=np.float32)
        self.c = np.zeros((n, packed.Hq), dtype=np.float32)
        self.h_ck = np.zeros((n, checkpoints, packed.Hp), dtype=np.float32)
        self.c_ck = np.zeros((n, checkpoints, packed.Hq), dtype=np.float32)


def _run_one(k, packed: PackedModel, bias_row: int, x, y, chunk: Chunk, st: _State, i: int):
    k.lstm_one(x, y, chunk.begin, chunk.first_out, chunk.end - chunk.begin, packed.skipf,
               packed.w_in, packed.bias[bias_row], packed.w_hhT, packed.g_rows, packed.head_w,
               packed.head_b, st.h[i], st.c[i], st.stride, st.h_ck[i], st.c_ck[i])


def _run_four(k, packed: PackedModel, bias_rows, x, y2d, chunks, rows, st: _State, idx):
    """Four streams (chunks[i] with output row rows[i]) in one kernel call."""
    sel = np.asarray(idx)
    h, c, h_ck, c_ck = st.h[sel], st.c[sel], st.h_ck[sel], st.c_ck[sel]
    k.lstm_four(x, y2d,
                np.array([ch.begin for ch in chunks], dtype=np.int64),
                np.array([ch.first_out for ch in chunks], dtype=np.int64),
                np.asarray(rows, dtype=np.int64),
                chunks[0].end - chunks[0].begin, packed.skipf, packed.w_in,
                np.ascontiguousarray(packed.bias[np.asarray(bias_rows)]), packed.w_hhT,
                packed.g_rows, packed.head_w, packed.head_b, h, c, st.stride, h_ck, c_ck)
    st.h[sel], st.c[sel], st.h_ck[sel], st.c_ck[sel] = h, c, h_ck, c_ck


def _state_distance(h_a, c_a, h_b, c_b) -> float:
    """Largest difference between two states, relative to max(1, |entry of b|)."""
    return float(max(np.max(np.abs(h_a - h_b) / np.maximum(1.0, np.abs(h_b))),
                     np.max(np.abs(c_a - c_b) / np.maximum(1.0, np.abs(c_b)))))


def _render_numba(packed: PackedModel, x: np.ndarray) -> np.ndarray:
    k = _kernels()
    y = np.empty_like(x)
    st = _State(1, packed)
    _run_one(k, packed, 0, x, y, Chunk(0, 0, x.shape[0]), st, 0)
    return y


def _catch_up(k, packed: PackedModel, x, y, chunk: Chunk, st: _State, i: int) -> int:
    """Re-render chunk i from the exact state (its predecessor's final state) until it meets
    the warmed-up run at one of its checkpoints; returns the samples re-rendered.

    The runs meet where their distance is below STATE_TOL / 10, or below STATE_TOL and no
    longer halving from one checkpoint to the next (the float32 floor of a sensitive model,
    which no amount of catching up lowers). Stopping at the first dip under STATE_TOL
    instead would keep a slowly forgetting cell's error at the tolerance (measured: ESR of a
    compressor capture 2.2e-10 instead of the one-pass 7.6e-11). From the meeting point on,
    the warmed-up run's output and final state stand. If they never meet (a model that does
    not forget), the whole chunk is re-rendered and its final state becomes the exact one.
    """
    h, c = st.h[i - 1].copy(), st.c[i - 1].copy()
    n_ck = min(st.h_ck.shape[1], -(-(chunk.end - chunk.first_out) // st.stride))
    scratch = _State(1, packed)
    pos = chunk.first_out
    last = _state_distance(st.h_ck[i, 0], st.c_ck[i, 0], h, c)
    for m in range(1, n_ck + 1):
        stop = min(chunk.end, chunk.first_out + m * st.stride)
        if m == n_ck:  # no checkpoint left to meet at: finish the chunk exactly
            stop = chunk.end
        scratch.h[0], scratch.c[0] = h, c
        _run_one(k, packed, 0, x, y, Chunk(pos, pos, stop), scratch, 0)
        h, c, pos = scratch.h[0], scratch.c[0], stop
        if pos < chunk.end:
            d = _state_distance(st.h_ck[i, m], st.c_ck[i, m], h, c)
            if d <= STATE_TOL / 10 or (d <= STATE_TOL and d > last / 2):
                return pos - chunk.first_out
            last = d
    st.h[i], st.c[i] = h, c
    return chunk.end - chunk.first_out


def _render_chunked(packed: PackedModel, x: np.ndarray, threads: int, warmup: int,
                    n_chunks: Optional[int] = None, stats: Optional[dict] = None) -> np.ndarray:
    k = _kernels()
    T = x.shape[0]
    if n_chunks is None:
        n_chunks = choose_chunks(T, threads, warmup)
    chunks = plan_chunks(T, n_chunks, warmup)
    n_chunks = len(chunks)
    y = np.empty_like(x)
    longest = max(ch.end - ch.first_out for ch in chunks)
    st = _State(n_chunks, packed, min(MAX_CHECKPOINTS, -(-longest // CHECK_STRIDE)), CHECK_STRIDE)
    # Work items per thread: groups of four chunks in lockstep, leftovers one by one.
    groups = [list(range(i, min(i + 4, n_chunks))) for i in range(0, n_chunks, 4)]
    if n_chunks < 4 * threads:  # fewer chunks than 4 per thread: one stream each, spread out
        groups = [[i] for i in range(n_chunks)]
    y2d = y.reshape(1, T)

    def work(group):
        if len(group) == 4:
            _run_four(k, packed, [0] * 4, x, y2d, [chunks[i] for i in group], [0] * 4, st, group)
        else:
            for i in group:
                _run_one(k, packed, 0, x, y, chunks[i], st, i)

    _map(work, groups, threads)
    # Check every chunk's warmed-up state where its output begins against the state its
    # predecessor really ended in, in order (a fully re-rendered chunk hands on its exact
    # final state); where they disagree, re-render until the two runs meet.
    redo, redone = [], 0
    for i in range(1, n_chunks):
        if _state_distance(st.h_ck[i, 0], st.c_ck[i, 0], st.h[i - 1], st.c[i - 1]) > STATE_TOL:
            redone += _catch_up(k, packed, x, y, chunks[i], st, i)
            redo.append(i)
    if stats is not None:
        stats.update(chunks=n_chunks, warmup=warmup if n_chunks > 1 else 0, rerendered=redo,
                     rerendered_samples=redone, threads=min(threads, len(groups)))
    return y


def _map(fn, items, threads: int) -> None:
    if threads <= 1 or len(items) <= 1:
        for it in items:
            fn(it)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        for f in [pool.submit(fn, it) for it in items]:
            f.result()


def _resolve(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown render method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        return "chunked" if numba_available() else "torch"
    if method in ("numba", "chunked") and not numba_available():
        raise ConfigError(f"render method {method!r} needs numba, which cannot be imported "
                          f"here ({_kernels_error}); pip install numba, or use method='torch'")
    return method


def compile_kernels() -> None:
    """Compile (or load from numba's on-disk cache) the kernels now instead of on first use."""
    k = _kernels()
    if k is None:
        return
    cfg = ModelConfig(hidden_size=2)
    params = {name: np.zeros(shape, np.float32) for name, shape in cfg.param_shapes().items()}
    packed = pack_model(ModelWeights(cfg, params))
    x = np.zeros(8, dtype=np.float32)
    _render_numba(packed, x)
    _render_chunked(packed, x, threads=1, warmup=1, n_chunks=4)


def render(weights: ModelWeights, audio: np.ndarray, knobs: Sequence[float] = (), *,
           method: str = "auto", threads: Optional[int] = None, warmup: int = DEFAULT_WARMUP,
           chunks: Optional[int] = None, stats: Optional[dict] = None) -> np.ndarray:
    """Render ``audio`` (T,) through the model; returns (T,) float32 at the model's rate.

    ``method``: "auto" (fastest available), "numba", "chunked" or "torch" (see the module
    docstring). For "chunked": ``threads`` cores (default: ``torch.get_num_threads()``, capped
    by the cores this process may use),
    ``warmup`` samples of warm-up per chunk, ``chunks`` to force the number of chunks
    (default: planned from the length and ``threads``). ``stats``, if a dict, receives what
    was done: method, chunks, warmup, threads, rerendered (indices of chunks re-rendered
    because their warm-up had not converged) and rerendered_samples.
    """
    method = _resolve(method)
    x = _mono_float32(audio)
    # Knob values are the model's extra inputs: NaN would turn every sample into NaN, and a
    # value outside the 0..1 it was trained on is extrapolation (export refuses it too).
    knobs = [number(k, f"knob {i + 1}", lo=0.0, hi=1.0) for i, k in enumerate(knobs)]
    if stats is not None:
        stats.update(method=method, chunks=1, warmup=0, rerendered=[], rerendered_samples=0, threads=1)
    if method == "torch":
        return render_sequential(weights, x, knobs, segment=TORCH_SEGMENT)
    packed = pack_model(weights, [knobs])
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    if method == "numba":
        return _render_numba(packed, x)
    if int(warmup) < 1:
        raise ConfigError(f"warmup must be >= 1 sample, got {warmup}")
    if chunks is not None:
        chunks = int(chunks)
        if chunks < 1:
            raise ConfigError(f"chunks must be >= 1, got {chunks}")
        if chunks > 1 and -(-(x.shape[0] + (chunks - 1) * int(warmup)) // chunks) <= int(warmup):
            raise ConfigError(f"{x.shape[0]} samples are too few for {chunks} chunks with "
                              f"warm-up {warmup}; use fewer chunks or a shorter warm-up")
    return _render_chunked(packed, x, _n_threads(threads), int(warmup), chunks, stats)


def render_sweep(weights: ModelWeights, audio: np.ndarray,
                 knob_settings: Sequence[Sequence[float]], *, method: str = "auto",
                 threads: Optional[int] = None) -> np.ndarray:
    """Render one clip at several knob settings: (T,) -> (len(knob_settings), T) float32.

    Each setting is an independent exact pass from the zero state (no chunking, no
    warm-up), so the compiled kernels run four settings per core in lockstep. ``method``
    "torch" renders each setting with the reference instead; any other method (they need
    numba) takes the compiled path. ``threads`` as in :func:`render`.
    """
    settings = [list(s) for s in knob_settings]
    method = _resolve(method)
    if method == "torch" or not settings:
        x = _mono_float32(audio)
        return np.stack([render_sequential(weights, x, s, segment=TORCH_SEGMENT) for s in settings]) \
            if settings else np.zeros((0, x.shape[0]), dtype=np.float32)
    packed = pack_model(weights, settings)
    x = _mono_float32(audio)
    K, T = len(settings), x.shape[0]
    y = np.empty((K, T), dtype=np.float32)
    if T == 0:
        return y
    k = _kernels()
    whole = Chunk(0, 0, T)
    st = _State(K, packed)
    groups = [list(range(i, min(i + 4, K))) for i in range(0, K, 4)]
    n_threads = _n_threads(threads)
    if len(groups) < n_threads:  # too few settings to give every core four: one each
        groups = [[i] for i in range(K)]

    def work(group):
        if len(group) == 4:
            _run_four(k, packed, group, x, y, [whole] * 4, group, st, group)
        else:
            for i in group:
                _run_one(k, packed, i, x, y[i], whole, st, i)

    _map(work, groups, n_threads)
    return y


# --------------------------------------------------------------------------- writing a render

def write_render(path, y: np.ndarray, rate: int) -> Optional[str]:
    """Write a render (T,) float32 to ``path`` (.wav: 32-bit float; .flac: 24-bit) and return
    a warning line when the file cannot hold it as it is (None otherwise).

    A model may put out more than full scale (a hot capture, a loud input). A float WAV
    keeps that; FLAC is integer PCM, which clips everything above full scale. The render is
    written unchanged (scaling it would misrepresent the device's level), and the warning
    gives the peak and what to do. The hidden temporaries of a killed earlier write of the
    same file are removed first.
    """
    from pathlib import Path

    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.fileio import remove_stale_temporaries

    path = Path(path)
    flac = path.suffix.lower() == ".flac"
    remove_stale_temporaries(path.parent, [path.name])
    write_audio(path, y, rate, subtype="PCM_24" if flac else "FLOAT")
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if flac and peak > 1.0:
        over = int(np.count_nonzero(np.abs(y) > 1.0))
        return (f"{path}: the render peaks at {20 * np.log10(peak):+.1f} dBFS ({peak:.2f}x full scale) and FLAC "
                f"clipped its {over} sample(s) above full scale; write a .wav (32-bit float keeps them) or lower "
                f"the input level by {20 * np.log10(peak):.1f} dB")
    return None
