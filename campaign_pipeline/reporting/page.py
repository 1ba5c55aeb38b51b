"""report.html: a placeholder page (the figures as JSON), replaced by the charted page."""

from __future__ import annotations

import html
import json


def render(report: dict) -> str:
    """The whole page: the report's JSON, escaped, in a <pre>."""
    title = html.escape(f"{report.get('campaign', '')} {report.get('date', '')}")
    body = html.escape(json.dumps(report, indent=2, ensure_ascii=False))
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>Campaign report {title}</title></head>\n"
        f"<body><h1>Campaign report {title}</h1>\n<pre>{body}</pre></body></html>\n"
    )
