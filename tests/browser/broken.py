"""A notebook with one deliberate fault per check of the browser harness, and its control.

The harness passes the real notebooks; that means something only if it fails this one, with
each fault reported in its own cell (:data:`EXPECTED`: failure kind -> cell). The control
(``faults=False``) is the same notebook with every fault left out, cell for cell, and must
pass: so each failure is caused by its fault, not by the widget or the page around it.
"""

from __future__ import annotations

from pathlib import Path

NAME = "broken_widgets.ipynb"
CONTROL_NAME = "control_widgets.ipynb"
ABX_CSV = "widgets_abx_answers.csv"

_SETUP = '''\
import re
import ipywidgets as widgets
import numpy as np
from IPython.display import HTML, display
from ampxfer_lib.notebooks import abx, listening

rate = 8000
t = np.arange(3 * rate) / rate
tone = {"m1": 0.3 * np.sin(2 * np.pi * 220 * t), "m2": 0.3 * np.sin(2 * np.pi * 330 * t)}
good = listening.audio_html(tone["m1"], rate)
print("set up")'''

#: (cell type, control source, broken source); the broken source is None where it is the same.
CELLS = [
    ("markdown", "Each code cell below breaks one thing the browser test checks (or, in the control, does not).", None),
    ("code", _SETUP, None),
    # cell 3: a player without a source
    ("code", "HTML(good)", "HTML('<audio controls src=\"data:audio/wav;base64,\"></audio>')"),
    # cell 4: a player that stops itself as soon as it starts
    ("code", "HTML(good)", "HTML(good.replace('<audio ', '<audio onplaying=\"this.pause()\" ', 1))"),
    # cell 5: a group of players that do not pause each other (no onplay handler)
    ("code", "HTML(f\"<table class='{listening.PLAYER_GROUP_CLASS}'><tr><td>{good}</td><td>{good}</td></tr></table>\")",
     "plain = re.sub(r' onplay=\"[^\"]*\"', '', good)\n"
     "HTML(f\"<table class='{listening.PLAYER_GROUP_CLASS}'><tr><td>{plain}</td><td>{plain}</td></tr></table>\")"),
    # cell 6: an ABX widget whose answer buttons do nothing
    ("code", f"test = abx.AbxTest(('m1', 'm2'), ['c'], 2, {ABX_CSV!r})\n"
             "w = abx.AbxWidget(test, {('c', m): v for m, v in tone.items()}, rate)\n"
             "w",
     f"test = abx.AbxTest(('m1', 'm2'), ['c'], 2, {ABX_CSV!r})\n"
     "w = abx.AbxWidget(test, {('c', m): v for m, v in tone.items()}, rate)\n"
     "for b in w.buttons.values():\n"
     "    b._click_handlers.callbacks.clear()\n"
     "w"),
    # cell 7: a slider whose audio never changes
    ("code", "slider = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description='knob',\n"
             "                             continuous_update=False)\n"
             "player = widgets.Audio(value=listening.encode_audio(tone['m1'], rate, 'wav'), format='wav',\n"
             "                       autoplay=False, loop=False)\n"
             "slider.observe(lambda c: setattr(player, 'value', listening.encode_audio(tone['m1'] * c['new'], rate, 'wav')),\n"
             "               names='value')\n"
             "widgets.VBox([slider, player])",
     "slider = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description='knob',\n"
     "                             continuous_update=False)\n"
     "player = widgets.Audio(value=listening.encode_audio(tone['m1'], rate, 'wav'), format='wav',\n"
     "                       autoplay=False, loop=False)\n"
     "widgets.VBox([slider, player])"),
    # cell 8: a knob player that forgets where it was (no resume handler)
    ("code", "listening.KnobPlayer(lambda k: tone['m1'] * (0.2 + k), rate, knob='gain', value=0.5, held_out=0.5,\n"
             "                     trained=[0, 1])",
     "class Forgetful(listening.KnobPlayer):\n"
     "    def audio_at(self, value):\n"
     "        return re.sub(r' onloadedmetadata=\"[^\"]*\"', '', super().audio_at(value))\n"
     "\n"
     "Forgetful(lambda k: tone['m1'] * (0.2 + k), rate, knob='gain', value=0.5, held_out=0.5, trained=[0, 1])"),
    # cell 9: a JavaScript error in the page
    ("code", "HTML('<b onclick=\"ampxferNoSuchFunction()\">not clicked</b>')",
     "HTML('<img src=\"data:,\" onerror=\"ampxferNoSuchFunction()\">')"),
    # cell 10: an error output (last: Run All stops at it)
    ("code", "print('no error')", "raise RuntimeError('deliberate error for the browser test')"),
]

#: The failure each fault must produce, and where (cells counted from 1, as the harness
#: does). The JavaScript error is reported for the page, not a cell.
EXPECTED = {
    "player-source": "cell 3",
    "player-play": "cell 4",
    "player-exclusive": "cell 5",
    "abx": "cell 6",
    "slider": "cell 7",
    "knob-resume": "cell 8",
    "js-error": "page",
    "cell-error": "cell 10",
}


def write(path: Path, faults: bool = True) -> Path:
    """The broken notebook (or with ``faults=False`` its control) at ``path``; removes the
    ABX answers file beside it, so the answers counted are this run's."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    cells = []
    for kind, control, fault in CELLS:
        src = fault if faults and fault is not None else control
        cells.append(nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src))
    nb.cells = cells
    Path(path).write_text(nbformat.writes(nb))
    csv = Path(path).parent / ABX_CSV
    if csv.exists():
        csv.unlink()
    return Path(path)
