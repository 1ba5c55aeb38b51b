"""The report server: the campaigns' reports over HTTP, for the visualiser's tracking links.

    python -m campaign_pipeline.reporting.server [--root DIR] [--host 127.0.0.1] [--port 8084]

It serves the run folders' ``report.html`` and ``report.json`` and each campaign's
``history.html`` and ``history.json`` under *root* (the campaigns' ``[campaign] output_dir``),
and a ``/`` page linking every report it finds. Nothing else: the same folders hold result
files, ledgers and rejected rows, which are customer data, so any other path answers 404,
as do directories (no listing), ``..``, encoded slashes and symlinks that lead out of *root*
or to a file of another name.

It answers only the host names it serves (the ``Host`` header): ``localhost``, 127.0.0.1 and
[::1], the address it is bound to and the one a request arrived at, the host of ``[report]
base_url`` and the names of ``[report] allowed_hosts`` (and ``--allowed-host``). Any other
name is 421, and no Host header at all 400, with a short plain body: a web page whose own
name an attacker points at 127.0.0.1 (DNS rebinding) must not read the reports.

Why the standard library's ``http.server``: the server answers one operator's browser on
127.0.0.1 with a handful of small static files, so a threaded stdlib server is enough, adds no
dependency, and its few lines of path checking are all the logic there is. It binds to
127.0.0.1 by default; a report has customer data only with ``[report] include_samples``, but
bind it to another address only on a network you trust.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import ipaddress
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..config import pipeline, report

# The only file names served, with their content types.
SERVED = {
    "report.html": "text/html; charset=utf-8",
    "report.json": "application/json",
    "history.html": "text/html; charset=utf-8",
    "history.json": "application/json",
}
# A report is self-contained (inline CSS and SVG, no script): the browser may load nothing else.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SERVER_NAME = "campaign-report-server"
# The names of this machine's loopback interface: always served (no other site can use them).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; then maybe a port.
HOST_HEADER = re.compile(
    r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))"  # [::1], localhost, 127.0.0.1
    r"(?::(?P<port>[0-9]*))?"
)


def resolve(root: Path, url_path: str) -> Path | None:
    """The file under *root* that *url_path* names, or None when it may not be served.

    *url_path* is the raw path of the request (percent-encoded, no query). Allowed: plain
    folder names then one of :data:`SERVED`; the real file (symlinks followed) must be a
    regular file of a served name inside the real *root*.
    """
    if "%2f" in url_path.lower() or "%5c" in url_path.lower():
        return None  # an encoded slash hides a folder boundary from the checks below
    parts = urllib.parse.unquote(url_path, errors="strict").split("/")
    if parts[0] != "" or len(parts) < 2:
        return None
    parts = parts[1:]
    for part in parts:
        if part in ("", ".", "..") or part.startswith(".") or "\\" in part or "\0" in part:
            return None
    if parts[-1] not in SERVED:
        return None
    real_root = root.resolve()
    real = (real_root / Path(*parts)).resolve()
    if not real.is_relative_to(real_root) or real.name not in SERVED or not real.is_file():
        return None
    return real


def index_page(root: Path) -> str:
    """The ``/`` page: per campaign, its history and each date's report, as links only."""
    rows = []
    real_root = root.resolve()
    campaigns = [
        p
        for p in (root.iterdir() if root.is_dir() else ())
        if p.is_dir() and not p.name.startswith(".") and p.resolve().is_relative_to(real_root)
    ]  # a folder linked from outside the root would be served nothing: no link to it
    for campaign in sorted(campaigns):
        links = [
            f'<a href="{quote(campaign.name, name)}">{name}</a>'
            for name in ("history.html",)
            if (campaign / name).is_file()
        ]
        for date in sorted((p for p in campaign.iterdir() if p.is_dir()), reverse=True):
            for folder, label in ((date, date.name), (date / "dry-run", f"{date.name} dry run")):
                if (folder / "report.html").is_file():
                    href = quote(*folder.relative_to(root).parts, "report.html")
                    links.append(f'<a href="{href}">{html.escape(label)}</a>')
        if links:
            items = "".join(f"<li>{link}</li>" for link in links)
            rows.append(f"<h2>{html.escape(campaign.name)}</h2><ul>{items}</ul>")
    body = "".join(rows) or f"<p>No report yet under {html.escape(str(root))}.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Campaign reports</title></head>"
        f"<body><h1>Campaign reports</h1>{body}</body></html>"
    )


def not_served_page(root: Path, path: str) -> str:
    """The page of a report this server does not have: its run folder is elsewhere (another
    ``[campaign] output_dir``) or not written yet, and how to serve that folder."""
    root_text = html.escape(str(root.resolve()))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>report not served here"
        "</title></head><body><h1>No report here</h1>"
        f"<p>This report server serves the run folders under <code>{root_text}</code>, and "
        f"<code>{html.escape(path)}</code> is not among them: the run may write its folders "
        "under another <code>[campaign] output_dir</code>, or has not written its report "
        "yet. <a href='/'>The reports served here</a>.</p>"
        "<p>To serve that run's reports, start a server on its output folder and point its "
        "links there:</p><pre>python -m campaign_pipeline.reporting.server "
        "--root OUTPUT_DIR --port 8085\n"
        "# and in that run's configuration\n[report]\nbase_url = http://127.0.0.1:8085</pre>"
        "</body></html>"
    )


def quote(*parts: str) -> str:
    return "/" + "/".join(urllib.parse.quote(part) for part in parts)


def host_name(header: str) -> str | None:
    """The host name of a ``Host`` header, in lower case, without its port and final dot;
    None when it is not one (a user, a path, a bad port, two values)."""
    found = HOST_HEADER.fullmatch(header.strip().lower())
    if found is None or (found["port"] and int(found["port"]) > 65535):
        return None
    if found["ipv6"]:
        return ipv6(found["ipv6"])
    return found["name"].removesuffix(".") or None


def ipv6(text: str) -> str | None:
    """An IPv6 address in its one short form (``::1``), or None when *text* is not one."""
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def served_names(host: str, names: Iterable[str] = ()) -> frozenset[str]:
    """The host names a server bound to *host* answers: the loopback names, *host* itself
    and *names* (each maybe with a port, an IPv6 address with brackets or without).

    Raises ValueError naming the first that is no host name (a URL, say).
    """
    found = set()
    for text in [str(name).strip() for name in ([host] if host else []) + list(names)]:
        name = host_name(text) or ipv6(text)
        if name is None:
            raise ValueError(f"{text!r} is not a host name, e.g. reports.example.internal")
        found.add(name)
    return LOOPBACK_NAMES | found


def configured_names() -> list[str]:
    """``[report] allowed_hosts``, and the host of ``[report] base_url``: the visualiser's
    links point there."""
    base_host = urllib.parse.urlsplit(report().base_url).hostname
    return [*report().allowed_hosts, *([base_host] if base_host else [])]


class ReportHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the served files and the index; 404 for anything else."""

    server_version = SERVER_NAME
    sys_version = ""
    root: Path  # set by make_server on a subclass
    names: frozenset[str]  # the host names answered (served_names), set by make_server

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def answer(self, send_body: bool) -> None:
        if refusal := self.misdirected():
            self.refuse(*refusal, send_body)
            return
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/":
            try:
                page = index_page(self.root)
            except OSError:  # a folder unreadable or removed while listed
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "cannot list the reports")
                return
            self.send(page.encode(), SERVED["report.html"], send_body)
            return
        try:
            found = resolve(self.root, path)
        except (UnicodeDecodeError, ValueError, OSError):
            found = None
        if found is None:
            self.not_here(path, send_body)
            return
        try:
            body = found.read_bytes()
        except OSError:  # removed or unreadable since resolve()
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send(body, SERVED[found.name], send_body)

    def not_here(self, path: str, send_body: bool) -> None:
        """404; for a report's name, a page saying how to serve a run folder kept elsewhere
        (a visualiser's link from a run whose output_dir is not this server's root)."""
        name = path.rsplit("/", 1)[-1]
        if name not in SERVED:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = not_served_page(self.root, urllib.parse.unquote(path, errors="replace"))
        self.send(body.encode(), SERVED["report.html"], send_body, HTTPStatus.NOT_FOUND)

    def misdirected(self) -> tuple[HTTPStatus, str] | None:
        """Why the request's ``Host`` is not a name this server answers, or None."""
        headers = self.headers.get_all("Host") or []
        if len(headers) != 1:
            return HTTPStatus.BAD_REQUEST, "one Host header is required"
        name = host_name(headers[0])
        arrived = self.connection.getsockname()[0]  # an address of this machine
        if name is None or name not in self.names | {arrived.lower()}:
            return HTTPStatus.MISDIRECTED_REQUEST, (
                "this report server does not answer that host name; add it to [report] "
                "allowed_hosts (or --allowed-host) if it is this server's"
            )
        return None

    def refuse(self, status: HTTPStatus, text: str, send_body: bool) -> None:
        body = f"{status.value} {status.phrase}: {text}\n".encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def send(
        self, body: bytes, content_type: str, send_body: bool, status: HTTPStatus = HTTPStatus.OK
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def make_server(
    root: Path, host: str = "127.0.0.1", port: int = 8084, names: Iterable[str] = ()
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server of *root*; port 0 picks a free port. It answers the
    host names of :func:`served_names` (*names*: those besides its own)."""
    attributes = {"root": Path(root), "names": served_names(host, names)}
    handler = type("Handler", (ReportHandler,), attributes)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True  # a browser's kept-alive connection never blocks the exit
    return server


def serve(root: Path, host: str = "127.0.0.1", port: int = 8084, names: Iterable[str] = ()) -> None:
    """Serve the reports under *root* on host:port until interrupted."""
    with make_server(root, host, port, names) as server:
        server.serve_forever()


def wait_started(host: str, port: int, pid: int, pid_file: Path, wait: float) -> bool | None:
    """Poll, for at most *wait* s, until the server of process *pid* answers: True then,
    False when the process exited (its log says why), None at the deadline. The pid file is
    written by the server once bound, so an answer then is its own."""
    deadline = time.monotonic() + wait
    while True:
        if not alive(pid):
            return False
        if pid_file.is_file() and pid_file.read_text().strip() == str(pid):
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/", timeout=2) as answer:
                    if answer.status == HTTPStatus.OK:
                        return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while process *pid* runs (a zombie, exited but not yet reaped, is not alive)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except ProcessLookupError:
        return False
    except OSError:  # no /proc: the kill(0) answer is all there is
        return True
    return state != "Z"


def default_root() -> str:
    """``[campaign] output_dir`` of the luigi configuration: the folder the tracking URLs'
    paths are relative to."""
    return pipeline().output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m campaign_pipeline.reporting.server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", help="the campaigns' folder (default: [campaign] output_dir)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8084)
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name to answer besides localhost, the bound address, [report] "
        "allowed_hosts and the host of [report] base_url; repeatable",
    )
    parser.add_argument("--pid-file", help="write this process's id here once serving")
    parser.add_argument(
        "--wait-started",
        type=int,
        metavar="PID",
        help="do not serve: wait until the server of process PID (with --pid-file) answers; "
        "exit 1 if it exits first or does not answer within --wait seconds",
    )
    parser.add_argument("--wait", type=float, default=20, help="seconds for --wait-started")
    args = parser.parse_args(argv)
    if args.wait_started:
        if not args.pid_file:
            parser.error("--wait-started needs the server's --pid-file")
        started = wait_started(
            args.host, args.port, args.wait_started, Path(args.pid_file), args.wait
        )
        if started is None:
            print(f"report server: no answer on {args.host}:{args.port} within {args.wait:g} s "
                  f"(pid {args.wait_started})", file=sys.stderr)  # fmt: skip
        return 0 if started else 1

    root = Path(args.root or default_root())
    if not root.is_dir():
        print(f"report server: --root {root} is not a folder; create it or name another",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        server = make_server(root, args.host, args.port, [*configured_names(), *args.allowed_host])
    except ValueError as error:
        print(f"report server: {error}; check --host, --allowed-host and [report] allowed_hosts",
              file=sys.stderr)  # fmt: skip
        return 2
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            why = (
                "is in use; stop what uses it or choose another port (--port, make REPORT_PORT=...)"
            )
            print(f"report server: port {args.port} on {args.host} {why}", file=sys.stderr)
        else:
            print(f"report server: cannot listen on {args.host}:{args.port}: {error.strerror}",
                  file=sys.stderr)  # fmt: skip
        return 2
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    print(f"serving the reports under {root} on http://{args.host}:{args.port}/", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a quiet stop
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
