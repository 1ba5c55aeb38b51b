"""The run report: report.json and a self-contained report.html per run folder."""

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
