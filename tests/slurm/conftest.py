"""The local SLURM cluster of the ``slurm`` tests, and CI's rule that they may not be skipped.

``slurm_cluster`` brings up ``scripts/slurm-local.sh`` (installing SLURM when it is missing and
we are root) and stops it at the end if it started it. Where SLURM cannot start here (not root
and not installed, no package mirror, ...) the tests skip with the script's reason. With
``GAITGL_REQUIRE_SLURM=1`` (set by CI) a skipped or missing ``slurm`` test fails the session.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
#: The script's "cannot start SLURM here" exit code (any other failure is a test failure).
CANNOT_START = 3

_skipped: list[str] = []
_passed: list[str] = []


def _required() -> bool:
    return os.environ.get("GAITGL_REQUIRE_SLURM", "") not in ("", "0")


def _script(command: str, state: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command, state],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """A running one-node cluster; yields its state dir, with ``SLURM_CONF`` exported."""
    # The script's own default, so that a cluster brought up by hand (or by CI) is reused.
    default = Path(os.environ.get("TMPDIR") or "/tmp") / "gaitgl-slurm"
    state = os.environ.get("SLURM_LOCAL_DIR") or str(default)
    was_up = _script("status", state).returncode == 0
    start = time.monotonic()
    proc = _script("up", state)
    if proc.returncode == CANNOT_START:
        reason = f"SLURM cannot start here: {proc.stderr.strip()}"
        if _required():
            pytest.fail(reason + " (GAITGL_REQUIRE_SLURM is set)")
        pytest.skip(reason)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"local SLURM cluster up in {time.monotonic() - start:.1f} s ({state})")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(Path(state) / "slurm.conf")
    try:
        yield Path(state)
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not was_up:
            _script("down", state)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "slurm" not in report.keywords:
        return
    if report.skipped:
        _skipped.append(report.nodeid)
    elif report.when == "call" and report.passed:
        _passed.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``GAITGL_REQUIRE_SLURM``, a skipped (or no) ``slurm`` test fails the run."""
    if not _required() or exitstatus not in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    if _skipped or not _passed:
        print(
            f"\nGAITGL_REQUIRE_SLURM: {len(_skipped)} slurm test(s) skipped, "
            f"{len(_passed)} passed; CI needs them all to run: {_skipped}"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
