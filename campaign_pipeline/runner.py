"""Running the campaign from cron and for backfills (``make daily``, ``make backfill``).

    campaign-run daily [--date 2026-11-25] [--campaign NAME]
    campaign-run backfill --start 2026-11-01 --end 2026-11-07 [--campaign NAME]
    campaign-run ping [--wait 15]

``daily`` and ``backfill`` use the central scheduler when luigid answers its ``ping`` RPC at
``--scheduler-host``/``--scheduler-port`` (``$SCHEDULER_HOST``/``$SCHEDULER_PORT``, default
127.0.0.1:8082) and luigi's local scheduler otherwise. They append luigi's output to a log
file named for today under ``--log-dir`` and exit with luigi's ``[retcode]`` code. They are
quiet for cron, which mails any output: a run that succeeds prints nothing, one that fails
prints a short summary (the failed tasks, their errors, the exit code and the log file).
``--verbose``, or a terminal on stdout, echoes luigi's whole output as well. Dates
outside ``[schedule] start_date``..``end_date`` are refused (exit 2) before anything runs.
One run of a campaign at a time: the run lock lasts as long as any process of the run, and
SIGTERM or SIGINT stops the run cleanly (see :class:`PassOn`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import luigi.retcodes
import psutil

from .config import pipeline as campaign_config
from .config import schedule
from .exceptions import RecipientsDeferredError

USAGE_ERROR = 2
# campaign-run's own code, not one of luigi's [retcode]s (luigi exits task_failed, 30): every
# task that failed left recipients deferred by quiet hours past [consent] max_wait_minutes,
# for a later run to send
DEFERRED = 15


NOTHING_LISTENS = "nothing listens"
PING_TIMEOUT = 3.0  # seconds; luigid answers a ping at once, even while it schedules


def ask_scheduler(host: str, port: int, timeout: float = PING_TIMEOUT) -> str:
    """What answered at host:port instead of luigid, or "" when luigid did.

    A TCP connect is not enough: any other service on the port would be taken for luigid and
    the run would fail a minute later (exit 40). So ask luigid's own ``ping`` RPC, the one its
    workers send every second: ``GET /api/ping?data={"worker": ...}`` answers
    ``{"response": ...}`` (``{"rpc_messages": [...]}`` in luigi 3; older luigid, whose ping
    returned nothing, ``null``: so only the ``response`` key is checked). The ping makes
    luigid note a worker ``campaign-run-ping``, forgotten after ``worker_disconnect_delay``.
    """
    data = urllib.parse.quote(json.dumps({"worker": "campaign-run-ping"}))
    url = f"http://{host}:{port}/api/ping?data={data}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(url, timeout=timeout) as answer:
            body, server = answer.read(65536), answer.headers.get("Server", "")
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}{_server(error.headers.get('Server', ''))}"
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return NOTHING_LISTENS
        return f"no HTTP answer: {error.reason}"
    except (OSError, http.client.HTTPException) as error:
        return f"no HTTP answer: {error or type(error).__name__}"
    try:
        answered = json.loads(body)
        luigid = isinstance(answered, dict) and "response" in answered
    except ValueError:
        luigid = False
    return "" if luigid else f"HTTP 200 without luigid's JSON answer{_server(server)}"


def _server(header: str) -> str:
    return f" from {header!r}" if header else ""


def scheduler_answers(host: str, port: int, wait: float = 0.0) -> bool:
    """True when luigid answers at host:port (see :func:`ask_scheduler`), trying for *wait* s."""
    deadline = time.monotonic() + wait
    while True:
        if not ask_scheduler(host, port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def choose_scheduler(host: str, port: int) -> tuple[str, list[str], str]:
    """(where the run is scheduled, luigi's scheduler flags, a notice for the operator or "").

    The local scheduler when luigid does not answer; the notice names what answered instead.
    """
    answer = ask_scheduler(host, port)
    url = f"http://{host}:{port}"
    if not answer:
        return (
            f"central scheduler {url}",
            ["--scheduler-host", host, "--scheduler-port", str(port)],
            "",
        )
    where = "local scheduler (no luigid answered)"
    if answer == NOTHING_LISTENS:
        return where, ["--local-scheduler"], ""
    notice = f"campaign-run: {url} is not luigid ({answer}); using the local scheduler"
    return where, ["--local-scheduler"], notice


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

    def __call__(self, signum: int, _frame) -> None:
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


def log_file(args: argparse.Namespace) -> Path:
    """Today's log file under ``--log-dir`` (created)."""
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / f"campaign-{datetime.date.today().isoformat()}.log"


def echoes(args: argparse.Namespace) -> bool:
    """Whether luigi's whole output goes to stdout too: ``--verbose``, or a terminal."""
    return args.verbose or sys.stdout.isatty()


def _run_logged(task_args: list[str], args: argparse.Namespace, lock_fd: int) -> int:
    """Run luigi with *task_args*, logging to today's file; print a summary if it failed.

    luigi inherits *lock_fd*, the run lock, and runs in a session of its own: a signal for
    this wrapper's process group reaches luigi only as :class:`PassOn` passes it on.
    """
    luigi_bin = str(Path(sys.executable).parent / "luigi")
    where, scheduler, notice = choose_scheduler(args.scheduler_host, args.scheduler_port)
    if notice:  # the operator should know, even from cron: luigid is not where it should be
        print(notice, flush=True)
    # every task in a process of its own, even with [core] workers = 1, so that PassOn can
    # stop a running task without stopping luigi's worker
    command = [luigi_bin, "--module", "campaign_pipeline", *task_args, *scheduler,
               "--worker-force-multiprocessing"]  # fmt: skip
    echo = echoes(args)
    failures = Failures()
    log_path = log_file(args)
    with log_path.open("a") as log:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        header = f"=== {started} {' '.join(task_args)} on {where}\n"
        log.write(header + (notice + "\n" if notice else ""))
        log.flush()
        if echo:
            sys.stdout.write(header)
            sys.stdout.flush()
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
                failures.feed(line)
                if echo:
                    sys.stdout.write(line)
            code = child.wait()
        finally:
            pass_on.detach()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code < 0:
            code = 128 - code  # killed by signal N: the shell's 128 + N
        deferred = failures.deferrals() if code == luigi.retcodes.retcode().task_failed else []
        if deferred:
            code = DEFERRED
        stopped = f", stopped by {signal.Signals(pass_on.signum).name}" if pass_on.signum else ""
        footer = f"=== exit {code} ({meaning(code)}){stopped}; log: {log_path}\n"
        log.write(footer)
        if deferred:  # one line, echoed or not: nothing failed, a later run sends them
            line = f"campaign-run: {'; '.join(deferred)}; exit {code}; log: {log_path}\n"
            log.write(line)
            sys.stdout.write(line)
        elif echo:
            sys.stdout.write(footer)
        elif code != 0:
            summary = [f"campaign-run: {' '.join(task_args)} on {where} failed"]
            summary += [f"  {line}" for line in failures.summary()]
            sys.stdout.write("\n".join(summary) + "\n" + footer)
        sys.stdout.flush()
    return code


TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
WORKER_FAILED = re.compile(r"\] Worker Worker\(.*?\) failed\s+(?P<task>\S.*)$")
SUMMARY_MARK = "===== Luigi Execution Summary ====="
# The headings of luigi's execution summary (luigi/execution_summary.py) that name tasks
# which failed or did not run, and what the summary says of each; "had failed dependencies"
# and the like only follow from these.
PROBLEMS = {
    "failed": "failed",
    "failed scheduling": "failed scheduling",
    "were missing external dependencies": "is missing",
    "were being run by another worker": "is being run by another worker",
    "was not granted run permission by the scheduler": (
        "was not run: luigid has disabled it (README: re-enabling a disabled task)"
    ),
}
MOST_SHOWN = 10
DEFERRED_ERROR = f"{RecipientsDeferredError.__name__}: "


class Failures:
    """The tasks of a luigi run that failed or did not run, and their one-line errors, read
    from luigi's output as it goes by (the local scheduler keeps no record to ask)."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}  # task -> first line of its last exception
        self.problems: list[tuple[str, str]] = []  # (what happened, task) in luigi's order
        self.last_error = ""
        self._task = ""
        self._in_traceback = False
        self._in_summary = False
        self._heading = ""

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if SUMMARY_MARK in line:
            self._in_summary = not self._in_summary
        elif self._in_summary:
            self._read_summary(line)
        elif TIMESTAMPED.match(line):
            failed = WORKER_FAILED.search(line)
            self._task = failed["task"] if failed else ""
            self._in_traceback = False
        elif line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
        elif self._in_traceback and line and not line[0].isspace():
            # the exception's first line ends the traceback: "package.module.Error: message"
            self._in_traceback = False
            self.last_error = re.sub(r"^[\w.]+\.(?=\w+(:|$))", "", line)
            if self._task:
                self.errors[self._task] = self.last_error

    def _read_summary(self, line: str) -> None:
        text = line.strip()
        if heading := re.match(r"^\* \d+ (.*):$", text):
            self._heading = heading[1]
        elif (task := re.match(r"^- (\d+) (.*)$", text)) and self._heading in PROBLEMS:
            count, name = task.groups()
            name = name if count == "1" else f"{count} × {name}"
            self.problems.append((PROBLEMS[self._heading], name))

    def _named(self, shown: str) -> tuple[str, str | None]:
        """The task a summary line names, in full, and its error: luigi's summary shortens
        a task with many parameters to ``SendSmsCampaign(...)``, the one failed task of that
        family the log named in full (when there is just one)."""
        if shown in self.errors or not shown.endswith("(...)"):
            return shown, self.errors.get(shown)
        family = shown.removesuffix("...)")
        named = [task for task in self.errors if task.startswith(family)]
        return (named[0], self.errors[named[0]]) if len(named) == 1 else (shown, None)

    def deferrals(self) -> list[str]:
        """The errors of the failed tasks without the exception's name ("sms: 3 deferred until
        ...") when each was a deferral by quiet hours (and nothing else went wrong), else []."""
        errors = [self._named(task)[1] or "" for what, task in self.problems if what == "failed"]
        if not errors or len(errors) < len(self.problems):
            return []
        if not all(error.startswith(DEFERRED_ERROR) for error in errors):
            return []
        return sorted(error.removeprefix(DEFERRED_ERROR) for error in errors)

    def summary(self) -> list[str]:
        """One line per task that failed or did not run, with its error when there was one."""
        lines = []
        for what, shown in self.problems:
            task, error = self._named(shown)
            lines.append(f"{task} {what}" + (f": {error}" if error else ""))
        if not lines:  # luigi ended before its summary (an error while scheduling, say)
            lines = [f"{task} failed: {error}" for task, error in self.errors.items()]
        if not lines and self.last_error:
            lines = [f"error: {self.last_error}"]
        if len(lines) > MOST_SHOWN:
            lines[MOST_SHOWN:] = [f"... and {len(lines) - MOST_SHOWN} more in the log"]
        return lines


def meaning(code: int) -> str:
    """The ``[retcode]`` name of a luigi exit code, e.g. ``already_running``."""
    if code == 0:
        return "success"
    if code == DEFERRED:
        return "deferred"
    codes = luigi.retcodes.retcode()
    names = [name for name, _ in codes.get_params() if getattr(codes, name) == code]
    return " or ".join(names) or "luigi error"


def ping_scheduler(host: str, port: int, wait: float) -> int:
    """``campaign-run ping``: 0 when luigid answers; 1, saying what answered, otherwise."""
    if scheduler_answers(host, port, wait):
        return 0
    print(f"campaign-run: no luigid at http://{host}:{port}: {ask_scheduler(host, port)}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign-run", description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler-host", default=os.environ.get("SCHEDULER_HOST", "127.0.0.1"))
    parser.add_argument(
        "--scheduler-port", type=int, default=int(os.environ.get("SCHEDULER_PORT", "8082"))
    )
    parser.add_argument(
        "--log-dir", help="folder of the logs (default: $LOG_DIR, else [campaign] log_dir)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="echo luigi's whole output (the default when stdout is a terminal); otherwise "
        "only a failure prints, a short summary, and the log file has everything",
    )
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
    args.log_dir = args.log_dir or os.environ.get("LOG_DIR") or campaign_config().log_dir

    if args.command == "ping":
        return ping_scheduler(args.scheduler_host, args.scheduler_port, args.wait)
    campaign = args.campaign or campaign_config().name
    if args.command == "daily":
        if problem := outside_schedule(args.date):
            message = f"campaign-run: nothing to run: {problem}\n"
            log_file(args).open("a").write(message)  # a success: silent unless asked
            if echoes(args):
                print(message, end="")
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
