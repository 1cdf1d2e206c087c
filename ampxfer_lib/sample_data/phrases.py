"""What the synthesised guitarist plays: notes, chord shapes, scales and phrase generators.

The material of the sample DI is a list of phrases (low-E riffs, palm-muted chugs, open and
barre chord strums, clean arpeggios, pentatonic leads with bends, slides, hammer-ons and
vibrato, jazz comping, single-note bass lines) over several keys and tempos; each phrase has
its own level so the whole covers a real DI's range (peaks up to about -1 dBFS, RMS about
-30 to -18 dBFS). :func:`plan_phrases` lays them out; phrase ``k`` draws everything from
``numpy.random.default_rng((seed, k))``, so a shorter plan is a prefix of a longer one.
:mod:`ampxfer_lib.sample_data.guitar_synth` plays the plan on its waveguide strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

# MIDI pitches of the open strings, low E (index 0) to high e (index 5).
STANDARD_TUNING: Tuple[int, ...] = (40, 45, 50, 55, 59, 64)
MAX_FRET = 22
#: Seconds every phrase is given after its last note to ring out (part of its length).
TAIL_SECONDS = 0.6


@dataclass
class Note:
    """One plucked (or legato) note on one string.

    ``pitch`` is the fretted MIDI pitch; ``curve`` optionally bends or slides it: a list of
    (seconds after onset, MIDI pitch) breakpoints, linear in between, last value held.
    ``legato`` notes are hammer-ons, pull-offs or slides: the string is not re-picked, it keeps
    vibrating and only gets a small extra excitation (``velocity`` scales it).
    ``duration`` is the time until the fretting hand damps the string (release).
    """

    string: int
    onset: float
    duration: float
    pitch: float
    velocity: float = 0.7
    palm_mute: bool = False
    legato: bool = False
    curve: Optional[List[Tuple[float, float]]] = None
    vibrato: Optional[Tuple[float, float, float]] = None  # (depth semitones, rate Hz, delay s)
    pick_position: float = 0.16  # distance of the pick from the bridge / scale length


# Frets relative to the shape's root fret, low E to high e; None = string not played.
_SHAPES = {
    ("E", "maj"): (0, 2, 2, 1, 0, 0),
    ("E", "min"): (0, 2, 2, 0, 0, 0),
    ("E", "7"): (0, 2, 0, 1, 0, 0),
    ("E", "m7"): (0, 2, 0, 0, 0, 0),
    ("E", "5"): (0, 2, 2, None, None, None),
    ("A", "maj"): (None, 0, 2, 2, 2, 0),
    ("A", "min"): (None, 0, 2, 2, 1, 0),
    ("A", "7"): (None, 0, 2, 0, 2, 0),
    ("A", "m7"): (None, 0, 2, 0, 1, 0),
    ("A", "maj7"): (None, 0, 2, 1, 2, 0),
    ("A", "5"): (None, 0, 2, 2, None, None),
    # jazz shells: root, 7th, 3rd
    ("Eshell", "maj7"): (0, None, 1, 1, None, None),
    ("Eshell", "m7"): (0, None, 0, 0, None, None),
    ("Eshell", "7"): (0, None, 0, 1, None, None),
    ("Ashell", "maj7"): (None, 0, None, 1, 2, None),
    ("Ashell", "m7"): (None, 0, None, 0, 1, None),
    ("Ashell", "7"): (None, 0, None, 0, 2, None),
}
# Open chords: (root pitch class, quality) -> absolute frets.
_OPEN = {
    (0, "maj"): (None, 3, 2, 0, 1, 0),   # C
    (7, "maj"): (3, 2, 0, 0, 0, 3),      # G
    (2, "maj"): (None, None, 0, 2, 3, 2),  # D
    (9, "maj"): (None, 0, 2, 2, 2, 0),   # A
    (4, "maj"): (0, 2, 2, 1, 0, 0),      # E
    (9, "min"): (None, 0, 2, 2, 1, 0),   # Am
    (4, "min"): (0, 2, 2, 0, 0, 0),      # Em
    (2, "min"): (None, None, 0, 2, 3, 1),  # Dm
}
_SCALES = {
    "minor_pent": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "major_pent": (0, 2, 4, 7, 9),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
}
# Progressions as (semitones above the key root, quality).
_PROGRESSIONS_MAJOR = [
    [(0, "maj"), (7, "maj"), (9, "min"), (5, "maj")],
    [(9, "min"), (5, "maj"), (0, "maj"), (7, "maj")],
    [(0, "maj"), (5, "maj"), (7, "maj"), (5, "maj")],
    [(0, "maj"), (9, "min"), (5, "maj"), (7, "maj")],
]
_PROGRESSIONS_MINOR = [
    [(0, "min"), (8, "maj"), (3, "maj"), (10, "maj")],
    [(0, "min"), (5, "min"), (7, "min"), (0, "min")],
    [(0, "min"), (10, "maj"), (8, "maj"), (7, "maj")],
]


def _chord_frets(rng, root_pc: int, quality: str, allow_open: bool = True, power: bool = False):
    """Frets (per string, None = unplayed) of a playable voicing of the chord."""
    if power:
        quality = "5"
    if allow_open and not power and (root_pc, quality) in _OPEN and rng.random() < 0.65:
        return list(_OPEN[(root_pc, quality)])
    f_e = (root_pc - 4) % 12
    f_a = (root_pc - 9) % 12
    options = []
    for shape, f in (("E", f_e), ("A", f_a)):
        if (shape, quality) in _SHAPES:
            if f == 0 and not power:
                f = 12 if rng.random() < 0.3 else 0
            options.append((shape, f))
    shape, f = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
    return [None if d is None else d + f for d in _SHAPES[(shape, quality)]]


def _humanize(rng, t: float, ms: float = 6.0) -> float:
    return max(t + rng.normal(0.0, ms * 1e-3), 0.0)


def _strum(rng, notes: List[Note], frets, t: float, velocity: float, down: bool,
           ring: float, palm_mute: bool = False, strings: Optional[Sequence[int]] = None):
    """Add a strummed chord: per-string onsets spread by the stroke (low->high when down)."""
    played = [s for s in range(6) if frets[s] is not None]
    if strings is not None:
        played = [s for s in played if s in strings]
    if not down:
        played = played[::-1]
    spread = (0.010 + 0.030 * (1.0 - velocity)) / max(len(played), 1)
    t0 = _humanize(rng, t)
    for i, s in enumerate(played):
        v = float(np.clip(velocity * (1.0 + rng.normal(0, 0.08)) * (0.85 if not down else 1.0), 0.05, 1.0))
        notes.append(Note(s, t0 + i * spread * (1.0 + 0.3 * rng.random()), ring,
                          STANDARD_TUNING[s] + frets[s], v, palm_mute=palm_mute,
                          pick_position=0.12 + 0.06 * rng.random()))


def _phrase_riff(rng, key_pc: int):
    """Low-E rock/metal riff: palm-muted chugs on the root, accented power chords, riff notes."""
    bpm = float(rng.uniform(95, 170))
    step = 60.0 / bpm / 4.0  # sixteenth
    # riffs sit low: root on the E string at frets 0..7 (E to B)
    root_fret = (key_pc - 4) % 12 % 8
    scale = _SCALES["minor_pent"] if rng.random() < 0.6 else (0, 1, 3, 5, 7, 8, 10)  # phrygian
    # a two-bar pattern of 32 sixteenths, repeated with variations
    kinds = rng.choice(["chug", "chug", "chug", "rest", "power", "note"], size=32,
                       p=[0.3, 0.15, 0.1, 0.15, 0.15, 0.15])
    kinds[0] = "power"
    notes: List[Note] = []
    reps = int(rng.integers(2, 4))
    for r in range(reps):
        for i, kind in enumerate(kinds):
            t = (r * 32 + i) * step
            if kind == "chug" or (kind == "note" and rng.random() < 0.2):
                v = float(rng.uniform(0.55, 0.95))
                notes.append(Note(0, _humanize(rng, t, 3), step * 0.9, 40 + root_fret, v,
                                  palm_mute=True, pick_position=0.08 + 0.03 * rng.random()))
            elif kind == "power":
                length = step * int(rng.choice([2, 3, 4, 6]))
                base = root_fret + int(rng.choice([0, 0, 0, 3, 5, 7])) if i > 0 else root_fret
                string = 0 if base <= 9 else 1
                bf = base if string == 0 else base - 5
                frets = [None] * 6
                frets[string], frets[string + 1], frets[string + 2] = bf, bf + 2, bf + 2
                _strum(rng, notes, frets, t, float(rng.uniform(0.75, 1.0)), True, length,
                       palm_mute=bool(rng.random() < 0.25))
            elif kind == "note":
                deg = int(rng.choice(scale))
                pitch = 40 + root_fret + deg + (12 if rng.random() < 0.2 else 0)
                string = 0 if pitch - 40 <= 7 else 1 if pitch - 45 <= 9 else 2
                notes.append(Note(string, _humanize(rng, t, 3), step * float(rng.choice([1, 2])),
                                  float(pitch), float(rng.uniform(0.6, 0.95)),
                                  palm_mute=bool(rng.random() < 0.3)))
    return notes, reps * 32 * step, "bridge_humbucker" if rng.random() < 0.8 else "bridge_single"


def _phrase_strum(rng, key_pc: int):
    """Chord strumming (open or barre chords, pop/punk/folk), sometimes palm-muted eighths."""
    bpm = float(rng.uniform(80, 150))
    beat = 60.0 / bpm
    minor = rng.random() < 0.4
    prog = (_PROGRESSIONS_MINOR if minor else _PROGRESSIONS_MAJOR)[
        int(rng.integers(len(_PROGRESSIONS_MINOR if minor else _PROGRESSIONS_MAJOR)))]
    patterns = ["D.DU.UDU", "D.D.D.D.", "DDDDDDDD", "D..UDUDU", "D.DUDUDU"]
    pattern = patterns[int(rng.integers(len(patterns)))]
    punk = pattern == "DDDDDDDD"
    power = punk and rng.random() < 0.7
    notes: List[Note] = []
    bars = len(prog) if bpm > 105 else 2 + 2 * int(rng.integers(0, 2))
    base_v = float(rng.uniform(0.5, 0.95))
    for bar in range(bars):
        deg, qual = prog[bar % len(prog)]
        frets = _chord_frets(rng, (key_pc + deg) % 12, qual, power=power)
        mute_bar = punk and rng.random() < 0.5
        for i, ch in enumerate(pattern):
            if ch == ".":
                continue
            t = bar * 4 * beat + i * beat / 2
            down = ch == "D"
            v = base_v * (1.0 if i % 2 == 0 else 0.8) * float(rng.uniform(0.85, 1.1))
            strings = None if down else range(2, 6)
            _strum(rng, notes, frets, t, float(np.clip(v, 0.1, 1.0)), down, 2.5 * beat,
                   palm_mute=mute_bar, strings=strings)
    pickup = ["bridge_humbucker", "neck_single", "bridge_single"][int(rng.integers(3))]
    return notes, bars * 4 * beat + 1.0, pickup


def _phrase_arpeggio(rng, key_pc: int):
    """Clean arpeggios: chord tones picked one string at a time, left ringing."""
    bpm = float(rng.uniform(70, 120))
    eighth = 60.0 / bpm / 2
    minor = rng.random() < 0.5
    progs = _PROGRESSIONS_MINOR if minor else _PROGRESSIONS_MAJOR
    prog = progs[int(rng.integers(len(progs)))]
    notes: List[Note] = []
    bars = len(prog) if bpm > 90 else 3
    base_v = float(rng.uniform(0.35, 0.75))
    for bar in range(bars):
        deg, qual = prog[bar % len(prog)]
        frets = _chord_frets(rng, (key_pc + deg) % 12, qual)
        played = [s for s in range(6) if frets[s] is not None]
        bass = played[0]
        upper = played[1:] if len(played) > 1 else played
        order = [bass] + [upper[j % len(upper)] for j in (1, 2, 3, 2, 1, 2, 3)]
        if rng.random() < 0.5:
            order = [bass] + [upper[-1 - (j % len(upper))] for j in range(7)]
        for i, s in enumerate(order):
            t = _humanize(rng, (bar * 8 + i) * eighth, 8)
            v = float(np.clip(base_v * (1.15 if i == 0 else 1.0) * rng.uniform(0.8, 1.15), 0.1, 1.0))
            notes.append(Note(s, t, 8 * eighth, STANDARD_TUNING[s] + frets[s], v,
                              pick_position=0.15 + 0.1 * rng.random()))
    pickup = ["neck_single", "neck_humbucker", "bridge_single"][int(rng.integers(3))]
    return notes, bars * 8 * eighth + 1.5, pickup


def _scale_positions(key_pc: int, scale, lo: int, hi: int, strings=range(6)):
    """All (pitch, string, fret) in the fret window whose pitch class is in the scale."""
    out = []
    for s in strings:
        for f in range(max(lo, 0), min(hi, MAX_FRET) + 1):
            p = STANDARD_TUNING[s] + f
            if (p - key_pc) % 12 in scale:
                out.append((p, s, f))
    out.sort()
    return out


def _phrase_lead(rng, key_pc: int):
    """Lead line in a pentatonic/blues box: bends, vibrato, slides in, hammer-ons and pull-offs."""
    bpm = float(rng.uniform(75, 140))
    beat = 60.0 / bpm
    scale = _SCALES[["minor_pent", "blues", "major_pent", "dorian"][int(rng.integers(4))]]
    pos = (key_pc - 4) % 12
    if pos < 3 or rng.random() < 0.5:
        pos += 12 if pos + 12 <= 17 else 0
    cands = _scale_positions(key_pc, scale, pos - 1, pos + 4, strings=range(1, 6))
    idx = int(rng.integers(len(cands) // 2, len(cands)))
    t = 0.0
    total = float(rng.uniform(7.0, 11.0))
    notes: List[Note] = []
    prev: Optional[Note] = None
    while t < total:
        dur_beats = float(rng.choice([0.25, 0.5, 0.5, 0.75, 1.0, 1.5, 2.0], p=[0.2, 0.3, 0.15, 0.1, 0.1, 0.08, 0.07]))
        if rng.random() < 0.1:
            t += dur_beats * beat  # rest
            prev = None
            continue
        idx = int(np.clip(idx + int(rng.choice([-3, -2, -1, -1, 1, 1, 2, 3])), 0, len(cands) - 1))
        pitch, s, f = cands[idx]
        dur = dur_beats * beat
        v = float(rng.uniform(0.5, 1.0))
        nt = Note(s, _humanize(rng, t, 5), dur * 1.05, float(pitch), v,
                  pick_position=0.1 + 0.1 * rng.random())
        r = rng.random()
        if prev is not None and prev.string == s and abs(prev.pitch - pitch) <= 3 and dur_beats <= 0.75 and r < 0.45:
            nt.legato = True  # hammer-on or pull-off
            nt.velocity = v * 0.7
        elif dur_beats >= 1.0 and s >= 2 and r < 0.45:
            amount = 2.0 if rng.random() < 0.7 else 1.0
            up = float(rng.uniform(0.06, 0.18))
            curve = [(0.0, pitch), (0.03, pitch), (0.03 + up, pitch + amount)]
            if rng.random() < 0.4:  # bend and release
                curve += [(dur * 0.6, pitch + amount), (dur * 0.6 + up, pitch)]
            nt.curve = curve
            nt.vibrato = (0.15, float(rng.uniform(5.0, 6.5)), 0.03 + up + 0.1)
        elif dur_beats >= 1.0:
            nt.vibrato = (float(rng.uniform(0.15, 0.35)), float(rng.uniform(4.5, 6.5)), 0.15)
        elif r < 0.12:
            nt.curve = [(0.0, pitch - float(rng.choice([2, 3, 5]))), (float(rng.uniform(0.05, 0.12)), pitch)]
        notes.append(nt)
        prev = nt
        t += dur
    pickup = ["bridge_humbucker", "neck_humbucker", "bridge_single", "neck_single"][int(rng.integers(4))]
    return notes, t + 1.5, pickup


def _phrase_slide(rng, key_pc: int):
    """Slide lead: long glides along one or two strings, vibrato at the landing notes."""
    bpm = float(rng.uniform(70, 110))
    beat = 60.0 / bpm
    scale = _SCALES["major_pent" if rng.random() < 0.5 else "minor_pent"]
    notes: List[Note] = []
    t = 0.0
    total = float(rng.uniform(7.0, 10.0))
    s = int(rng.integers(2, 6))
    fret = int(rng.integers(2, 8))
    while t < total:
        pitch = STANDARD_TUNING[s] + fret
        dur = beat * float(rng.choice([1.0, 1.5, 2.0, 3.0]))
        nt = Note(s, _humanize(rng, t, 5), dur, float(pitch), float(rng.uniform(0.55, 0.95)),
                  vibrato=(float(rng.uniform(0.15, 0.35)), float(rng.uniform(4.5, 6.0)), 0.2))
        notes.append(nt)
        t += dur
        # slide to the next scale note a few frets away without re-picking, sometimes re-pick
        for _ in range(int(rng.integers(1, 3))):
            cands = [f for f in range(1, 18) if (STANDARD_TUNING[s] + f - key_pc) % 12 in scale
                     and 2 <= abs(f - fret) <= 9]
            if not cands:
                break
            new = int(rng.choice(cands))
            glide = float(rng.uniform(0.08, 0.3))
            d2 = beat * float(rng.choice([1.0, 1.5, 2.0]))
            p0, p1 = STANDARD_TUNING[s] + fret, STANDARD_TUNING[s] + new
            notes.append(Note(s, t, glide + d2, float(p1), nt.velocity * 0.6, legato=True,
                              curve=[(0.0, float(p0)), (glide, float(p1))],
                              vibrato=(0.25, float(rng.uniform(4.5, 6.0)), glide + 0.15)))
            fret = new
            t += glide + d2
        if rng.random() < 0.4:
            s = int(np.clip(s + int(rng.choice([-1, 1])), 1, 5))
    return notes, t + 1.5, ["neck_single", "bridge_single", "neck_humbucker"][int(rng.integers(3))]


def _phrase_jazz(rng, key_pc: int):
    """Jazz comping: ii-V-I shell voicings, short swung chords at low dynamics."""
    bpm = float(rng.uniform(100, 170))
    beat = 60.0 / bpm
    prog = [(2, "m7"), (7, "7"), (0, "maj7"), (0, "maj7")]
    notes: List[Note] = []
    reps = 2 if bpm > 140 else 1
    for bar in range(len(prog) * reps):
        deg, qual = prog[bar % len(prog)]
        pc = (key_pc + deg) % 12
        f_e, f_a = (pc - 4) % 12, (pc - 9) % 12
        shape, f = ("Eshell", f_e) if 2 <= f_e <= 9 or not 2 <= f_a <= 9 else ("Ashell", f_a)
        if f < 2:
            f += 12 if f + 12 <= 12 else 0
        frets = [None if d is None else d + f for d in _SHAPES[(shape, qual)]]
        # Charleston (let the second hit ring to the bar line) or a four-hit comp
        hits = [(0.0, 1.3), (1.5, 2.5)] if rng.random() < 0.6 else [(0.0, 0.9), (1.0, 0.9), (2.5, 0.5), (3.0, 1.0)]
        for pos_beats, len_beats in hits:
            t = (bar * 4 + pos_beats) * beat
            if pos_beats % 1.0:
                t += beat * 0.16  # swing the off-beat
            _strum(rng, notes, frets, t, float(rng.uniform(0.3, 0.65)), True, len_beats * beat * 0.9)
    return notes, len(prog) * reps * 4 * beat + 1.0, "neck_humbucker"


def _phrase_bassline(rng, key_pc: int):
    """Single-note line on the low strings: funk/rock sixteenths with ghosted palm mutes."""
    bpm = float(rng.uniform(85, 125))
    step = 60.0 / bpm / 4
    root = 40 + (key_pc - 4) % 12
    if root > 47:
        root -= 12 if root - 12 >= 40 else 0
    cands = _scale_positions(key_pc, _SCALES["minor_pent"], 0, 7, strings=range(0, 3))
    cands = [c for c in cands if c[0] >= root - 2]
    pattern = rng.random(16)
    notes: List[Note] = []
    reps = int(rng.integers(3, 5))
    idx = 0
    for r in range(reps):
        for i in range(16):
            if pattern[i] < 0.25:
                continue
            t = (r * 16 + i) * step
            ghost = pattern[i] < 0.45
            if i % 4 == 0:
                idx = 0 if rng.random() < 0.5 else idx
            else:
                idx = int(np.clip(idx + int(rng.choice([-1, 0, 1, 2])), 0, len(cands) - 1))
            pitch, s, f = cands[idx] if idx < len(cands) else cands[0]
            notes.append(Note(s, _humanize(rng, t, 4), step * (0.5 if ghost else 1.6), float(pitch),
                              float(rng.uniform(0.2, 0.4) if ghost else rng.uniform(0.6, 1.0)),
                              palm_mute=ghost))
    return notes, reps * 16 * step + 1.0, ["bridge_single", "neck_single", "bridge_humbucker"][int(rng.integers(3))]


_PHRASES = {
    "riff": (_phrase_riff, (-21.0, -17.0)),
    "strum": (_phrase_strum, (-23.0, -18.0)),
    "arpeggio": (_phrase_arpeggio, (-29.0, -22.0)),
    "lead": (_phrase_lead, (-26.0, -20.0)),
    "slide": (_phrase_slide, (-27.0, -21.0)),
    "jazz": (_phrase_jazz, (-28.0, -23.0)),
    "bassline": (_phrase_bassline, (-24.0, -19.0)),
}
PHRASE_KINDS: Tuple[str, ...] = tuple(_PHRASES)


@dataclass(frozen=True)
class PhrasePlan:
    """One phrase of the DI: its kind and key, where it sits, how loud, and its notes."""

    kind: str
    key_pc: int
    start: int  # sample where the phrase begins in the DI
    length: int  # samples, ringing tail included
    level_db: float  # RMS the phrase is scaled to
    pickup: str
    notes: Tuple[Note, ...] = field(repr=False)


def _phrase_order(seed: int) -> List[str]:
    """Kinds in shuffled rounds, so every kind appears in any stretch of ~7 phrases."""
    rng = np.random.default_rng((seed, 7919))
    order: List[str] = []
    for _ in range(64):
        order += [PHRASE_KINDS[i] for i in rng.permutation(len(PHRASE_KINDS))]
    return order


def plan_phrases(seconds: float, sample_rate: int = 48000, seed: int = 0) -> List[PhrasePlan]:
    """The phrases (kind, key, timing, notes) that make up ``synth_di(seconds, sample_rate, seed)``."""
    total = int(round(seconds * sample_rate))
    order = _phrase_order(seed)
    plans: List[PhrasePlan] = []
    start = int(0.25 * sample_rate)
    k = 0
    while start < total:
        rng = np.random.default_rng((seed, k))
        kind = order[k % len(order)]
        fn, (lo, hi) = _PHRASES[kind]
        key_pc = int(rng.integers(12))
        notes, dur, pickup = fn(rng, key_pc)
        # release everything at the end: the player damps the strings
        end = dur
        notes = [nt for nt in notes if nt.onset < end]
        for nt in notes:
            nt.duration = min(nt.duration, end - nt.onset)
        length = int(round((end + TAIL_SECONDS) * sample_rate))
        plans.append(PhrasePlan(kind, key_pc, start, length, float(rng.uniform(lo, hi)), pickup,
                                tuple(notes)))
        gap = float(rng.uniform(0.05, 0.5))
        start += int(round((end + gap) * sample_rate))
        k += 1
    return plans
