# campaign_pipeline: `make run` (demo against the bundled sandbox) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SANDBOX_PORT ?= 8765
SANDBOX_URL := http://127.0.0.1:$(SANDBOX_PORT)
# pytest arguments, e.g. make test PYTEST_ARGS='-k ledger -x'
PYTEST_ARGS ?=

.PHONY: run test lint format clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## run: the demo campaign on data/sample/customers.csv against the sandbox provider
# The base URLs are forced to the sandbox and the credentials are made up, so that a
# production LUIGI_CONFIG_PATH or real credentials in the environment are never used here.
run: $(STAMP)
	@mkdir -p var
	@$(BIN)/campaign-sandbox --port $(SANDBOX_PORT) --demo-credentials \
	    --record var/sandbox-messages.jsonl -- \
	  $(BIN)/luigi --module campaign_pipeline RunCampaign --local-scheduler \
	    --email-api-base-url $(SANDBOX_URL) --sms-api-base-url $(SANDBOX_URL) \
	    --push-api-base-url $(SANDBOX_URL); \
	status=$$?; echo; $(BIN)/campaign-report; exit $$status

## test: the whole suite (real HTTP on 127.0.0.1, real luigi runs)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
