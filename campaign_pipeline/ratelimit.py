"""Provider rate limits held by every process on this machine together.

A provider counts the requests of an *account*, not of a process: the channel tasks of a
backfill's dates and a second campaign sending through the same account at the same time
must take their tokens from one bucket, or each spends the provider's whole limit and the
provider answers 429.

The bucket is pyrate-limiter's: a ``TokenBucket`` (GCRA) in a ``StateBucket`` behind a
``Limiter``, as for a single process. Its whole state is one number, the theoretical
arrival time of the next request, and :class:`FileStateStore` keeps that number in a small
file that every process opens and updates under ``flock``. The file is named for the
provider account (:func:`bucket_path`); :func:`shared_store` is the one place that says
where buckets live, so a bucket shared by several machines is pyrate-limiter's
``RedisStateStore`` returned from there instead.

A process holds the file for microseconds, and the kernel frees it when the process dies;
but a process that is frozen while it holds it (SIGSTOP, a paused container, a hung
filesystem) would hold every sender of the account for ever. So the lock is waited for at
most ``[rate_limits] lock_timeout_seconds`` (:class:`~.exceptions.BucketLockedError` then),
and no longer than the sender wants it (a stop, SIGTERM).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pyrate_limiter import (
    Duration,
    Limiter,
    MonotonicClock,
    Rate,
    StateBucket,
    StateStore,
    TokenBucket,
)

from .config import BURST_MARGIN, rate_limits
from .exceptions import BucketLockedError, SettingsError

log = logging.getLogger("campaign_pipeline.ratelimit")

# The first and the longest pause between two tries of a bucket file another process holds:
# a holder takes microseconds, so the first try after a pause almost always succeeds.
LOCK_PAUSES = (0.0002, 0.005)


class Throttle:
    """A provider account's token bucket: :meth:`take` blocks until a token is free."""

    def __init__(self, rate_per_second: float, burst: int, store: StateStore | None = None):
        """*store* holds the bucket's state; None keeps it in this process only."""
        rate = Rate(
            round(rate_per_second * 1000),
            Duration.SECOND * 1000,
            burst=max(1, burst - BURST_MARGIN),
        )
        bucket = StateBucket([rate], algorithm=TokenBucket(), store=store)
        self._limiter = Limiter(bucket, buffer_ms=0)

    def take(self) -> None:
        self._limiter.try_acquire("send")


def account_throttle(
    provider, rate_per_second: float, burst: int, stopped: threading.Event | None = None
) -> Throttle:
    """The throttle of *provider*'s account, shared with every process on this machine that
    sends through the same account and base URL; a wait for its bucket file ends when
    *stopped* is set."""
    store = shared_store(provider.channel, provider.base_url, provider.account())
    store.stopped = stopped
    with store.locked():  # a bucket file that cannot be opened fails the task before sending
        pass
    log.info(
        "%s: %g requests/s, burst %d (%d after the client's reserve), one bucket for every "
        "process on this machine sending through this account: %s",
        provider.channel,
        rate_per_second,
        burst,
        max(1, burst - BURST_MARGIN),
        store.path,
    )
    return Throttle(rate_per_second, burst, store)


def shared_store(channel: str, base_url: str, account: str) -> FileStateStore:
    """Where the bucket of one provider account lives: a file on this machine.

    This is the one place to change for several machines sending through one account:
    return ``pyrate_limiter.RedisStateStore(redis_client, key=<the same name>)`` here, and
    the bucket, its algorithm and every caller stay as they are.
    """
    return FileStateStore(bucket_path(channel, base_url, account))


def lock_timeout() -> float:
    """``[rate_limits] lock_timeout_seconds`` (its range is checked with the other settings)."""
    return rate_limits().lock_timeout_seconds


def bucket_path(channel: str, base_url: str, account: str) -> Path:
    """The bucket file of an account: its name is a hash of the channel, the base URL and
    the account's identity (a credential, for some providers), never the identity itself."""
    identity = "\0".join((channel, base_url.rstrip("/"), account))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return bucket_dir() / f"{channel}-{digest}.bucket"


def default_bucket_dir() -> Path:
    """A folder of this user's in the system temp dir: the same for every campaign and
    every run folder, so that all of them share their buckets."""
    return Path(tempfile.gettempdir()) / f"campaign_pipeline-rate-limits-{os.getuid()}"


def bucket_dir() -> Path:
    """``[rate_limits] bucket_dir``, created if missing; the default must be this user's own
    folder, since anyone can create one of that name in the temp dir first."""
    configured = rate_limits().bucket_dir
    folder = Path(configured).expanduser() if configured else default_bucket_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        raise SettingsError(
            f"[rate_limits] bucket_dir {folder}: cannot create it ({exc.strerror}); "
            "set it to a folder that every sending process can write"
        ) from None
    if not configured and (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()):
        raise SettingsError(
            f"[rate_limits] bucket_dir: the default {folder} is not a folder of this user's; "
            "remove it, or set bucket_dir to a folder that every sending process can write"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingsError(
            f"[rate_limits] bucket_dir {folder} is not writable; "
            "set it to a folder that every sending process can write"
        )
    return folder


class FileStateStore(StateStore):
    """The state of a ``StateBucket`` in a file, shared by every process that opens it.

    ``check`` opens the file, takes an exclusive ``flock`` on it, reads the state, lets the
    algorithm step it, writes it back and closes the file: no other process or thread steps
    it in between, and no descriptor outlives a check (none is shared across a fork). The
    kernel drops the lock of a process that dies, even by SIGKILL, so a crash cannot block
    the others. The values are the GCRA's theoretical arrival times, in microseconds of the
    monotonic clock, which every process of one boot shares.

    The lock is waited for *timeout* seconds at most (None: ``[rate_limits]
    lock_timeout_seconds``), and only while *stopped* (an event) is not set.
    """

    default_clock = MonotonicClock()

    def __init__(
        self,
        path: Path,
        timeout: float | None = None,
        stopped: threading.Event | None = None,
    ):
        self.path = path
        self.timeout = lock_timeout() if timeout is None else timeout
        self.stopped = stopped

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """Hold the bucket against every other process and thread; yield its descriptor."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            detail = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise SettingsError(
                f"[rate_limits] bucket_dir: cannot open {self.path} ({detail})"
            ) from None
        try:
            self._lock(fd)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _lock(self, fd: int) -> None:
        """Take the lock of *fd*, trying again after ever longer pauses (a blocking flock
        could neither give up nor hear a stop); BucketLockedError past the timeout or once
        the sender stopped."""
        deadline = time.monotonic() + self.timeout
        pause = LOCK_PAUSES[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if self.stopped is not None and self.stopped.is_set():
                raise BucketLockedError(f"stopped while waiting for {self.path}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BucketLockedError(
                    f"the rate-limit bucket file {self.path} stayed locked for "
                    f"{self.timeout:g} s ([rate_limits] lock_timeout_seconds): a process "
                    "holding it is frozen (SIGSTOP, a paused container, a hung filesystem); "
                    f"find it with `fuser -v {self.path}`, resume it (kill -CONT) or end it, "
                    "and run again"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, LOCK_PAUSES[1])

    def check(self, algorithm, rates, now, weight):
        with self.locked() as fd:
            state = self._load(fd, algorithm, rates)
            new_state, decision = algorithm.step(rates, state, now, weight)
            if decision.allowed:
                os.pwrite(fd, struct.pack(f"<{len(new_state)}q", *new_state), 0)
            return decision

    def read(self, algorithm, rates):
        with self.locked() as fd:
            return self._load(fd, algorithm, rates)

    def reset(self) -> None:
        with self.locked() as fd:
            os.ftruncate(fd, 0)

    def _load(self, fd: int, algorithm, rates) -> tuple:
        """The stored state, or a fresh one when there is none or it cannot be from this
        boot: a time further ahead than twice what a full bucket takes to drain (the
        monotonic clock starts again at a reboot)."""
        size = struct.calcsize(f"<{len(rates)}q")
        data = os.pread(fd, size, 0)
        if len(data) != size:
            return algorithm.initial(rates)
        state = struct.unpack(f"<{len(rates)}q", data)
        drain_ms = max(math.ceil(r.burst * r.interval / r.limit) for r in rates)
        if max(state) > (self.default_clock.now() + 2 * drain_ms + 1) * 1000:
            return algorithm.initial(rates)
        return state
