# campaign_pipeline: `make run` (demo against the bundled sandbox) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SANDBOX_PORT ?= 8765
SANDBOX_URL := http://127.0.0.1:$(SANDBOX_PORT)
# pytest arguments, e.g. make test PYTEST_ARGS='-k ledger -x'; TEST_WORKERS=1 runs them one by one
TEST_WORKERS ?= 3
PYTEST_ARGS ?=
# the central scheduler (luigid) of `make scheduler`, and the one `make daily` looks for
SCHEDULER_HOST ?= 127.0.0.1
SCHEDULER_PORT ?= 8082
export SCHEDULER_HOST SCHEDULER_PORT
# campaign-run's logs are in [campaign] log_dir (var/log of the checkout); LOG_DIR here only
# names them for clean-data (set in the environment, it moves them too)
LOG_DIR ?= var/log
LUIGID_DIR ?= var/luigid
# the campaigns' run folders ([campaign] output_dir of luigi.cfg), and the report server of
# `make scheduler` serving their report.html (the visualiser's tracking links) on REPORT_PORT
CAMPAIGN_DATA ?= var/campaigns
REPORT_HOST ?= 127.0.0.1
REPORT_PORT ?= 8084

.PHONY: run preview bench test test-fast lint format clean clean-data scheduler scheduler-stop daily backfill browser

$(STAMP): setup.cfg pyproject.toml
	@echo "creating $(VENV) and installing campaign_pipeline with its dependencies" \
	  "(pip, about a minute the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools warns, on every editable install, that a folder named like the package in
	@# the current one could shadow it: here that folder is the package itself
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## run: the demo campaign on data/sample/customers.csv against the sandbox provider
# Every provider's base URL is forced to the sandbox (CAMPAIGN_PROVIDER_URL) and the
# credentials are made up, so that a production LUIGI_CONFIG_PATH or real credentials in the
# environment are never used here.
# The demo's setup (suppression file, frequency cap, quiet hours, templates) is in
# config/demo.cfg; every demo command reads DEMO_CONFIG, written from it by every demo command
# (so an edit of config/demo.cfg counts at once) with the day's quiet-hours window, chosen
# once per date: it ends DEMO_QUIET_SECONDS after the first demo command of the day in
# Mountain time (a few sample customers are there), so their SMS and push wait for it, and
# nobody waits for a night as the shipped 21:00-08:00 would make a demo at the wrong hour do
# (see README).
DEMO_QUIET_SECONDS ?= 20
DEMO_CONFIG := var/demo.cfg
# Each consent path of the providers on the sample's customers: three addresses on SendGrid's
# own lists, a number that replied STOP and a retired device token (learned from the
# providers' answers). The suppression file and C0000301, C0000005 under a second id need no
# flag.
DEMO_CONSENT := --suppressed-email bounces:Omar.Kim.9@example.org:2026-11-20 \
  --suppressed-email unsubscribes:liam.murphy.10@mail.example.net:2026-11-22 \
  --suppressed-email spam_reports:farid.okafor.11@mail.example.net:2026-11-24 \
  --opted-out +13032660554 \
  --unregistered-token=-SU71ul5IWOpbdC5sGgpdi:APA91bde0KUarPaubu3bFNZl3YfNX_z83buPuAT1kbnH1wxwR3j-KoN0EcPPJTJxHrqJgZ-jOz-7NhInXqMV532XHwTC3n65ynYbQaZ6Rwoy6yQ3bbTpwuBr4F-YE7X9itfa3puN9ndY
# the sandbox of make run and make daily SANDBOX=1, in front of a command
SANDBOXED = $(BIN)/campaign-sandbox --port $(SANDBOX_PORT) --demo-credentials \
  --record var/sandbox-messages.jsonl $(DEMO_CONSENT) -- env CAMPAIGN_PROVIDER_URL=$(SANDBOX_URL)
# Frequency cap: config/demo.cfg caps at 2 messages per contact per channel in 7 days; make run
# imports two messages of an earlier campaign to each of DEMO_CAPPED (campaign-consent
# import-history).
DEMO_CAPPED ?= C0000027,C0000032,C0000051

.PHONY: demo-config
demo-config: $(STAMP)
	@mkdir -p var; today=$$(date +%F); \
	if head -n 1 $(DEMO_CONFIG) 2>/dev/null | grep -q "for $$today:"; then \
	  quiet=$$(sed -n 's/^quiet_hours = //p' $(DEMO_CONFIG)); \
	else \
	  quiet=$$($(BIN)/campaign-consent demo-quiet-hours $(DEMO_QUIET_SECONDS) \
	    --zone America/Denver) || exit 1; \
	fi; \
	{ echo "# written by make for $$today: config/demo.cfg with the day's quiet hours"; \
	  sed "s/^quiet_hours = .*/quiet_hours = $$quiet/" config/demo.cfg; } > $(DEMO_CONFIG).$$$$ && \
	mv $(DEMO_CONFIG).$$$$ $(DEMO_CONFIG)

run: demo-config
	@$(BIN)/python -m campaign_pipeline.sample_data --history $(DEMO_CAPPED) \
	    < data/sample/customers.csv > var/demo-history.csv && \
	LUIGI_CONFIG_PATH=$(DEMO_CONFIG) $(BIN)/campaign-consent import-history var/demo-history.csv
	@$(SANDBOXED) LUIGI_CONFIG_PATH=$(DEMO_CONFIG) \
	  $(BIN)/luigi --module campaign_pipeline RunCampaign --local-scheduler; \
	status=$$?; echo; LUIGI_CONFIG_PATH=$(DEMO_CONFIG) $(BIN)/campaign-report; exit $$status

## preview: a dry run (DATE=..., CAMPAIGN=...): builds every request, sends nothing. It reads
## $LUIGI_CONFIG_PATH, or without one the demo's config, as make run and make daily do
preview: demo-config
	@export LUIGI_CONFIG_PATH=$${LUIGI_CONFIG_PATH:-$(DEMO_CONFIG)}; \
	$(BIN)/luigi --module campaign_pipeline RunCampaign --local-scheduler --dry-run \
	    $(if $(DATE),--date $(DATE)) $(if $(CAMPAIGN),--campaign $(CAMPAIGN)); \
	status=$$?; echo; $(BIN)/campaign-report --dry-run $(if $(DATE),--date $(DATE)) \
	    $(if $(CAMPAIGN),--campaign $(CAMPAIGN)); exit $$status

## test: the whole suite: the unit layer and the end-to-end tests (real HTTP on 127.0.0.1,
## real luigi runs)
test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## test-fast: the unit layer only (every test not marked e2e: no luigi run, no subprocess),
## in seconds; `make test` runs it too, with the end-to-end tests. Two workers, a file each at
## a time: a few tests wait a real second for a quiet-hours window or a token, so the waits
## of one file overlap the work of another
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not e2e' -n 2 --dist loadfile $(PYTEST_ARGS)

# The visualiser test drives headless Chromium (Debian's package); install it when absent.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the visualiser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

## demo: a live campaign to watch in the visualiser: the sandbox with latency, a luigid of
## its own, DEMO_ROWS generated customers (a minute or two), all stopped at the end
DEMO_ROWS ?= 1000
DEMO_RATE ?= 8
DEMO_PORT ?= 8083
DEMO_DIR ?= var/demo
.PHONY: demo
demo: demo-config
	@LUIGI_CONFIG_PATH=$(DEMO_CONFIG) $(BIN)/python -m campaign_pipeline.demo --rows $(DEMO_ROWS) --rate $(DEMO_RATE) \
	    --scheduler-port $(DEMO_PORT) --folder $(DEMO_DIR) --quiet-seconds $(DEMO_QUIET_SECONDS)

## scheduler: start luigid and the report server in the background; scheduler-stop stops both
REPORT_PID = $(LUIGID_DIR)/report-server.pid
REPORT_SERVER = $(BIN)/python -m campaign_pipeline.reporting.server
scheduler: $(STAMP)
	@mkdir -p $(LUIGID_DIR) $(CAMPAIGN_DATA)
	@if [ -f $(LUIGID_DIR)/luigid.pid ] && kill -0 $$(cat $(LUIGID_DIR)/luigid.pid) 2>/dev/null; then \
	  echo "luigid already running (pid $$(cat $(LUIGID_DIR)/luigid.pid))"; \
	else \
	  LUIGI_CONFIG_PATH=config/luigid.cfg nohup $(BIN)/luigid --address $(SCHEDULER_HOST) \
	    --port $(SCHEDULER_PORT) --logdir $(LUIGID_DIR) --state-path $(LUIGID_DIR)/state.pickle \
	    >> $(LUIGID_DIR)/luigid.out 2>&1 & echo $$! > $(LUIGID_DIR)/luigid.pid; \
	fi
	@if [ -f $(REPORT_PID) ] && kill -0 $$(cat $(REPORT_PID)) 2>/dev/null; then \
	  echo "report server already running (pid $$(cat $(REPORT_PID)))"; \
	else \
	  rm -f $(REPORT_PID); \
	  nohup $(REPORT_SERVER) --root $(CAMPAIGN_DATA) --host $(REPORT_HOST) --port $(REPORT_PORT) \
	    --pid-file $(REPORT_PID) >> $(LUIGID_DIR)/report-server.log 2>&1 & started=$$!; \
	  $(REPORT_SERVER) --wait-started $$started --pid-file $(REPORT_PID) --host $(REPORT_HOST) \
	    --port $(REPORT_PORT) --wait 20 || { \
	    kill $$started 2>/dev/null || \
	      echo "report server did not start: $$(tail -n 1 $(LUIGID_DIR)/report-server.log)"; \
	    rm -f $(REPORT_PID); exit 1; }; \
	fi
	@$(BIN)/campaign-run ping --wait 20 || { echo "luigid did not start; see $(LUIGID_DIR)/luigid.out"; exit 1; }
	@echo "visualiser: http://$(SCHEDULER_HOST):$(SCHEDULER_PORT)/static/visualiser/index.html"
	@echo "reports: http://$(REPORT_HOST):$(REPORT_PORT)/"

scheduler-stop:
	@if [ -f $(LUIGID_DIR)/luigid.pid ] && kill $$(cat $(LUIGID_DIR)/luigid.pid) 2>/dev/null; then \
	  echo "luigid stopped"; else echo "luigid was not running"; fi
	@rm -f $(LUIGID_DIR)/luigid.pid
	@if [ -f $(REPORT_PID) ] && kill $$(cat $(REPORT_PID)) 2>/dev/null; then \
	  echo "report server stopped"; else echo "report server was not running"; fi
	@rm -f $(REPORT_PID)

## daily: today's campaign (or DATE=YYYY-MM-DD), by hand. cron calls .venv/bin/campaign-run
# daily itself (config/crontab.example), so that a `git pull` that touched setup.cfg never
# makes it reinstall the package at 06:00. It reads $LUIGI_CONFIG_PATH, or without one the
# demo's config; SANDBOX=1 runs it against the sandbox, as make run: make daily SANDBOX=1
daily: demo-config
	@export LUIGI_CONFIG_PATH=$${LUIGI_CONFIG_PATH:-$(DEMO_CONFIG)}; \
	$(if $(SANDBOX),$(SANDBOXED)) $(BIN)/campaign-run daily \
	    $(if $(DATE),--date $(DATE)) $(if $(CAMPAIGN),--campaign $(CAMPAIGN))

## backfill: every date from START to END, through luigi's RangeDaily
backfill: $(STAMP)
	@test -n "$(START)" -a -n "$(END)" || { echo "usage: make backfill START=YYYY-MM-DD END=YYYY-MM-DD"; exit 2; }
	@$(BIN)/campaign-run backfill --start $(START) --end $(END) $(if $(CAMPAIGN),--campaign $(CAMPAIGN))

## bench: the benchmark table (BENCH_ARGS=--quick for a one-minute check)
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/campaign-bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## clean: delete what can be rebuilt (the venv, caches, Prism, benchmark and test output).
# Campaign data is left alone: that is clean-data.
REBUILDABLE = $(VENV) .pytest_cache .ruff_cache *.egg-info var/prism var/bench \
  var/test-artifacts var/sandbox-messages.jsonl var/demo-history.csv var/demo.cfg
clean:
	rm -rf $(REBUILDABLE)
	find . -type d -name __pycache__ -prune -exec rm -rf {} +
	@echo "campaign data kept: $(CAMPAIGN_DATA) $(LUIGID_DIR) $(LOG_DIR) (make clean-data deletes it)"

## clean-data: delete the campaign data in this folder (ledgers, results, luigid's state,
# logs), after naming it and asking (CONFIRM=yes: no question). It refuses while luigid or a
# campaign run is using it. Folders elsewhere ([campaign] output_dir of a production
# config) are never touched.
CONFIRM ?=
clean-data:
	@found=; for path in $(CAMPAIGN_DATA) $(LUIGID_DIR) $(LOG_DIR); do \
	  [ -e "$$path" ] && found="$$found $$path"; done; \
	if [ -z "$$found" ]; then echo "clean-data: no campaign data here"; exit 0; fi; \
	if [ -f $(LUIGID_DIR)/luigid.pid ] && kill -0 $$(cat $(LUIGID_DIR)/luigid.pid) 2>/dev/null; then \
	  echo "clean-data: luigid (pid $$(cat $(LUIGID_DIR)/luigid.pid)) uses $(LUIGID_DIR): make scheduler-stop first; nothing deleted"; exit 1; fi; \
	if [ -f $(REPORT_PID) ] && kill -0 $$(cat $(REPORT_PID)) 2>/dev/null; then \
	  echo "clean-data: the report server (pid $$(cat $(REPORT_PID))) serves $(CAMPAIGN_DATA): make scheduler-stop first; nothing deleted"; exit 1; fi; \
	for lock in $(CAMPAIGN_DATA)/*/.run.lock; do \
	  [ -e "$$lock" ] || continue; \
	  if command -v flock >/dev/null && ! flock -n "$$lock" true; then \
	    echo "clean-data: a run of campaign $$(basename $$(dirname $$lock)) is in progress ($$lock): wait for it to end; nothing deleted"; exit 1; fi; \
	done; \
	echo "clean-data deletes (not rebuildable):"; \
	for path in $$found; do \
	  case "$$path" in \
	    $(CAMPAIGN_DATA)) what="the campaigns' ledgers, results and rejected rows: without its ledger, a rerun of a date sends to everyone again";; \
	    $(LUIGID_DIR)) what="luigid's state (task history, disabled tasks), pid file and log";; \
	    *) what="the logs of campaign-run daily and backfill";; \
	  esac; \
	  echo "  $$path ($$(du -sh $$path | cut -f1)): $$what"; \
	done; \
	if [ "$(CONFIRM)" != yes ]; then \
	  if [ -t 0 ]; then \
	    printf "delete them? [y/N] "; read answer; \
	    case "$$answer" in y|Y|yes) ;; *) echo "nothing deleted"; exit 1;; esac; \
	  else echo "nothing deleted: run make clean-data CONFIRM=yes to delete them"; exit 1; fi; \
	fi; \
	rm -rf $$found && echo "deleted:$$found"
