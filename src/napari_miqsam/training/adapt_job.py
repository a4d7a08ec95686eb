"""An adaptation (``training.adapt.adapt``) in a separate process, for a GUI that must never block.

The process is spawned (a fresh interpreter: no fork of a Qt application) and reports through a
queue; the GUI polls it from a timer::

    job = AdaptJob(data=..., base=..., out=..., train="decoder").start()
    for event in job.poll():   # ("log", line) | ("progress", step, total_steps, minutes)
        ...                    # | ("done", AdaptResult) | ("error", exception)
    job.cancel()               # checked by the training every step: no weights file is left

Errors arrive as the project's exceptions (``errors.CancelledError`` after a cancel); a process that
dies without a word (killed, out of memory) gives ``("error", MiqsamError(...))`` with its exit code.
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import queue as queue_mod
import shutil
from pathlib import Path
from typing import Any

from ..errors import MiqsamError

__all__ = ["AdaptJob"]


def _run(kwargs: dict, events, cancel_event) -> None:
    from .adapt import adapt

    def send(*event: Any) -> None:
        events.put(event)

    try:
        result = adapt(**kwargs, progress=lambda s, t, m: send("progress", s, t, m), cancel=cancel_event.is_set,
                       log=lambda line: send("log", str(line)))
        send("done", result)
    except MiqsamError as exc:
        send("error", exc)
    except BaseException as exc:  # noqa: BLE001 - an unexpected failure still reaches the GUI as a sentence
        send("error", MiqsamError(f"the adaptation failed: {type(exc).__name__}: {exc}"))


def _remove_partial(out: Path) -> None:
    """Remove what ``adapt`` writes beside ``out`` while it runs (``OUT.lock``, ``.OUT.adapt-*``,
    atomic writes' ``.NAME.tmp-*``) and a card without its weights."""
    for leftover in [out.with_name(out.name + ".lock"), *out.parent.glob(f".{glob.escape(out.stem)}.*")]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if not out.exists():
        out.with_suffix(".json").unlink(missing_ok=True)


class AdaptJob:
    """``adapt(**kwargs)`` in a spawned process; see the module docstring."""

    def __init__(self, **adapt_kwargs: Any):
        for bad in ("progress", "cancel", "log"):
            if bad in adapt_kwargs:
                raise TypeError(f"AdaptJob reports {bad} through poll()/cancel(); do not pass {bad}=")
        ctx = mp.get_context("spawn")
        self._events = ctx.Queue()
        self._cancel = ctx.Event()
        self._process = ctx.Process(target=_run, args=(adapt_kwargs, self._events, self._cancel), daemon=True)
        self._finished = False
        out = adapt_kwargs.get("out")
        self._out = Path(out).expanduser().absolute() if out is not None else None

    def start(self) -> "AdaptJob":
        self._process.start()
        return self

    @property
    def running(self) -> bool:
        """True until the final ("done" or "error") event has been polled."""
        return not self._finished

    def cancel(self) -> None:
        """Ask the training to stop at its next step; the job then ends with a CancelledError event."""
        self._cancel.set()

    def poll(self, timeout: float = 0.0) -> list[tuple]:
        """The events since the last poll (waits up to ``timeout`` s for the first one)."""
        out: list[tuple] = []
        block = timeout > 0
        while True:
            try:
                event = self._events.get(block, timeout) if block else self._events.get_nowait()
            except queue_mod.Empty:
                break
            block = False
            out.append(event)
            if event[0] in ("done", "error"):
                self._finished = True
        if not self._finished and not self._process.is_alive() and self._events.empty():
            self._process.join()
            self._finished = True
            out.append(("error", MiqsamError(f"the adaptation process ended unexpectedly (exit code "
                                             f"{self._process.exitcode}); no weights were written")))
        return out

    def wait(self, timeout: float | None = None) -> list[tuple]:
        """Every event until the job ends (or ``timeout`` s pass)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        events: list[tuple] = []
        while self.running and (end is None or time.monotonic() < end):
            events += self.poll(0.2)
        return events

    def terminate(self) -> None:
        """Kill the process (a GUI that closes); prefer :meth:`cancel`, which cleans up. What a
        killed run leaves beside its output (its lock, hidden run folder, temporary files, a card
        whose weights never arrived) is removed; finished weights are kept."""
        killed = self._process.is_alive()
        if killed:
            self._process.terminate()
        self._process.join(5)
        self._finished = True
        if killed and self._out is not None:
            _remove_partial(self._out)
