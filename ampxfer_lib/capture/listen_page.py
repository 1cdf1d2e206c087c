"""The listening page of a capture: ``DIR/listen.html`` and its clips in ``DIR/listen/``.

A static page that opens by double-click in any browser, with no server and no script: the
players are plain ``<audio controls>`` elements whose sources are 16-bit PCM WAV files
beside the page (relative links, so the folder can be moved, zipped or put on Drive). WAV
because every browser plays it from ``file://``; FLAC would halve the size but needs Safari
11 or newer, and these clips are small (a few seconds each).

Per clip, taken from the test split (audio the model never trained on), four players:

* **DI**: the clean input; **device**: the user's recording; **capture**: the model playing
  the same DI. These three are loudness-matched together (ITU-R BS.1770, as in
  :mod:`ampxfer_lib.notebooks.listening`), so louder never passes for better;
* **null test**: device minus capture, at the device's gain, so the quieter it is, the
  closer the capture; its level relative to the device is ``10 log10(ESR)`` of the clip.

The page also shows the verdict with its source, the test ESR, the starting model and the
plugin files.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.capture.verdict import BANDS, SOURCE, SOURCE_URL, Verdict
from ampxfer_lib.data.dataset import Dataset
from ampxfer_lib.fileio import PathLike, atomic_write_bytes, atomic_write_text, make_dirs
from ampxfer_lib.model.weights import ModelWeights

PAGE = "listen.html"
CLIP_DIR = "listen"
#: The players of a clip, in page order: (role, column heading).
ROLES = (("di", "DI (clean input)"), ("device", "device (your recording)"),
         ("capture", "capture (the model)"), ("null", "null test: device - capture"))


@dataclass(frozen=True)
class Clip:
    """One clip on the page: where it lies in the test split, its files (relative to the page)."""

    index: int
    start_s: float
    stop_s: float
    files: Tuple[Tuple[str, str], ...]  # (role, relative path)
    esr: float  # of the capture on this clip
    null_db: float  # level of device - capture relative to the device (dB)

    def file(self, role: str) -> str:
        return dict(self.files)[role]


@dataclass(frozen=True)
class PageInfo:
    """What the page says besides the players."""

    name: str
    verdict: Verdict
    start: str  # the starting model in words ("trained from scratch (...)" when there was none)
    plugins: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = ()  # (file relative to the page, format, notes)
    skipped: Tuple[Tuple[str, str], ...] = ()  # (format, why it was not written)
    comparison: Optional[str] = None  # the scratch baseline sentence
    details: Tuple[Tuple[str, str], ...] = field(default=())  # more (label, value) rows


def write_clips(out_dir: PathLike, weights: ModelWeights, data: Dataset, clip_seconds: float = 5.0,
                count: int = 3, warmup: int = 4410) -> List[Clip]:
    """Render and write the clips of the page into ``out_dir/listen/``; returns them in time order.

    The clips are the ``count`` loudest ``clip_seconds`` windows of the test split's target
    (:func:`~ampxfer_lib.notebooks.listening.pick_clips`); the capture plays each after
    ``warmup`` samples of the audio before it, as a plugin's state would have settled.
    """
    from ampxfer_lib.notebooks.listening import encode_audio, loudness_gains, null_test, pick_clips, render_clip

    folder = make_dirs(Path(out_dir) / CLIP_DIR)
    for old in folder.glob("clip*_*.wav"):  # a page written before, with other clips: ours to replace
        old.unlink()
    section = data.split("test")[0]
    rate = data.sample_rate
    x = section.input[:, 0].astype(np.float64)
    y = section.target.astype(np.float64)
    clips = []
    for i, (a, b) in enumerate(pick_clips(y, rate, clip_seconds, count), start=1):
        p = render_clip(weights, section.input[:, 0], a, b, warmup, section.knobs).astype(np.float64)
        sounds = {"di": x[a:b], "device": y[a:b], "capture": p}
        gains, _ = loudness_gains(sounds, rate)
        diff, level = null_test(y[a:b], p)
        scaled = {k: v * gains[k] for k, v in sounds.items()}
        scaled["null"] = diff.astype(np.float64) * gains["device"]
        files = []
        for role, _ in ROLES:
            rel = f"{CLIP_DIR}/clip{i}_{role}.wav"
            atomic_write_bytes(Path(out_dir) / rel, encode_audio(scaled[role], rate, "wav"))
            files.append((role, rel))
        esr = 10.0 ** (level / 10.0) if math.isfinite(level) else (0.0 if level < 0 else math.inf)
        clips.append(Clip(i, a / rate, b / rate, tuple(files), esr, level))
    return clips


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:72em;margin:2em auto;
padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.35em .6em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:middle}audio{width:15em}.verdict{font-size:1.25em;padding:.6em .9em;
border-radius:.4em;background:#f3f3f3}.band-0{background:#dff5df}.band-1{background:#e4eefb}
.band-2{background:#fbf5d9}.band-3{background:#fde8d7}.band-4{background:#fadada}small{color:#666}
code{background:#f3f3f3;padding:0 .2em}"""


def page_html(info: PageInfo, clips: Sequence[Clip]) -> str:
    """The page as a string (no script, no external resource; the audio sources are relative)."""
    v = info.verdict
    band = next(i for i, (below, label, _) in enumerate(BANDS) if label == v.label)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(info.name)}: ampxfer capture</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(info.name)}</h1>",
        f'<p class="verdict band-{band}" id="verdict"><b>{_e(v.label[0].upper() + v.label[1:])}</b>: '
        f"test ESR <b>{v.esr:.4g}</b> ({v.level_db:+.1f} dB). {_e(v.advice[0].upper() + v.advice[1:])}.</p>",
        "<table>",
        f"<tr><th>started from</th><td id=\"start\">{_e(info.start)}</td></tr>",
    ]
    if info.comparison:
        parts.append(f"<tr><th>scratch baseline</th><td id=\"comparison\">{_e(info.comparison)}</td></tr>")
    for label, value in info.details:
        parts.append(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Listen</h2>")
    parts.append("<p>Clips from the test split: the last seconds of your recording, which the model never "
                 "trained on. In each row the DI, the device and the capture are loudness-matched (ITU-R "
                 "BS.1770), so none sounds better for being louder. The null test is the device minus the "
                 "capture at the device's level: the quieter it is, the closer the capture (its level is "
                 "relative to the device).</p>")
    heads = "".join(f"<th>{_e(h)}</th>" for _, h in ROLES)
    parts.append(f'<table id="players"><tr><th>clip</th>{heads}</tr>')
    for c in clips:
        cells = "".join(f'<td><audio controls preload="none" src="{_e(c.file(role))}"></audio>'
                        f'<br><small><a href="{_e(c.file(role))}">{_e(Path(c.file(role)).name)}</a></small></td>'
                        for role, _ in ROLES)
        parts.append(f"<tr><td>clip {c.index}<br><small>{_clock(c.start_s)}-{_clock(c.stop_s)} of the test "
                     f"split<br>ESR {c.esr:.4g}, null {c.null_db:+.1f} dB</small></td>{cells}</tr>")
    parts.append("</table>")

    parts.append("<h2>Plugin files</h2>")
    parts.append('<ul id="plugins">')
    for rel, fmt, notes in info.plugins:
        items = "".join(f"<li>{_e(n)}</li>" for n in notes)
        parts.append(f'<li><a href="{_e(rel)}"><code>{_e(rel)}</code></a> ({_e(fmt)})<ul>{items}</ul></li>')
    for fmt, why in info.skipped:
        parts.append(f"<li>no {_e(fmt)} file: {_e(why)}</li>")
    parts.append("</ul>")

    parts.append("<h2>What the verdict means</h2>")
    rows = []
    low = 0.0
    for i, (below, label, advice) in enumerate(BANDS):
        rng = f"{low:g} to {below:g}" if math.isfinite(below) else f"{low:g} or more"
        mark = " <b>&larr; this capture</b>" if i == band else ""
        rows.append(f"<tr><td>{rng}</td><td>{_e(label)}{mark}</td><td>{_e(advice)}</td></tr>")
        low = below
    parts.append("<table><tr><th>test ESR</th><th>verdict</th><th>meaning</th></tr>" + "".join(rows) + "</table>")
    parts.append(f'<p><small>Bands from the <a href="{_e(SOURCE_URL)}">{_e(SOURCE)}</a> They are a rule of '
                 "thumb, not a listening test: trust your ears on the players above.</small></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_listen_page(out_dir: PathLike, weights: ModelWeights, data: Dataset, info: PageInfo,
                      clip_seconds: float = 5.0, count: int = 3) -> Path:
    """Write ``out_dir/listen/*.wav`` and ``out_dir/listen.html``; returns the page's path."""
    clips = write_clips(out_dir, weights, data, clip_seconds, count)
    path = Path(out_dir) / PAGE
    atomic_write_text(path, page_html(info, clips))
    return path
