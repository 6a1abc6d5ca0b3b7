# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HTTP_PORT ?= 8080
# Loopback only: the demo has no API keys. HTTP_HOST=0.0.0.0 exposes it (then set
# SMSAPI_AUTH=required and SECRET_KEY; `manage.py serve` warns otherwise).
HTTP_HOST ?= 127.0.0.1
SIMULATOR_PORT ?= 2775
# The test runs' PostgreSQL (its test databases are made beside `test`) and Redis;
# two runs on one host need their own names: `make test PG_TEST_DB=a FAULTS_TEST_DB=b
# REDIS_TEST_URL=redis://127.0.0.1:6379/4`.
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
PG_TEST_DB ?= test_smsapi
FAULTS_TEST_DB ?= test_faults
REDIS_TEST_URL ?= redis://127.0.0.1:6379/3

.PHONY: run test test-sqlite test-postgres faults bench lint install install-dev browser migrate simulator worker clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(PY) manage.py migrate --noinput -v 0

# The whole service with its embedded defaults: SQLite, the in-process channel
# layer and, unless SMPP_ADDR names a real SMSC, the bundled simulator.
run: migrate
ifeq ($(strip $(SMPP_ADDR)),)
	$(PY) manage.py serve --host $(HTTP_HOST) --port $(HTTP_PORT) --simulator $(SIMULATOR_PORT)
else
	$(PY) manage.py serve --host $(HTTP_HOST) --port $(HTTP_PORT)
endif

simulator: install
	$(PY) manage.py smsc_simulator --port $(SIMULATOR_PORT)

worker: migrate
	$(PY) manage.py smpp_worker

# Headless Chromium for the dashboard test (Debian's package; Playwright cannot
# download its own browser here).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the dependency contract in pyproject.toml

# Lint, the whole suite on SQLite, the store and end-to-end tests again on
# PostgreSQL with the Redis channel layer, then the fault suite.
test: install-dev browser lint test-sqlite test-postgres faults

test-sqlite: install-dev
	$(PY) -m pytest -q

test-postgres: install-dev
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) SMSAPI_TEST_DB_NAME=$(PG_TEST_DB) \
		$(PY) -m pytest -q -m store

# Thousands of messages through every SMSC fault and a worker killed at random
# moments; prints one line of figures per scenario (also in test-output/faults.json).
faults: install-dev
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) SMSAPI_TEST_DB_NAME=$(FAULTS_TEST_DB) \
		$(PY) -m pytest -q -s -p no:logging -m faults tests/faults

# The performance figures of issue 7 (docs/performance.md): the service as processes,
# embedded (SQLite) then PostgreSQL + Redis (as for `make test`); prints a table and
# writes bench/results.json. wrk (Debian's package) is the HTTP load generator.
# Then one message a request beside Kannel (issue 23; bench/per_message.py installs
# Debian's kannel when missing): bench/results-per-message.json.
bench: install-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) bench/run.py
	$(PY) bench/per_message.py

clean:
	rm -rf $(VENV) data/*.sqlite3* test-output
