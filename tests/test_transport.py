"""The sending session tells a request that never left from one that may have arrived."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from campaign_pipeline.exceptions import NotSentError
from campaign_pipeline.transport import Session


class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def server():
    Counting.seen = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/send"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def prepared(session: Session, url: str, **kwargs) -> requests.PreparedRequest:
    return session.prepare_request(requests.Request("POST", url, json={"to": "a"}, **kwargs))


@pytest.mark.parametrize(
    "headers, timeout",
    [({"Authorization": "Bearer token\u2019"}, 5.0), ({}, 0.0)],
    ids=["header Latin-1 cannot carry", "timeout of zero"],
)
def test_an_error_before_the_first_byte_is_not_sent(server, headers, timeout):
    session = Session()

    with pytest.raises(NotSentError):
        session.transmit(prepared(session, server, headers=headers), timeout=timeout)

    assert Counting.seen == 0
    assert session.transmit(prepared(session, server), timeout=5.0).status_code == 200
    assert Counting.seen == 1, "the session still works"


def test_an_error_after_the_request_left_is_not_called_unsent(server):
    def broken(_response, **_kwargs):
        raise LookupError("a bug while reading the answer")

    session = Session()
    request = prepared(session, server, hooks={"response": broken})

    with pytest.raises(LookupError):
        session.transmit(request, timeout=5.0)

    assert Counting.seen == 1
