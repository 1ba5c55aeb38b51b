"""Running the campaign from cron and for backfills (``make daily``, ``make backfill``).

    campaign-run daily [--date 2026-11-25] [--campaign NAME]
    campaign-run backfill --start 2026-11-01 --end 2026-11-07 [--campaign NAME]
    campaign-run ping [--wait 15]

``daily`` and ``backfill`` use the central scheduler when one answers at
``--scheduler-host``/``--scheduler-port`` (``$SCHEDULER_HOST``/``$SCHEDULER_PORT``, default
127.0.0.1:8082) and luigi's local scheduler otherwise. They append luigi's output to a log
file named for today under ``--log-dir`` and exit with luigi's ``[retcode]`` code. Dates
outside ``[schedule] start_date``..``end_date`` are refused (exit 2) before anything runs.
One run of a campaign at a time: the run lock lasts as long as any process of the run, and
SIGTERM or SIGINT stops the run cleanly (see :class:`PassOn`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import luigi.retcodes
import psutil

from .config import pipeline as campaign_config
from .config import schedule

USAGE_ERROR = 2


def scheduler_answers(host: str, port: int, wait: float = 0.0) -> bool:
    """True when something accepts connections at host:port, trying for up to *wait* s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def daily_command(date: datetime.date, campaign: str) -> list[str]:
    return ["DailyCampaign", "--date", date.isoformat(), "--campaign", campaign]


def backfill_command(start: datetime.date, end: datetime.date, campaign: str) -> list[str]:
    """luigi's RangeDaily over [start, end], with its look-back and task limits opened up.

    RangeDaily's defaults (days_back 100, task_limit 50) would silently skip older dates.
    """
    today = datetime.date.today()
    return [
        "RangeDaily",
        "--of", "RunCampaign",
        "--of-params", json.dumps({"campaign": campaign}),
        "--param-name", "date",
        "--start", start.isoformat(),
        "--stop", (end + datetime.timedelta(days=1)).isoformat(),  # stop is exclusive
        "--days-back", str(max(0, (today - start).days) + 1),
        "--days-forward", str(max(0, (end - today).days) + 1),
        "--task-limit", str((end - start).days + 1),
    ]  # fmt: skip


def outside_schedule(*dates: datetime.date) -> str:
    """A message naming the dates outside [start_date, end_date], or ""."""
    settings = schedule()
    bad = [d for d in dates if not settings.start_date <= d <= settings.end_date]
    if not bad:
        return ""
    return (
        f"{', '.join(d.isoformat() for d in bad)} outside the campaign's schedule "
        f"[schedule] start_date = {settings.start_date}, end_date = {settings.end_date}"
    )


@contextlib.contextmanager
def one_run_at_a_time(campaign: str):
    """Hold the campaign's run lock and yield its open file, or yield None when another run
    holds it.

    luigi's own lock only catches identical command lines; this one also catches a backfill
    or a daily run for another date of the same campaign. ``flock`` locks the open file, not
    the process: luigi inherits it (see :func:`_run_logged`) and so do the task processes it
    forks, so the lock is released only when the last process of the run has ended, even
    if this wrapper is killed.
    """
    folder = Path(campaign_config().output_dir) / campaign
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".run.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield handle


def run_luigi(task_args: list[str], args: argparse.Namespace, campaign: str) -> int:
    """Run luigi with *task_args* unless the campaign is already running."""
    with one_run_at_a_time(campaign) as lock:
        if lock is None:
            code = luigi.retcodes.retcode().already_running
            print(f"campaign-run: campaign {campaign} is already running; exit {code}")
            return code
        return _run_logged(task_args, args, lock.fileno())


class PassOn:
    """A signal handler that passes an operator's SIGTERM or SIGINT on to a luigi run.

    Sent to luigi's own process, SIGTERM would kill it at once and leave its task processes
    sending, orphaned. Instead luigi's worker gets SIGUSR1, on which it starts no more tasks
    (no retries either) and waits for the running ones; each task process gets SIGTERM, on
    which a channel stops taking recipients, records its requests in flight and fails.
    luigi then exits with its ``[retcode]`` code. Task processes that start after the signal
    get SIGTERM too.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._pid = 0
        self._over = threading.Event()

    def __call__(self, signum, frame) -> None:
        first = not self.signum
        self.signum = signum
        if first and self._pid:
            threading.Thread(target=self._stop_luigi, name="pass-on", daemon=True).start()

    def attach(self, pid: int) -> None:
        """Pass signals on to luigi's process *pid* (one that came before is passed now)."""
        self._pid = pid
        if self.signum:
            threading.Thread(target=self._stop_luigi, name="pass-on", daemon=True).start()

    def detach(self) -> None:
        """luigi has exited."""
        self._over.set()

    def _stop_luigi(self) -> None:
        signalled: set[int] = set()
        try:
            run = psutil.Process(self._pid)
            run.send_signal(signal.SIGUSR1)
            while not self._over.is_set():
                for task in run.children(recursive=True):
                    if task.pid not in signalled:
                        signalled.add(task.pid)
                        with contextlib.suppress(psutil.Error):
                            task.terminate()
                self._over.wait(0.2)
        except psutil.Error:
            return  # luigi has exited


def _run_logged(task_args: list[str], args: argparse.Namespace, lock_fd: int) -> int:
    """Run luigi with *task_args*, logging to today's file and echoing to stdout.

    luigi inherits *lock_fd*, the run lock, and runs in a session of its own: a signal for
    this wrapper's process group reaches luigi only as :class:`PassOn` passes it on.
    """
    luigi_bin = str(Path(sys.executable).parent / "luigi")
    if scheduler_answers(args.scheduler_host, args.scheduler_port):
        where = f"central scheduler http://{args.scheduler_host}:{args.scheduler_port}"
        scheduler = ["--scheduler-host", args.scheduler_host]
        scheduler += ["--scheduler-port", str(args.scheduler_port)]
    else:
        where, scheduler = "local scheduler (no luigid answered)", ["--local-scheduler"]
    # every task in a process of its own, even with [core] workers = 1, so that PassOn can
    # stop a running task without stopping luigi's worker
    command = [luigi_bin, "--module", "campaign_pipeline", *task_args, *scheduler,
               "--worker-force-multiprocessing"]  # fmt: skip
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"campaign-{datetime.date.today().isoformat()}.log"
    with log_path.open("a") as log:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        header = f"=== {started} {' '.join(task_args)} on {where}\n"
        for stream in (log, sys.stdout):
            stream.write(header)
            stream.flush()
        pass_on = PassOn()
        previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            child = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(lock_fd,),
                start_new_session=True,
            )
            pass_on.attach(child.pid)
            for line in child.stdout:
                log.write(line)
                sys.stdout.write(line)
            code = child.wait()
        finally:
            pass_on.detach()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code < 0:
            code = 128 - code  # killed by signal N: the shell's 128 + N
        stopped = f", stopped by {signal.Signals(pass_on.signum).name}" if pass_on.signum else ""
        footer = f"=== exit {code} ({meaning(code)}){stopped}; log: {log_path}\n"
        log.write(footer)
        sys.stdout.write(footer)
    return code


def meaning(code: int) -> str:
    """The ``[retcode]`` name of a luigi exit code, e.g. ``already_running``."""
    if code == 0:
        return "success"
    codes = luigi.retcodes.retcode()
    names = [name for name, _ in codes.get_params() if getattr(codes, name) == code]
    return " or ".join(names) or "luigi error"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign-run", description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler-host", default=os.environ.get("SCHEDULER_HOST", "127.0.0.1"))
    parser.add_argument(
        "--scheduler-port", type=int, default=int(os.environ.get("SCHEDULER_PORT", "8082"))
    )
    parser.add_argument("--log-dir", default=os.environ.get("LOG_DIR", "var/log"))
    commands = parser.add_subparsers(dest="command", required=True)
    daily = commands.add_parser("daily", help="today's campaign (and missed days with catchup)")
    daily.add_argument("--date", type=datetime.date.fromisoformat, default=datetime.date.today())
    daily.add_argument("--campaign")
    backfill = commands.add_parser("backfill", help="every date in [start, end]")
    backfill.add_argument("--start", type=datetime.date.fromisoformat, required=True)
    backfill.add_argument("--end", type=datetime.date.fromisoformat, required=True)
    backfill.add_argument("--campaign")
    ping = commands.add_parser("ping", help="exit 0 when the central scheduler answers")
    ping.add_argument("--wait", type=float, default=0.0)
    args = parser.parse_args(argv)

    if args.command == "ping":
        return 0 if scheduler_answers(args.scheduler_host, args.scheduler_port, args.wait) else 1
    campaign = args.campaign or campaign_config().name
    if args.command == "daily":
        if problem := outside_schedule(args.date):
            print(f"campaign-run: nothing to run: {problem}")
            return 0
        return run_luigi(daily_command(args.date, campaign), args, campaign)
    if args.start > args.end:
        print("campaign-run: --start is after --end", file=sys.stderr)
        return USAGE_ERROR
    if problem := outside_schedule(args.start, args.end):
        print(f"campaign-run: refused: {problem}", file=sys.stderr)
        return USAGE_ERROR
    return run_luigi(backfill_command(args.start, args.end, campaign), args, campaign)


if __name__ == "__main__":
    sys.exit(main())
