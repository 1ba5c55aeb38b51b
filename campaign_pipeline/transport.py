"""The HTTP session of one sending thread, which knows whether a failed request left.

Whether a failed request may have reached the provider decides what the ledger records: a
request of which not one byte was written reached nobody and goes back to ``pending``; one
that was written may have been delivered. ``requests`` wraps the failures of a connection in
its own exceptions, but an error of another kind (a header value that cannot be encoded, a
timeout it refuses, a CA bundle that is missing, a bug) can come before or after the first
byte. The connections of a :class:`Session` note each write, so :meth:`Session.transmit`
can tell the two apart and raises :class:`NotSentError` for the first kind.
"""

from __future__ import annotations

import functools
import threading

import requests
from requests.adapters import HTTPAdapter

from .exceptions import NotSentError

# A base_url requests cannot even address: nothing left, and no retry can help.
BAD_URL_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)

_writes = threading.local()  # a session belongs to one thread, so this is the session's


class _Noting:
    """Mixed into urllib3's connection classes: every write of a request goes through
    ``send`` (http.client's, which urllib3's ``request`` calls for headers and body)."""

    def send(self, data):
        _writes.any = True
        return super().send(data)


@functools.cache
def _noting(connection_class: type) -> type:
    return type(f"Noting{connection_class.__name__}", (_Noting, connection_class), {})


class _NotingAdapter(HTTPAdapter):
    """An adapter whose connection pools make connections that note their writes."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        if not issubclass(pool.ConnectionCls, _Noting):
            pool.ConnectionCls = _noting(pool.ConnectionCls)
        return pool


class Session(requests.Session):
    """One connection (no pool to share), no retries of its own, and :meth:`transmit`."""

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("http://", "https://"):
            self.mount(prefix, _NotingAdapter(pool_maxsize=1, max_retries=0))

    def transmit(self, prepared: requests.PreparedRequest, timeout: float) -> requests.Response:
        """Send *prepared*; raise :class:`NotSentError` for an error other than requests' own
        that came before any byte of it was written."""
        _writes.any = False
        try:
            return self.send(prepared, timeout=timeout)
        except requests.RequestException:
            raise
        except Exception as exc:
            if not _writes.any:
                raise NotSentError(f"{type(exc).__name__}: {exc}") from exc
            raise
