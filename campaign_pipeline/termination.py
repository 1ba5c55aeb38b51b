"""How a task stops early: at its own deadline (``[campaign] timeout_seconds``) or on SIGTERM.

A channel that is told to stop takes no more recipients, lets its requests in flight be
answered and records them in the ledger (so none becomes ``unknown``), and fails the
ordinary way: one FAILED result, which luigi retries like any other failure.

Why the task keeps its own deadline rather than leave it to luigi's ``worker_timeout``:
when that fires, luigi (3.8.1, ``worker.py`` ``_purge_children``) terminates the process and
puts a FAILED result on its result queue *itself*, and it does so again on every pass while
the process is still running its SIGTERM handler, or looks alive (psutil's wait reaps it,
after which multiprocessing's ``is_alive()`` stays true). A process that handles SIGTERM
adds its own FAILED too. luigi matches results by task id alone, so these extra results are
charged to the task's *next* attempt: the retry was reported failed, dropped from luigi's
watch (it ran on outside its timeout), and the run exited 30 although the retry had sent
everything. So each task process stops itself at ``timeout_seconds``, and luigi's
``worker_timeout`` is set a grace period later, as a backstop for a process that hangs.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .exceptions import TimedOutError

_state = {"sender": None, "seconds": 0.0, "armed": False}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def start_deadline(seconds: float) -> None:
    """In a task's process, stop the task once it has run *seconds* (0: never).

    luigi runs every task with a worker_timeout in a process of its own, in its main
    thread; the deadline is this process's, so a retry, a new process, gets a new one.
    """
    if seconds <= 0 or not _main_thread():
        return
    _state.update(seconds=seconds, armed=True)
    signal.signal(signal.SIGALRM, _on_deadline)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def end_deadline() -> None:
    """The task's run() is over: its deadline no longer applies."""
    _state["armed"] = False
    if _main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def _on_deadline(_signum, _frame) -> None:
    if not _state["armed"]:
        return
    reason = f"timed out after {_state['seconds']:g} s ([campaign] timeout_seconds)"
    sender = _state["sender"]
    if sender is None:
        raise TimedOutError(reason)  # not sending: nothing to record, stop where it is
    sender.stop(reason)


@contextlib.contextmanager
def stop_on_sigterm(sender):
    """While *sender* runs, its deadline and SIGTERM (an operator, or luigi's backstop)
    stop it; the requests in flight are answered and recorded before it returns."""
    if not _main_thread():
        yield
        return

    def stop(signum, _frame):
        sender.stop(f"terminated by signal {signum} (an operator, or worker_timeout)")

    _state["sender"] = sender
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        _state["sender"] = None
        signal.signal(signal.SIGTERM, previous)
