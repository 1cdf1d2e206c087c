"""Notebooks in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

What a user does, checked: open a notebook, Run All, then use what it shows. For one
notebook :meth:`Lab.check_notebook` returns a :class:`Report` of :class:`Failure` s:

* ``run``: Run All did not finish (a kernel dialog, a hung cell);
* ``cell-error``: a cell shows an error output;
* ``js-error``: the page logged a JavaScript error (console error or uncaught exception);
* ``player-source``: an audio player has no playable source (no duration, or a media error);
* ``player-play``: a player does not play on a click;
* ``player-exclusive``: in a group of players that should pause each other
  (``ampxfer-players``), starting one left another playing;
* ``abx``: the ABX widget does not advance through its trials, double-records a double
  click, does not reveal at the end, does not append its answers to the CSV, or offers no
  new session;
* ``slider``: moving a slider does not change the audio beside it (or the new one does not play);
* ``knob-resume``: a knob player (``ampxfer-knob``) stops when the knob moves.

Screenshots of each notebook's interactive parts go to the output folder. Harness facts
this relies on: a fresh JupyterLab may ask for a kernel ("Select Kernel") and then Run All
does nothing, so the dialog is answered; the notebook is rendered without windowing (every
cell in the page, set in a settings folder of the run's own), and every element is
scrolled into view before it is used; notebooks are opened with ``?reset`` so no restored
layout interferes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

REPO = Path(__file__).resolve().parents[2]
#: An ABX answer sooner than this after its trial loaded is refused by the widget
#: (ampxfer_lib.notebooks.listening.MIN_ANSWER_SECONDS); the harness waits a little longer.
ANSWER_PAUSE_S = 0.9

# JupyterLab settings of the run (a settings folder of its own, the user's are not touched):
# every cell in the page; the kernel started without asking; no news or update checks (no
# network here, and their notices cover the notebook).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


@dataclass(frozen=True)
class Failure:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} [{self.where}]: {self.detail}"


@dataclass
class Report:
    notebook: str
    failures: List[Failure] = field(default_factory=list)
    checked: Dict[str, int] = field(default_factory=dict)
    screenshots: List[Path] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, kind: str, where: str, detail: str) -> None:
        self.failures.append(Failure(kind, where, detail))

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    @property
    def kinds(self) -> set:
        return {f.kind for f in self.failures}

    def summary(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.checked.items())) or "nothing"
        head = f"{self.notebook}: checked {counts} in {self.seconds:.0f} s"
        if not self.failures:
            return head + "; no failures"
        return head + f"; {len(self.failures)} failure(s):\n" + "\n".join(f"  {f}" for f in self.failures)


def find_chromium() -> str:
    """The Chromium to drive: $AMPXFER_CHROMIUM, else Debian's ``chromium`` on PATH."""
    env = os.environ.get("AMPXFER_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"AMPXFER_CHROMIUM={env}: no such file")
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no chromium on PATH; install it with `apt-get install -y chromium` "
                            "(or set AMPXFER_CHROMIUM to a Chromium/Chrome executable)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the server

@contextlib.contextmanager
def jupyterlab(root: Path, work: Path, env: Optional[Dict[str, str]] = None,
               timeout: float = 90.0) -> Iterator[str]:
    """JupyterLab serving ``root`` on 127.0.0.1 (free port, random token) with this Python as
    its kernel; yields the base URL with the token. Its config, data, runtime and settings
    folders are under ``work``; its log is ``work/jupyterlab.log``."""
    port, token = free_port(), secrets.token_hex(16)
    dirs = {k: work / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                          "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for name, values in LAB_SETTINGS.items():
        path = dirs["JUPYTERLAB_SETTINGS_DIR"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    # The project's interpreter as the only python3 kernel, whatever the machine has elsewhere.
    spec = dirs["JUPYTER_DATA_DIR"] / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    run_env = dict(os.environ, **{k: str(v) for k, v in dirs.items()}, **(env or {}))
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), run_env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}",
           # no PyPI look-ups from the extension manager (no network; it would log errors)
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI runs as root
    log = open(work / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see {work / 'jupyterlab.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; see {work / 'jupyterlab.log'}")
            time.sleep(0.5)
        yield f"{base}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- the page

# Which cell an element is in, counted from 1 as a person counts them. (Elements are
# addressed by their index among the notebook's <audio> elements, looked up afresh each time,
# so Python holds no handle that a re-render would invalidate.)
_JS_CELL_OF = """(el) => {
  const cell = el.closest('.jp-Cell');
  if (!cell) return '?';
  const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
  return 'cell ' + (cells.indexOf(cell) + 1);
}"""


class Lab:
    """Headless Chromium on a JupyterLab server; checks notebooks one after another, each in
    a page of its own."""

    def __init__(self, playwright, url: str, root: Path, shots: Path, chromium: Optional[str] = None):
        self.url, self.root, self.shots = url, root, shots
        self.shots.mkdir(parents=True, exist_ok=True)
        self.browser = playwright.chromium.launch(
            executable_path=chromium or find_chromium(), headless=True,
            # Silent, but otherwise the browser's own rules: a player that only plays after a
            # real click, as a person's browser would, is what is checked.
            args=["--mute-audio"])
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        self.js_errors: List[str] = []

    def close(self) -> None:
        self.context.close()
        self.browser.close()

    # ----------------------------------------------------------------- running a notebook

    def _api(self, method: str, path: str, body: Optional[dict] = None):
        base, token = self.url.split("?")
        req = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"token {token.split('=', 1)[1]}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
        return json.loads(data) if data else None

    def open(self, notebook: str):
        """The notebook in a new page, opened with ``?reset`` (no restored tabs)."""
        page = self.context.new_page()
        self.js_errors = []
        page.on("console", lambda m: self.js_errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.js_errors.append(f"uncaught: {e}"))
        base, token = self.url.split("?")
        page.goto(f"{base}/lab/tree/{notebook}?reset&{token}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        return page

    def close_notebook(self, page) -> None:
        """Close the page and shut its kernel down (a finished notebook's kernel holds memory)."""
        page.close()
        for s in self._api("GET", "/api/sessions") or []:
            self._api("DELETE", f"/api/sessions/{s['id']}")

    def _answer_kernel_dialog(self, page) -> bool:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in (dialog.first.inner_text() or ""):
            page.locator(".jp-Dialog .jp-mod-accept").first.click()
            return True
        return False

    def _kernel_idle(self, page) -> bool:
        return page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0

    def _kernel_ready(self, page, notebook: str) -> bool:
        """The notebook's kernel is running and idle, as the server and the page see it. The
        page alone is not enough: its indicator reads idle before any kernel exists, and a
        Run All then starts a second kernel while the first is starting; the widgets may
        then stay with the one shut down ("Exception opening new comm")."""
        sessions = [s for s in self._api("GET", "/api/sessions") or [] if s.get("path") == notebook]
        return (len(sessions) == 1 and (sessions[0].get("kernel") or {}).get("execution_state") == "idle"
                and self._kernel_idle(page))

    def _prompts(self, page) -> List[str]:
        return page.eval_on_selector_all(".jp-Notebook .jp-CodeCell .jp-InputPrompt",
                                         "els => els.map(e => e.textContent.trim())")

    def run_all(self, page, notebook: str, report: Report, timeout: float = 600.0) -> bool:
        """Run All from the Run menu; True once every code cell ran (or one failed: Run All
        stops there). Answers a "Select Kernel" dialog and retries when nothing started."""
        deadline = time.monotonic() + 60
        while not self._kernel_ready(page, notebook):
            self._answer_kernel_dialog(page)
            if time.monotonic() > deadline:
                report.fail("run", "kernel", "the kernel did not become idle within 60 s of opening the notebook")
                return False
            time.sleep(0.5)
        time.sleep(1.0)  # let the front end finish connecting to it (the widget manager among others)
        for attempt in range(2):
            self._menu(page, "Run", "runmenu:run-all")
            started = time.monotonic()
            while time.monotonic() - started < 20:
                self._answer_kernel_dialog(page)
                if any(p not in ("[ ]:", "") for p in self._prompts(page)):
                    break
                time.sleep(0.3)
            else:
                continue  # Run All did nothing (a dialog ate it): once more
            break
        else:
            report.fail("run", "Run All", "no cell started within 20 s of Run All, twice")
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            prompts = self._prompts(page)
            busy = any("*" in p for p in prompts)
            # Run All stops at a failing cell, leaving the rest unnumbered
            if not busy and self._kernel_idle(page) and (all(re.match(r"\[\d+\]:", p) for p in prompts) or
                                                         self._stopped_at_error(page)):
                return True
            time.sleep(1.0)
        report.fail("run", "Run All", f"cells still running or queued after {timeout:.0f} s: {self._prompts(page)}")
        return False

    def _stopped_at_error(self, page) -> bool:
        return page.evaluate("""() => Array.from(document.querySelectorAll(
            '.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]'))
            .some(e => e.textContent.includes('Traceback (most recent call last)'))""")

    # ----------------------------------------------------------------- checks

    def check_notebook(self, notebook: str, abx_csv: Optional[Path] = None, timeout: float = 600.0) -> Report:
        """Open ``notebook`` (relative to the server root), Run All, and check everything in it."""
        t0 = time.monotonic()
        report = Report(notebook)
        stem = Path(notebook).stem
        page = self.open(notebook)
        try:
            if self.run_all(page, notebook, report, timeout):
                self.check_cell_errors(page, notebook, report)
                self.check_players(page, report)
                self.check_exclusive_groups(page, report, stem)
                self.check_abx(page, report, stem, abx_csv)
                self.check_sliders(page, report, stem)
            self._shot(page, page.locator(".jp-NotebookPanel").first, f"{stem}_page", report, full=True)
        finally:
            for e in self.js_errors:
                report.fail("js-error", "page", e)
            self.close_notebook(page)
        report.seconds = time.monotonic() - t0
        return report

    def _shot(self, page, locator, name: str, report: Report, full: bool = False) -> None:
        path = self.shots / f"{name}.png"
        try:
            if full:
                page.screenshot(path=str(path), full_page=True)
            else:
                locator.scroll_into_view_if_needed()
                locator.screenshot(path=str(path))
            report.screenshots.append(path)
        except Exception as exc:  # a screenshot is for people; its failure is not the notebook's
            print(f"screenshot {name} failed: {exc}", file=sys.stderr)

    def _menu(self, page, menu: str, command: str) -> None:
        page.locator(".lm-MenuBar-item", has_text=menu).first.click()
        page.locator(f".lm-Menu-item[data-command='{command}']").first.click()

    def save(self, page, notebook: str, report: Report) -> Optional[dict]:
        """File > Save; returns the saved notebook (JSON), or None after reporting why not."""
        path = self.root / notebook
        before = path.stat().st_mtime_ns
        self._menu(page, "File", "docmanager:save")
        if not _wait_for(lambda: path.stat().st_mtime_ns != before, 20):
            report.fail("run", "save", f"File > Save did not write {path}")
            return None
        time.sleep(0.5)  # the server writes atomically; let it finish before reading
        return json.loads(path.read_text())

    def check_cell_errors(self, page, notebook: str, report: Report) -> None:
        """Error outputs, read from the notebook as saved (JupyterLab draws an error like
        stderr text, so the page alone does not tell them apart)."""
        saved = self.save(page, notebook, report)
        if saved is None:
            return
        for i, cell in enumerate(saved["cells"]):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    report.fail("cell-error", f"cell {i + 1}", f"{out.get('ename')}: {out.get('evalue')}")
        report.count("code cells", sum(c["cell_type"] == "code" for c in saved["cells"]))

    def _audio_state(self, page, index: int) -> dict:
        return page.evaluate("""(i) => {
          const a = document.querySelectorAll('.jp-Notebook audio')[i];
          if (!a) return null;
          return {ready: a.readyState, duration: a.duration, paused: a.paused, ended: a.ended, time: a.currentTime,
                  error: a.error ? a.error.code : null, src: a.currentSrc || a.src || '',
                  knob: a.closest('.ampxfer-knob') !== null, group: a.closest('.ampxfer-players') !== null};
        }""", index)

    def _wait_audio(self, page, index: int, ok, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self._audio_state(page, index)
            if state is None or ok(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def _click_play(self, page, index: int) -> None:
        """A real mouse click on the player's play button (the left end of Chrome's controls)."""
        audio = page.locator(".jp-Notebook audio").nth(index)
        audio.scroll_into_view_if_needed()
        box = audio.bounding_box()
        page.mouse.click(box["x"] + 18, box["y"] + box["height"] / 2)

    def _pause_all(self, page) -> None:
        page.evaluate("() => document.querySelectorAll('.jp-Notebook audio').forEach(a => a.pause())")

    def check_player(self, page, index: int, report: Report, where: str) -> bool:
        """Playable source (duration > 0, no media error), and playing after a click."""
        page.locator(".jp-Notebook audio").nth(index).scroll_into_view_if_needed()
        # a network error (2) on a data URI gets one reload from the player itself: wait it out
        state = self._wait_audio(page, index, lambda s: s["error"] not in (None, 2) or
                                 (s["error"] is None and s["ready"] >= 1 and s["duration"] > 0), 10)
        if state is None:
            report.fail("player-source", where, "the player disappeared")
            return False
        if state["error"] is not None or not (state["duration"] and state["duration"] > 0):
            report.fail("player-source", where, f"no playable source (media error {state['error']}, "
                        f"duration {state['duration']}, src {state['src'][:40]!r})")
            return False
        self._click_play(page, index)
        state = self._wait_audio(page, index, lambda s: not s["paused"] and s["time"] > 0, 5)
        if state is None or state["paused"] or not state["time"] > 0:
            report.fail("player-play", where, f"does not play on a click (paused {state and state['paused']}, "
                        f"position {state and state['time']})")
            return False
        return True

    def check_players(self, page, report: Report) -> None:
        n = page.locator(".jp-Notebook audio").count()
        for i in range(n):
            where = page.locator(".jp-Notebook audio").nth(i).evaluate(_JS_CELL_OF) + f", player {i + 1}"
            self.check_player(page, i, report, where)
            self._pause_all(page)
        report.count("players", n)

    def check_exclusive_groups(self, page, report: Report, stem: str) -> None:
        """In each ``ampxfer-players`` group of two or more players, starting the second
        pauses the first."""
        groups = page.evaluate("""() => {
          const all = Array.from(document.querySelectorAll('.jp-Notebook audio'));
          return Array.from(document.querySelectorAll('.jp-Notebook .ampxfer-players'))
            .map(g => Array.from(g.querySelectorAll('audio')).map(a => all.indexOf(a)));
        }""")
        for k, members in enumerate(groups):
            if len(members) < 2:
                continue
            first, second = members[0], members[1]
            where = page.locator(".jp-Notebook audio").nth(first).evaluate(_JS_CELL_OF) + \
                f", players {first + 1} and {second + 1}"
            self._pause_all(page)
            # looping, the first cannot stop by reaching its end: paused means paused by the other
            page.evaluate("(i) => { document.querySelectorAll('.jp-Notebook audio')[i].loop = true; }", first)
            self._click_play(page, first)
            self._wait_audio(page, first, lambda st: not st["paused"] and st["time"] > 0, 5)
            self._click_play(page, second)
            self._wait_audio(page, second, lambda st: not st["paused"], 5)
            state = self._wait_audio(page, first, lambda st: st["paused"], 1)
            if state is None or not state["paused"]:
                report.fail("player-exclusive", where, "starting a player left another of its group playing")
            page.evaluate("(i) => { document.querySelectorAll('.jp-Notebook audio')[i].loop = false; }", first)
            self._pause_all(page)
            if not page.locator(".jp-Notebook .ampxfer-players").nth(k).evaluate("g => g.matches('.ampxfer-abx')"):
                self._shot(page, page.locator(".jp-Notebook .ampxfer-players").nth(k), f"{stem}_players{k + 1}", report)
            report.count("player groups")

    # ----------------------------------------------------------------- ABX

    def _abx_status(self, widget) -> str:
        return (widget.locator(".widget-html").first.inner_text() or "").strip()

    def check_abx(self, page, report: Report, stem: str, abx_csv: Optional[Path]) -> None:
        widgets = page.locator(".jp-Notebook .ampxfer-abx")
        for w in range(widgets.count()):
            widget = widgets.nth(w)
            where = widget.evaluate(_JS_CELL_OF) + " ABX"
            widget.scroll_into_view_if_needed()
            self._shot(page, widget, f"{stem}_abx_start", report)
            status = self._abx_status(widget)
            m = re.match(r"Trial 1 of (\d+) \u2014 ", status)
            if not m:
                report.fail("abx", where, f"the status line does not start a test: {status!r}")
                continue
            n = int(m.group(1))
            rows_before = _csv_rows(abx_csv)
            if not self._abx_session(page, widget, n, report, where, stem, first=True):
                continue
            rows_after = _csv_rows(abx_csv)
            if abx_csv is not None and rows_after - rows_before != n:
                report.fail("abx", where, f"{n} answers given, {rows_after - rows_before} row(s) added to {abx_csv}")
            again = widget.locator("button", has_text="New session")
            if not again.count() or not again.first.is_visible():
                report.fail("abx", where, "no new-session button after the last trial")
                continue
            again.first.click()
            if not _wait_for(lambda: self._abx_status(widget).startswith(f"Trial 1 of {n} "), 10):
                report.fail("abx", where, f"the new-session button did not start a session: {self._abx_status(widget)!r}")
                continue
            self._shot(page, widget, f"{stem}_abx_new_session", report)
            report.count("ABX sessions")

    def _abx_session(self, page, widget, n: int, report: Report, where: str, stem: str, first: bool) -> bool:
        for trial in range(1, n + 1):
            buttons = [widget.locator("button", has_text=f"X is {k}").first for k in ("A", "B")]
            if not _wait_for(lambda: all(b.is_enabled() for b in buttons), 10):
                report.fail("abx", where, f"trial {trial}: the answer buttons stay disabled")
                return False
            time.sleep(ANSWER_PAUSE_S)
            if trial == 1:
                # A double click must count once: the second click lands on trial 2, just loaded.
                buttons[trial % 2].dblclick()
            else:
                buttons[trial % 2].click()
            expect = f"Trial {trial + 1} of {n} " if trial < n else "Finished:"
            if not _wait_for(lambda: self._abx_status(widget).startswith(expect), 10):
                report.fail("abx", where, f"trial {trial}: answering did not lead to {expect!r} "
                            f"(status {self._abx_status(widget)!r})")
                return False
        time.sleep(1.0)  # a stray second click would have been handled by now
        status = self._abx_status(widget)
        if not status.startswith("Finished:"):
            report.fail("abx", where, f"after {n} answers the status is {status!r}, not the score")
            return False
        heads = widget.locator("th").all_inner_texts()
        if [h.strip() for h in heads] != ["Trial", "Clip", "A was", "B was", "X was", "You said X is", "Result"]:
            report.fail("abx", where, f"the reveal table's columns are {heads}")
            return False
        rows = widget.locator("tbody tr").count()
        if rows != n:
            report.fail("abx", where, f"the reveal table has {rows} rows for {n} trials")
            return False
        self._shot(page, widget, f"{stem}_abx_reveal", report)
        return True

    # ----------------------------------------------------------------- sliders

    def _output_audio(self, slider) -> List[dict]:
        return slider.evaluate("""(s) => {
          const out = s.closest('.jp-OutputArea-output') || s.parentElement;
          const all = Array.from(document.querySelectorAll('.jp-Notebook audio'));
          return Array.from(out.querySelectorAll('audio')).map(a => ({index: all.indexOf(a), src: a.currentSrc || a.src}));
        }""")

    def _move(self, page, slider, value: str) -> Optional[int]:
        """Type ``value`` into the slider's readout (Enter); the index of the audio beside it
        once that audio has changed, or None when it did not within 20 s."""
        before = [a["src"] for a in self._output_audio(slider)]
        readout = slider.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
        page.keyboard.press("Enter")
        if not _wait_for(lambda: [a["src"] for a in self._output_audio(slider)] != before, 20):
            return None
        return self._output_audio(slider)[0]["index"]

    def check_sliders(self, page, report: Report, stem: str) -> None:
        """Each slider: type a new value into its readout; the audio of its output changes and
        plays. A knob player (``ampxfer-knob``) playing when the knob moves plays on; one
        paused at some position is, after the next move, at that position."""
        sliders = page.locator(".jp-Notebook .widget-slider")
        for s in range(sliders.count()):
            slider = sliders.nth(s)
            where = slider.evaluate(_JS_CELL_OF) + " slider"
            slider.scroll_into_view_if_needed()
            before = self._output_audio(slider)
            if not before:
                report.fail("slider", where, "no audio player beside the slider")
                continue
            index = before[0]["index"]
            knob = self._audio_state(page, index)["knob"]
            self._pause_all(page)
            playing = self.check_player(page, index, report, where + " (before the move)")
            if playing:
                time.sleep(0.3)
            old = (slider.locator(".widget-readout").first.inner_text() or "").strip()
            new = "0.2" if old not in ("0.2", "0.20") else "0.8"
            index = self._move(page, slider, new)
            if index is None:
                report.fail("slider", where, f"moving the slider from {old} to {new} did not change the audio")
                continue
            if knob and playing:
                # 10 s: the kernel renders the new setting first, slow on a loaded 2-core machine
                state = self._wait_audio(page, index, lambda st: not st["paused"] and st["time"] > 0, 10)
                if state is None or state["paused"]:
                    report.fail("knob-resume", where, "the knob player stopped when the knob moved")
                else:
                    # paused part-way, then moved: the new rendering is cued at the same place
                    _wait_for(lambda: self._audio_state(page, index)["time"] > 0.2, 3, 0.05)
                    page.evaluate("(i) => document.querySelectorAll('.jp-Notebook audio')[i].pause()", index)
                    at = self._audio_state(page, index)["time"]
                    index = self._move(page, slider, "0.9" if new == "0.2" else "0.1")
                    state = index is not None and self._wait_audio(page, index, lambda st: st["ready"] >= 1 and
                                                                   abs(st["time"] - at) < 0.05, 5)
                    if not state or abs(state["time"] - at) >= 0.05 or not state["paused"]:
                        report.fail("knob-resume", where, f"paused at {at:.2f} s, the knob moved: the new rendering "
                                    f"is at {state and round(state['time'], 2)} s (paused {state and state['paused']})")
                    if index is None:
                        continue
            self._shot(page, slider.locator("xpath=ancestor::*[contains(@class,'jp-OutputArea-output')][1]"),
                       f"{stem}_slider{s + 1}", report)
            self._pause_all(page)
            self.check_player(page, index, report, where + " (after the move)")
            self._pause_all(page)
            report.count("sliders")


def _wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def _csv_rows(path: Optional[Path]) -> int:
    if path is None or not path.exists():
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))
