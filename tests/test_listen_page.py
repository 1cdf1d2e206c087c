"""The listening page: players whose sources exist beside it, loudness-matched clips, an exact null test."""

import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.capture.listen_page import PAGE, ROLES, PageInfo, write_listen_page
from ampxfer_lib.capture.verdict import verdict
from ampxfer_lib.data.dataset import load_dataset
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.notebooks.listening import integrated_loudness, pick_clips, render_clip

#: One step of 16-bit PCM; a sample read back is within one step of what was written (rounding,
#: plus libsndfile's 32767-versus-32768 scale, which the fitted gains below absorb).
PCM16 = 1.0 / 32768


class Page(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.audio, self.links, self.scripts, self.ids = [], [], 0, {}
        self._id = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "audio":
            self.audio.append(a)
        if tag == "a":
            self.links.append(a["href"])
        if tag in ("script", "iframe", "link", "img"):
            self.scripts += 1
        if "id" in a:
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_data(self, data):
        if self._id:
            self.ids[self._id] += data

    def handle_endtag(self, tag):
        if tag in ("p", "td", "ul", "table"):
            self._id = None


def info(tmp_path, name="pedal", **kw):
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "pedal.json").write_text("{}")
    return PageInfo(name=name, verdict=verdict(0.02), start="TS9 (library x); chosen by ranking",
                    plugins=(("plugins/pedal.json", "neuralpi", ("NeuralPi loads it (LSTM 20, skip on).",)),),
                    skipped=(("nam", "has a skip connection"),), comparison="starting from TS9: lower", **kw)


@pytest.fixture(scope="module")
def weights():
    return new_model(ModelConfig(hidden_size=6), seed=3).weights()


def test_page_structure_and_audio(tmp_path, small_data, weights):
    data = load_dataset(small_data)
    page = write_listen_page(tmp_path, weights, data, info(tmp_path), clip_seconds=0.25, count=3)
    assert page == tmp_path / PAGE
    parsed = Page(page.read_text())
    assert parsed.scripts == 0  # plays from file:// with nothing but the browser
    srcs = [a["src"] for a in parsed.audio]
    assert len(srcs) == 3 * len(ROLES) and all("controls" in a for a in parsed.audio)
    for src in srcs:
        assert not Path(src).is_absolute() and "://" not in src and (tmp_path / src).is_file(), src
    assert sorted(p.name for p in (tmp_path / "listen").iterdir()) == sorted(Path(s).name for s in srcs)
    for href in parsed.links:
        assert "://" in href or (tmp_path / href).is_file(), href  # only the cited source is remote
    assert parsed.ids["verdict"].startswith("Not bad: test ESR 0.02 (-17.0 dB).")
    assert parsed.ids["start"] == "TS9 (library x); chosen by ranking"
    assert parsed.ids["comparison"] == "starting from TS9: lower"
    assert "<li>no nam file: has a skip connection</li>" in page.read_text()

    section = data.split("test")[0]
    rate = data.sample_rate
    x, y = section.input[:, 0].astype(np.float64), section.target.astype(np.float64)
    windows = pick_clips(y, rate, 0.25, 3)
    assert len(windows) == 3
    for i, (a, b) in enumerate(windows, start=1):
        sounds = {}
        for role, _ in ROLES:
            s, r = sf.read(tmp_path / "listen" / f"clip{i}_{role}.wav", dtype="float64")
            assert r == rate and len(s) == b - a and sf.info(tmp_path / "listen" / f"clip{i}_{role}.wav").subtype == "PCM_16"
            sounds[role] = s
        loud = [integrated_loudness(sounds[r], rate) for r in ("di", "device", "capture")]
        assert max(loud) - min(loud) < 0.05, loud
        assert max(np.max(np.abs(sounds[r])) for r in ("di", "device", "capture")) <= 10 ** (-1 / 20) + PCM16
        p = render_clip(weights, section.input[:, 0], a, b, 4410, section.knobs).astype(np.float64)
        # each player is the raw clip times one gain; the null test is (device - capture) at the device's gain
        g_dev = float(np.dot(sounds["device"], y[a:b]) / np.dot(y[a:b], y[a:b]))
        g_di = float(np.dot(sounds["di"], x[a:b]) / np.dot(x[a:b], x[a:b]))
        assert np.max(np.abs(sounds["device"] - g_dev * y[a:b])) <= 1.5 * PCM16
        assert np.max(np.abs(sounds["di"] - g_di * x[a:b])) <= 1.5 * PCM16
        expected_null = np.clip(g_dev * (y[a:b] - p), -1, 1)
        assert np.max(np.abs(sounds["null"] - expected_null)) <= 1.5 * PCM16
        esr = float(np.sum((y[a:b] - p) ** 2) / np.sum(y[a:b] ** 2))
        assert f"ESR {esr:.4g}, null {10 * math.log10(esr):+.1f} dB" in page.read_text()


def test_rewriting_with_fewer_clips_leaves_no_stale_files(tmp_path, small_data, weights):
    data = load_dataset(small_data)
    write_listen_page(tmp_path, weights, data, info(tmp_path), clip_seconds=0.25, count=3)
    write_listen_page(tmp_path, weights, data, info(tmp_path), clip_seconds=5.0, count=3)  # the whole 1 s split
    assert sorted(p.name for p in (tmp_path / "listen").iterdir()) == sorted(f"clip1_{r}.wav" for r, _ in ROLES)
    assert len(Page((tmp_path / PAGE).read_text()).audio) == len(ROLES)


def test_text_is_escaped(tmp_path, small_data, weights):
    page = write_listen_page(tmp_path, weights, load_dataset(small_data),
                             info(tmp_path, name="<b>Fuzz & Co</b>", details=(("note", "a<script>"),)), clip_seconds=5.0)
    text = page.read_text()
    assert "<b>Fuzz" not in text and "&lt;b&gt;Fuzz &amp; Co&lt;/b&gt;" in text and "<script>" not in text
