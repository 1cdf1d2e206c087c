"""How good is a capture, in words: test ESR bands with their source.

ESR (error-to-signal ratio, ``sum((y - p)^2) / sum(y^2)``) on audio the model never trained
on is the number every capture tool prints, so its bands are the ones guitarists already
know. These are the bands of the Neural Amp Modeler trainer, which labels a finished
model by its validation ESR (``sdatkinson/neural-amp-modeler``, ``nam/train/core.py``,
function ``_plot``):

=============  ==========================================
ESR            NAM's words
=============  ==========================================
< 0.01         "Great!"
< 0.035        "Not bad!"
< 0.1          "...This *might* sound ok!"
< 0.3          "...This probably won't sound great :("
otherwise      "...Something seems to have gone wrong."
=============  ==========================================

NAM's author calls them "trying my best to put numbers to it": a rule of thumb, not a
listening test, and NAM computes them on its own standard test signal. ampxfer's test ESR is
the same quantity (plain ESR, no pre-emphasis) on the last seconds of the user's recording,
so the bands carry over as a rough guide; the listening page is the real check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

#: Where the bands come from (shown on the listening page and in the README).
SOURCE = ('Neural Amp Modeler trainer, sdatkinson/neural-amp-modeler, nam/train/core.py (_plot): '
          'ESR < 0.01 "Great!", < 0.035 "Not bad!", < 0.1 "This *might* sound ok!", '
          '< 0.3 "This probably won\'t sound great", otherwise "Something seems to have gone wrong."')
SOURCE_URL = "https://github.com/sdatkinson/neural-amp-modeler/blob/main/nam/train/core.py"

#: (upper bound, label, what it means for the user); the first band whose bound exceeds the ESR.
BANDS: Tuple[Tuple[float, str, str], ...] = (
    (0.01, "great", "ready to play; in a blind A/B most listeners will not tell it from the device"),
    (0.035, "not bad", "close to the device; an A/B may reveal small differences"),
    (0.1, "might sound OK", "listen before you rely on it; a longer recording (3+ minutes) or "
                            "a longer training run usually brings it down"),
    (0.3, "probably won't sound great", "audibly different from the device; record more (3+ minutes, "
                                        "everything the capture should cover) and check the warnings"),
    (math.inf, "something went wrong", "the model does not follow the recording; check that the target is "
                                       "the DI played through the device, and the levels and latency warnings"),
)


@dataclass(frozen=True)
class Verdict:
    """A test ESR in words. ``level_db`` is ``10 log10(ESR)``: the error's level under the target."""

    esr: float
    label: str
    advice: str
    below: float  # the band's upper bound (inf for the last band)

    @property
    def level_db(self) -> float:
        if self.esr > 0 and math.isfinite(self.esr):
            return 10.0 * math.log10(self.esr)
        return -math.inf if self.esr == 0 else math.inf

    def line(self) -> str:
        """One line: ``test ESR 0.0213 (-16.7 dB): not bad (NAM's band < 0.035); close to ...``."""
        band = f"< {self.below:g}" if math.isfinite(self.below) else f">= {BANDS[-2][0]:g}"
        return (f"test ESR {self.esr:.4g} ({self.level_db:+.1f} dB): {self.label} (NAM's band {band}); "
                f"{self.advice}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["below"] = self.below if math.isfinite(self.below) else None
        d["esr"] = self.esr if math.isfinite(self.esr) else None
        return d


def verdict(esr: float) -> Verdict:
    """The band of ``esr`` (a NaN or infinite ESR counts as the worst)."""
    x = float(esr)
    if not math.isfinite(x) or x < 0:
        x = math.inf
    for below, label, advice in BANDS:
        if x < below:
            return Verdict(x, label, advice, below)
    below, label, advice = BANDS[-1]
    return Verdict(x, label, advice, below)


def comparison(capture_esr: float, scratch_esr: Optional[float], start_name: Optional[str]) -> Optional[str]:
    """One sentence comparing the capture with the scratch baseline (None without a baseline).

    The ratio is of test ESRs, so "2.0x lower" means half the error energy (-3 dB).
    """
    if scratch_esr is None:
        return None
    start = f"starting from {start_name}" if start_name else "the capture"
    if not (math.isfinite(capture_esr) and math.isfinite(scratch_esr)):
        return f"{start}: test ESR {capture_esr:.4g}; from scratch: {scratch_esr:.4g}"
    if capture_esr == scratch_esr:
        how = "the same as"
    elif capture_esr < scratch_esr:
        how = (f"{scratch_esr / capture_esr:.2f}x lower than" if capture_esr > 0 else "lower than")
    else:
        how = (f"{capture_esr / scratch_esr:.2f}x higher than" if scratch_esr > 0 else "higher than")
    return (f"{start}: test ESR {capture_esr:.4g}, {how} training from scratch with the same recipe and "
            f"budget ({scratch_esr:.4g})")
