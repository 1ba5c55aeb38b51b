"""Open a page in the machine's headless Chromium through Playwright, for the report tests.

The system's ``chromium`` is driven (never a browser Playwright downloads), with the flags
the visualiser test uses: no sandbox, no GPU, and none of Chromium's own background traffic,
so the only requests are the page's. :func:`open_page` records what a test asserts: console
messages, page errors and every request other than the page itself::

    with open_page(path) as page:
        assert page.errors == [] and page.requests == []
        page.evaluate("document.querySelectorAll('svg').length")
        page.screenshot("report.png")      # into var/test-artifacts/
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import REPO

ARTIFACTS = REPO / "var" / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Page:
    """A loaded page and what it did while loading."""

    url: str
    handle: Any  # playwright's Page
    console: list[str] = field(default_factory=list)  # "error: ..." , "warning: ..."
    errors: list[str] = field(default_factory=list)  # uncaught page errors
    requests: list[str] = field(default_factory=list)  # any request but the page's own
    failed: list[str] = field(default_factory=list)  # requests that failed

    @property
    def console_errors(self) -> list[str]:
        return [line for line in self.console if line.startswith("error:")]

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.handle.evaluate(script, arg)

    def hooks(self) -> list[dict]:
        """Every element with a data-value: its data-* attributes without the prefix, named
        as in the HTML (``channel``, ``status``, ``rejected-reason``) and its text."""
        return self.evaluate(
            "Array.from(document.querySelectorAll('[data-value]')).map(e => Object.fromEntries("
            "[...e.getAttributeNames().filter(n => n.startsWith('data-'))"
            ".map(n => [n.slice(5), e.getAttribute(n)]), ['text', e.textContent.trim()]]))"
        )

    def charts(self) -> dict[str, int]:
        """Each inline chart's name and how many drawn shapes (path, rect, line) it has."""
        return self.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('svg.chart'))"
            ".map(s => [s.dataset.chart, s.querySelectorAll('path, rect, line, use').length]))"
        )

    def screenshot(self, name: str) -> Path:
        """A full-page PNG in var/test-artifacts/ (or at *name* when it is a path)."""
        path = Path(name) if "/" in name else ARTIFACTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle.screenshot(path=str(path), full_page=True)
        return path


def chromium() -> str:
    """The system Chromium's path; the tests need it (``make test`` installs it)."""
    path = shutil.which("chromium")
    assert path, "chromium is needed for the report checks; `make test` installs it"
    return path


@contextmanager
def open_page(path: Path, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """Load the file at *path* in headless Chromium and yield it, with its console, errors
    and requests recorded; the browser is closed on leaving."""
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            handle = context.new_page()
            page = Page(url, handle)
            handle.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
            handle.on("pageerror", lambda e: page.errors.append(str(e)))
            handle.on("request", lambda r: r.url != url and page.requests.append(r.url))
            handle.on("requestfailed", lambda r: page.failed.append(r.url))
            handle.goto(url, wait_until="load")
            yield page
        finally:
            browser.close()
