"""Checks of a recording pair that pass the per-file checks but are wrong (issue 13, class 5).

Each returns :class:`~ampxfer_lib.data.audio.Finding` warnings; ``prepare`` records them in
the manifest and prints them. They read what alignment has measured already, plus the
delay at several points through the recording (:func:`~ampxfer_lib.data.align.measure_drift`).
"""

from __future__ import annotations

from typing import List

import numpy as np

from ampxfer_lib.data.align import LatencyEstimate, estimate_latency, measure_drift
from ampxfer_lib.data.audio import Finding

#: A target leading the input by more than this many samples is not an estimate landing a
#: sample or two early (which a true zero delay does): the pair looks swapped.
SWAP_MARGIN = 2
#: Drift (samples, start to end) beyond which the pair is reported as on two clocks: one
#: sample is where a single compensated latency stops being right for the whole file.
DRIFT_LIMIT = 1.0


def swap_findings(est: LatencyEstimate, x: np.ndarray, y: np.ndarray, rate: int, target: str,
                  input: str) -> List[Finding]:
    """Input and target given the wrong way round: ``x``, ``y`` (T,) as recorded (before
    alignment), ``est`` the latency measured between them."""
    findings: List[Finding] = []
    if est.in_window and est.samples < -SWAP_MARGIN and est.xcorr_lag < -SWAP_MARGIN and _reverse_is_causal(x, y, rate):
        findings.append(Finding(
            "swapped", target,
            f"the target leads the input by {-est.samples} samples ({-est.samples / rate * 1000:.1f} ms), which no "
            f"device does: the input and target look swapped; pass the clean DI ({input} is it?) as --input and "
            "the device's recording as --target",
            {"latency_samples": est.samples},
        ))
    return findings


def drift_findings(x: np.ndarray, y: np.ndarray, rate: int, target: str) -> List[Finding]:
    """Clock drift of an aligned pair ``x``, ``y`` (T,) each."""
    findings: List[Finding] = []
    drift = measure_drift(x, y, rate)
    if abs(drift.drift_samples) > DRIFT_LIMIT:
        findings.append(Finding(
            "clock_drift", target,
            f"the delay to the input changes by {drift.drift_samples:+.1f} samples from start to end "
            f"({drift.ppm:+.1f} ppm): the two were recorded on different clocks (two interfaces, or a re-amp "
            "through another device's clock), so one latency is right only in part of the file and the model "
            "learns smeared timing; record both through one interface, or resample the target to the input's clock",
            drift.to_dict(),
        ))
    return findings


def _reverse_is_causal(x: np.ndarray, y: np.ndarray, rate: int) -> bool:
    """Whether the pair read the other way round (``y`` as the input) has a delay of zero or
    more: a swapped pair does, while a real device whose onset merely reads early (heavy
    distortion) reads early both ways."""
    rev = estimate_latency(y, x, rate)
    return rev.in_window and rev.samples >= -SWAP_MARGIN


def flip_findings(flip: bool, est: LatencyEstimate, rho: float, threshold: float, target: str) -> List[Finding]:
    """``--flip-polarity`` on a target whose polarity already matches the input (``rho``:
    the low-passed correlation before the flip, clearly positive)."""
    if flip and est.in_window and est.polarity > 0 and rho >= threshold:
        return [Finding(
            "flip_polarity_worse", target,
            f"--flip-polarity inverts a target whose polarity already matches the input (correlation {rho:+.2f} "
            f"before the flip, {-rho:+.2f} after); drop --flip-polarity",
            {"correlation": rho},
        )]
    return []
