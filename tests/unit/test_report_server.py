"""The report server serves reports and history pages under its root, and nothing else."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from campaign_pipeline.reporting.server import make_server
from campaign_pipeline.testing import free_port

REPORT = "<!doctype html><html><body><svg><rect/></svg>report of demo</body></html>"
SECRET = "C0000001,ann@example.com,+12125550100,sent"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A campaigns' folder as the pipeline leaves it, and a secret file next to it."""
    root = tmp_path / "campaigns"
    run = root / "demo" / "2026-11-25"
    (run / "dry-run").mkdir(parents=True)
    (run / "report.html").write_text(REPORT)
    (run / "report.json").write_text('{"schema": 1}')
    (run / "dry-run" / "report.html").write_text("dry run report")
    for name in ("email_results.csv", "rejected.csv", "email_ledger.sqlite", "task_log.jsonl"):
        (run / name).write_text(SECRET)
    (root / "demo" / "history.html").write_text("history of demo")
    (root / "demo" / "history.json").write_text('{"campaign": "demo"}')
    (root / "demo" / "2026-11-24").mkdir()  # a date without a report
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "report.html").write_text(SECRET)
    return root


@pytest.fixture
def server(tree: Path):
    running = make_server(tree, "127.0.0.1", 0)
    # a short poll, since shutdown() waits for the loop to notice it (60 servers in this file)
    thread = threading.Thread(target=running.serve_forever, args=(0.005,), daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def get(server, path: str, method: str = "GET") -> tuple[int, dict, str]:
    """The raw request (http.client sends the path as given: no normalising of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "content_type", "text"),
    [
        ("/demo/2026-11-25/report.html", "text/html; charset=utf-8", REPORT),
        ("/demo/2026-11-25/report.json", "application/json", '{"schema": 1}'),
        ("/demo/2026-11-25/dry-run/report.html", "text/html; charset=utf-8", "dry run report"),
        ("/demo/history.html", "text/html; charset=utf-8", "history of demo"),
        ("/demo/history.json", "application/json", '{"campaign": "demo"}'),
        ("/demo/2026-11-25/report.html?refresh=1", "text/html; charset=utf-8", REPORT),
    ],
)
def test_reports_and_history_pages_are_served(server, path, content_type, text):
    status, headers, body = get(server, path)

    assert (status, body) == (200, text)
    assert headers["Content-Type"] == content_type
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_head_answers_without_a_body(server):
    status, headers, body = get(server, "/demo/2026-11-25/report.html", method="HEAD")

    assert (status, body) == (200, "")
    assert headers["Content-Length"] == str(len(REPORT))


@pytest.mark.parametrize(
    "path",
    [
        "/demo/2026-11-25/email_results.csv",
        "/demo/2026-11-25/rejected.csv",
        "/demo/2026-11-25/email_ledger.sqlite",
        "/demo/2026-11-25/task_log.jsonl",
        "/demo/2026-11-24/report.html",  # no report there
        "/demo/report.html",
        "/report.json",
    ],
)
def test_customer_data_and_missing_files_answer_404(server, path):
    status, _, body = get(server, path)

    assert status == 404
    assert SECRET not in body


@pytest.mark.parametrize("path", ["/demo", "/demo/", "/demo/2026-11-25/", "/demo/2026-11-25"])
def test_folders_are_not_listed(server, path):
    status, _, body = get(server, path)

    assert status == 404
    assert "email_results" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/../outside/report.html",
        "/demo/../../outside/report.html",
        "/demo/2026-11-25/../../../outside/report.html",
        "/%2e%2e/outside/report.html",
        "/demo/%2E%2E/%2e%2e/outside/report.html",
        "/demo/2026-11-25/..%2f..%2f..%2foutside/report.html",
        "/demo%2f2026-11-25%2freport.html",
        "/demo%5c2026-11-25%5creport.html",
        "/demo/./2026-11-25/report.html",
        "/demo/2026-11-25/report.html%00.csv",
        "/demo/2026-11-25/%ff/report.html",
    ],
)
def test_path_traversal_and_encoded_slashes_answer_404(server, path):
    status, _, body = get(server, path)

    assert status == 404
    assert SECRET not in body


def test_symlinks_out_of_the_root_or_to_other_files_answer_404(server, tree):
    outside = tree.parent / "outside"
    (tree / "linked").symlink_to(outside)  # a folder leading out of the root
    run = tree / "demo" / "2026-11-25"
    (run / "leak").mkdir()
    (run / "leak" / "report.html").symlink_to(outside / "report.html")
    (run / "leak" / "report.json").symlink_to(run / "email_results.csv")  # inside, other name

    for path in ("/linked/report.html", "/demo/2026-11-25/leak/report.html",
                 "/demo/2026-11-25/leak/report.json"):  # fmt: skip
        status, _, body = get(server, path)
        assert status == 404, path
        assert SECRET not in body


def test_a_symlink_to_a_report_inside_the_root_is_served(server, tree):
    (tree / "latest").symlink_to(tree / "demo" / "2026-11-25")

    assert get(server, "/latest/report.html")[:1] == (200,)


def test_index_links_every_report_and_history(server, tree):
    (tree.parent / "outside" / "2026-01-01").mkdir()
    (tree.parent / "outside" / "2026-01-01" / "report.html").write_text(SECRET)
    (tree / "elsewhere").symlink_to(tree.parent / "outside")
    status, _, body = get(server, "/")

    assert status == 200
    for href in ("/demo/history.html", "/demo/2026-11-25/report.html",
                 "/demo/2026-11-25/dry-run/report.html"):  # fmt: skip
        assert f'href="{href}"' in body
    assert "2026-11-24" not in body, "a date without a report has no link"
    assert "elsewhere" not in body, "nothing is served out of the root: no link there"
    assert SECRET not in body


def ask(server, path: str, *hosts: str, method: str = "GET") -> tuple[int, dict, str]:
    """*path* with the ``Host`` headers *hosts* (none: no Host header at all)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        connection.putrequest(method, path, skip_host=True)
        for host in hosts:
            connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode(errors="replace")
    finally:
        connection.close()


REPORT_JSON = "/demo/2026-11-25/report.json"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:{port}",
        "LOCALHOST:{port}",
        "LocalHost",
        "localhost.:{port}",
        "localhost:8084",  # a port another than the server's: a proxy in front, say
        "127.0.0.1",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "[::1]",
        "[0:0:0:0:0:0:0:1]:{port}",
    ],
)
def test_the_loopback_names_are_answered_in_any_case_with_any_port(server, host):
    port = server.server_address[1]

    status, _, body = ask(server, REPORT_JSON, host.format(port=port))

    assert (status, body) == (200, '{"schema": 1}')


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",  # DNS rebinding: evil.example now resolves to 127.0.0.1
        "EVIL.Example:{port}",
        "127.0.0.1.nip.io:{port}",
        "localhost.evil.example:{port}",
        "evil-localhost:{port}",
        "localhost@evil.example:{port}",
        "evil.example:{port}@localhost",
        "localhost:{port}/x",
        "localhost:99999",
        "localhost:8o84",
        "[::1]x",
        "::1",
        "",
        "localhost, evil.example",
    ],
)
def test_any_other_host_header_is_refused_with_nothing_of_the_reports(server, host):
    port = server.server_address[1]

    for path in (REPORT_JSON, "/demo/2026-11-25/report.html", "/"):
        status, headers, body = ask(server, path, host.format(port=port))

        assert status == 421, (host, path)
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert body.startswith("421 Misdirected Request: ") and body.count("\n") == 1
        assert "schema" not in body and "report of demo" not in body and "demo" not in body


def test_a_request_without_one_host_header_is_a_bad_request(server):
    for hosts in ((), ("localhost", "evil.example"), ("localhost", "localhost")):
        status, headers, body = ask(server, REPORT_JSON, *hosts)

        assert status == 400, hosts
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert body == "400 Bad Request: one Host header is required\n"


def test_a_refused_head_has_no_body(server):
    status, headers, body = ask(server, REPORT_JSON, "evil.example", method="HEAD")

    assert (status, body) == (421, "")
    assert int(headers["Content-Length"]) > 0


def test_the_names_it_is_given_and_its_own_address_are_answered(tree):
    running = make_server(tree, "127.0.0.1", 0, names=["Reports.Example.Internal", "[::2]"])
    # a short poll, since shutdown() waits for the loop to notice it (60 servers in this file)
    thread = threading.Thread(target=running.serve_forever, args=(0.005,), daemon=True)
    thread.start()
    try:
        for host in ("reports.example.internal", "REPORTS.example.internal:443", "[::2]:80"):
            assert ask(running, REPORT_JSON, host)[0] == 200, host
        for host in ("example.internal", "other.example.internal", "reports.example"):
            assert ask(running, REPORT_JSON, host)[0] == 421, host
    finally:
        running.shutdown()
        running.server_close()


def test_other_methods_are_refused(server):
    assert get(server, "/demo/2026-11-25/report.html", method="POST")[0] == 501


@pytest.mark.e2e  # a process of its own
def test_cli_says_in_one_line_that_the_port_is_in_use(server, tree):
    port = server.server_address[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
    done = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.reporting.server", "--root", str(tree),
         "--port", str(port)],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr == (
        f"report server: port {port} on 127.0.0.1 is in use; stop what uses it or choose "
        "another port (--port, make REPORT_PORT=...)\n"
    )


@pytest.mark.e2e  # a process of its own
def test_cli_names_a_root_that_is_not_a_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.reporting.server", "--root",
         str(tmp_path / "nowhere"), "--port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr == (
        f"report server: --root {tmp_path / 'nowhere'} is not a folder; create it or name another\n"
    )


@pytest.mark.e2e  # a process of its own
def test_cli_answers_the_names_of_its_settings_and_flags_and_no_other(tree, tmp_path):
    """``[report] allowed_hosts``, the host of ``[report] base_url`` and ``--allowed-host``."""
    config = tmp_path / "report.cfg"
    config.write_text(
        '[report]\nallowed_hosts = ["cfg.example"]\nbase_url = http://links.example:8084\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "campaign_pipeline.reporting.server", "--root", str(tree),
         "--port", str(port), "--allowed-host", "flag.example"],
        stdout=subprocess.PIPE, text=True, env={**env, "LUIGI_CONFIG_PATH": str(config)},
    )  # fmt: skip
    try:
        assert process.stdout.readline().startswith("serving the reports under")  # bound
        server = type("Bound", (), {"server_address": ("127.0.0.1", port)})
        for host in ("cfg.example", f"links.example:{port}", "FLAG.example", "localhost"):
            assert ask(server, REPORT_JSON, host)[0] == 200, host
        for host in ("evil.example", "example", "links.example.evil"):
            assert ask(server, REPORT_JSON, host)[0] == 421, host
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.e2e  # a process of its own
def test_cli_names_an_allowed_host_that_is_no_host_name(tree):
    done = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.reporting.server", "--root", str(tree),
         "--port", "0", "--allowed-host", "https://reports.example/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr == (
        "report server: 'https://reports.example/' is not a host name, e.g. "
        "reports.example.internal; check --host, --allowed-host and [report] allowed_hosts\n"
    )


def test_a_report_outside_the_root_gets_a_page_saying_how_to_serve_its_folder(server, tree):
    """A visualiser link from a run whose [campaign] output_dir is not this server's root."""
    status, headers, body = get(server, "/elsewhere/2026-11-25/report.html")

    assert status == 404
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert str(tree.resolve()) in body and "/elsewhere/2026-11-25/report.html" in body
    assert "python -m campaign_pipeline.reporting.server --root OUTPUT_DIR" in body
    assert "base_url = http://127.0.0.1:8085" in body
    status, _, body = get(server, "/%3Cscript%3E/report.html")  # the path is shown escaped
    assert status == 404 and "<script>" not in body and "&lt;script&gt;" in body
