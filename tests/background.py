"""Runs that start with the session and go on beside the other tests, each on a cluster of its own (Ray's fake
autoscaler, in namespaces of its own: nothing shared with the suite's cluster). They mostly wait on the autoscaler
and on Ray's timeouts, so the suite does not wait for them; their tests come last and check what they did.

A test marked ``@pytest.mark.background.with_args(prepare)`` (a mark called with a function alone would decorate
it) has its run started when collection ends: ``prepare(folder)`` writes the run's inputs under ``folder`` and
returns its command. The test takes the finished run from the ``background_run`` fixture. The runs go one after another in one thread (two at once would slow each other and the
suite on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "background"
RUN_TIMEOUT_S = 1200  # per run, contended by the rest of the suite (the longest took ~560 s here)
# Each run lets the rest of the suite have the CPUs first: the runs wait on the autoscaler and Ray's timeouts and have
# time to spare; the other tests are the suite's critical path. Linux schedules each session as one group (autogroup,
# the run's session) by the group's nice value; the processes' own nice value counts where there are no autogroups.
# At 3, a run's share against one busy group at 0 is ~1/3 (the kernel's weights: 1024 at 0, 526 at 3).
YIELDING_THE_CPUS = ["sh", "-c", 'echo 3 2>/dev/null >/proc/self/autogroup; exec nice -n 3 "$@"', "background"]


@dataclass
class BackgroundRun:
    """One command run in the background: its folder, and once ``finished`` is set, its exit status and output."""

    folder: Path
    prepare: Callable[[Path], list[str]]
    returncode: int | None = None
    log: str = ""
    finished: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen | None = None

    def run(self, env: dict[str, str]) -> None:
        try:
            command = self.prepare(self.folder)
            # A session of its own: cleanup() ends the whole run (the cluster's namespace ends with its init).
            self.process = subprocess.Popen([*YIELDING_THE_CPUS, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
            self.log = self.process.communicate(timeout=RUN_TIMEOUT_S)[0]
            self.returncode = self.process.returncode
        except Exception as err:  # noqa: BLE001 - reported by the run's test, not lost in a thread
            self.stop()
            self.returncode, self.log = -1, f"{self.log}\nthe background run failed: {err!r}"
        finally:
            self.finished.set()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_runs: dict[str, BackgroundRun] = {}
_root: Path | None = None
_ending = threading.Event()


def _run_in_turn(runs: list[BackgroundRun], env: dict[str, str]) -> None:
    for run in runs:
        if _ending.is_set():
            run.returncode, run.log = -1, "not run: the session ended first"
            run.finished.set()
        else:
            run.run(env)


def start(items: list[pytest.Item]) -> None:
    """Start the background runs of the selected ``items``, in their order, in one thread."""
    global _root
    marked = [item for item in items if item.get_closest_marker(MARKER) and not _skipped(item)]
    if not marked:
        return
    _root = Path(tempfile.mkdtemp(prefix="dlr-background-"))
    for index, item in enumerate(marked):
        folder = _root / f"run{index}"
        folder.mkdir()
        _runs[item.nodeid] = BackgroundRun(folder, item.get_closest_marker(MARKER).args[0])
    # The environment as the session starts, before fixtures point it at the suite's own cluster; each run's cluster
    # is its own.
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    threading.Thread(target=_run_in_turn, args=(list(_runs.values()), env), name="background-runs",
                     daemon=True).start()


def _skipped(item: pytest.Item) -> bool:
    """Whether a skip or a true skipif condition marks ``item`` (its run would be wasted)."""
    return any(marker.name == "skip" or (marker.name == "skipif" and marker.args and marker.args[0] is True)
               for marker in item.iter_markers())


def finished_run(item: pytest.Item) -> BackgroundRun:
    """``item``'s run, once it has finished."""
    run = _runs[item.nodeid]
    assert run.finished.wait(timeout=RUN_TIMEOUT_S * len(_runs)), f"{item.nodeid}: its background run never ended"
    return run


def cleanup() -> None:
    """End the runs still going (a session stopped early) and remove their folders."""
    _ending.set()
    for run in _runs.values():
        run.stop()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
