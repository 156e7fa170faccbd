# merkle-notary developer entry points. Every target installs what it needs:
# the Debian packages (apt-get, as root or through sudo), a virtual environment
# in .venv, and the PyPI packages pinned with hashes in requirements/*.txt.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Debian packages the suite and the dev stack use: SoftHSM2 (the HSM), OpenSSL
# (the local TSA and `openssl ts -verify`), sqlite3 (store inspection), and the
# venv module for distributions that split it out; opensc-pkcs11 for
# pkcs11-spy, which the hsm tests use to count PKCS#11 calls (one C_Login);
# chromium (headless) and a font to render the evidence pack's HTML report.
DEB_PACKAGES := softhsm2 openssl sqlite3 ca-certificates python3-venv opensc-pkcs11 chromium fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: test run deps venv lock bench clean

test: deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): requirements/main.txt requirements/test.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes \
	  -r requirements/main.txt -r requirements/test.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The daemon with its real dev components (SoftHSM2 token, dev TSA, SeaweedFS
# with Object Lock) under var/dev; prints how to submit, prove and verify.
run: deps venv
	$(VENV)/bin/notary run --dev --data-dir var/dev --listen 127.0.0.1:8640

# Re-pin every dependency with hashes (needs pip-tools; run after editing *.in).
lock:
	$(PY) -m pip install -q pip-tools
	cd requirements && ../$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras -o main.txt main.in
	cd requirements && ../$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras -o test.txt test.in

bench: deps venv
	$(PY) -m bench.merkle

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
