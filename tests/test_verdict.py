"""The verdict in words: NAM's bands at their exact edges, levels in dB, the scratch comparison."""

import json
import math

import pytest

from ampxfer_lib.capture.verdict import BANDS, SOURCE, comparison, verdict


def test_bands_are_nams_with_their_source():
    assert [b for b, _, _ in BANDS] == [0.01, 0.035, 0.1, 0.3, math.inf]
    assert "nam/train/core.py" in SOURCE and "sdatkinson/neural-amp-modeler" in SOURCE
    for words in ('"Great!"', '"Not bad!"', "might* sound ok", "probably won't sound great", "gone wrong"):
        assert words in SOURCE


@pytest.mark.parametrize("esr, label", [
    (0.0, "great"), (0.00999, "great"),
    (0.01, "not bad"), (0.03499, "not bad"),  # each bound belongs to the band above it, as NAM's `<`
    (0.035, "might sound OK"), (0.09999, "might sound OK"),
    (0.1, "probably won't sound great"), (0.29999, "probably won't sound great"),
    (0.3, "something went wrong"), (7.0, "something went wrong"),
    (math.inf, "something went wrong"), (math.nan, "something went wrong"), (-1.0, "something went wrong"),
])
def test_band_edges(esr, label):
    assert verdict(esr).label == label


def test_level_in_db_and_line():
    v = verdict(0.01)
    assert v.level_db == pytest.approx(-20.0, abs=1e-12)
    assert verdict(0.0).level_db == -math.inf
    assert v.line().startswith("test ESR 0.01 (-20.0 dB): not bad (NAM's band < 0.035); ")
    assert "(NAM's band >= 0.3)" in verdict(0.5).line()


def test_to_dict_is_plain_json_even_for_a_broken_model():
    d = json.loads(json.dumps(verdict(math.inf).to_dict(), allow_nan=False))
    assert d == {"esr": None, "label": "something went wrong", "advice": BANDS[-1][2], "below": None}
    assert verdict(0.02).to_dict()["below"] == 0.035


def test_comparison_with_the_scratch_baseline():
    assert comparison(0.01, None, "TS9") is None
    assert "2.00x lower than training from scratch" in comparison(0.01, 0.02, "TS9")
    assert comparison(0.01, 0.02, "TS9").startswith("starting from TS9: test ESR 0.01")
    assert "4.00x higher than" in comparison(0.04, 0.01, None)
    assert "the same as" in comparison(0.02, 0.02, "x")
