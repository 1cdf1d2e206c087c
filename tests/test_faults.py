"""Every case of the fault catalogue (tests/support/faults.py) gets its expected answer.

In-process through ``cli.main`` (the notebooks' cases through the library call), each case
with its own read-only fixture files: the exit status, the single ``error: FILE: what; fix``
line and no traceback, the warnings recorded, nothing written to the output on an error
(a train.log at most), and every source hashing the same afterwards and never opened for
writing. A few cases also run through the real command line, and ``--debug`` shows the
traceback the plain run hides.
"""

from __future__ import annotations

import os
import stat

import pytest

from tests.support import faults
from ampxfer_lib.errors import AmpxferError


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return faults.Fixtures(tmp_path_factory.mktemp("fault_fixtures"))


def test_the_catalogue_covers_every_entry_point_and_kind():
    entries = {c.entry for c in faults.CASES}
    assert entries == {"prepare", "train", "render", "evaluate", "export", "import", "notebook"}
    kinds = {(c.entry, c.kind) for c in faults.CASES}
    assert {("prepare", "error"), ("prepare", "warning"), ("prepare", "accepted"), ("train", "error"),
            ("train", "warning"), ("render", "error"), ("notebook", "error")} <= kinds
    warned = {w for c in faults.CASES for w in c.expected.warnings}
    assert {"clipping", "dc_offset", "bypass", "inverted_polarity"} <= warned
    assert all(c.expected.error for c in faults.CASES if c.kind == "error")
    assert len({c.name for c in faults.CASES}) == len(faults.CASES)


@pytest.mark.parametrize("case", faults.CASES, ids=lambda c: c.name)
def test_case_gets_its_expected_answer(case, fx, tmp_path):
    result = faults.run_case(case, fx, tmp_path / "case")
    assert faults.check_result(case, result) == []
    # the sources really were read-only (for a user without root, writing would have failed)
    for path in result.source_hashes_before:
        assert not stat.S_IMODE(os.stat(path).st_mode) & stat.S_IWUSR, path


def _by_name(name):
    return next(c for c in faults.CASES if c.name == name)


def test_the_checker_catches_wrong_answers(fx, tmp_path):
    """A case whose command misbehaves is reported: the catalogue's checks can fail."""
    case = _by_name("silent_target")
    result = faults.run_case(case, fx, tmp_path / "a")
    assert faults.check_result(case, result) == []
    bad = faults.Result(0, "", "", result.setup, result.source_hashes_before, result.out_before)
    assert any("exit 0" in p for p in faults.check_result(case, bad))
    traced = faults.Result(2, "", "Traceback (most recent call last):\nerror: x", result.setup,
                           result.source_hashes_before, result.out_before)
    assert any("traceback" in p for p in faults.check_result(case, traced))
    # an output written on error, a changed source, a source opened for writing
    result.setup.out.mkdir()
    (result.setup.out / "train_input.wav").write_bytes(b"x")
    src = result.setup.sources[1]
    os.chmod(src, 0o644)
    with open(src, "ab") as f:
        f.write(b"\0")
    problems = faults.check_result(case, result)
    assert any("output was created" in p for p in problems) and any("source files changed" in p for p in problems)
    with faults.WriteGuard([src]) as guard:
        with open(src, "r+b"):
            pass
    assert guard.violations and "open(" in guard.violations[0]


@pytest.mark.parametrize("name", ["rate_mismatch", "init_hidden_mismatch", "render_input_nan", "export_nam_skip"])
def test_debug_shows_the_traceback(name, fx, tmp_path):
    setup = _by_name(name).build(fx, tmp_path)
    with pytest.raises(AmpxferError):
        faults.run_inprocess(setup.argv, debug=True)


@pytest.mark.parametrize("name", ["stereo_differs", "clipping"])
def test_real_command_line(name, fx, tmp_path):
    case = _by_name(name)
    result = faults.run_case(case, fx, tmp_path / "case", mode="subprocess")
    assert faults.check_result(case, result) == []


def test_real_command_line_debug_traceback(fx, tmp_path):
    setup = _by_name("nan_samples").build(fx, tmp_path)
    code, _, err = faults.run_subprocess(setup.argv, debug=True)
    assert code != 0 and "Traceback" in err and "AudioError" in err
