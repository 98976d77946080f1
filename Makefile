# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: venv demo notebooks book test test-unit test-notebooks test-browser test-browser-if-available \
        lint lab bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# The book's tools (the `book` extra of pyproject.toml), installed into .venv when missing.
BOOK_STAMP := $(VENV)/.book-stamp
$(BOOK_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[book]"
	@touch $(BOOK_STAMP)

demo: $(STAMP)  ## build the demo data if missing, train briefly, sample, write outputs/
	MPLBACKEND=Agg $(BIN)/python -m oasis_lib demo --out outputs

lint: $(STAMP)
	$(BIN)/ruff check .

test-unit: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -m "not browser" tests

# Execute every notebook as `make test-notebooks` checks it and store the outputs; empties the
# "reveal the solution" cells and rewrites the series list (tools/notebooks.py).
notebooks: $(STAMP)
	$(BIN)/python -m oasis_lib make-demo --out data/demo
	$(BIN)/python tools/notebooks.py execute

test-notebooks: $(STAMP)
ifneq ($(NOTEBOOKS),)
	@# Build the demo data first (a no-op when an identical build exists), so that no
	@# notebook prints the one-time build message that the committed outputs do not have.
	$(BIN)/python -m oasis_lib make-demo --out data/demo
	@# One torch thread: the committed outputs were computed so, and a kernel with two OpenMP
	@# threads stalls on a busy 2-core machine (nbval waits up to --nbval-output-timeout, 120 s).
	MPLBACKEND=Agg OASIS_CI=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --nbval --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider $(NOTEBOOKS)
else
	@echo "no notebooks yet"
endif

# The numbered notebooks as a static website, from their committed outputs (nothing runs):
# _build/book/html/index.html. Sphinx + myst-nb + sphinx-book-theme (docs/book/conf.py); every
# warning, a broken link between notebooks included, fails the build. tests/test_book.py checks
# the site in Chromium.
# Rebuilt only when a notebook or a page changed (a failed build leaves no index.html behind).
BOOK_INDEX := _build/book/html/docs/book/index.html
BOOK_SOURCES := $(wildcard notebooks/[0-9][0-9]_*.ipynb docs/book/* docs/book/root/* \
                           benchmarks/results/*.md)
$(BOOK_INDEX): $(BOOK_STAMP) $(BOOK_SOURCES)
	$(BIN)/python -m sphinx -b html -W --keep-going -n -q -c docs/book . _build/book/html \
		|| { rm -f $(BOOK_INDEX); exit 1; }
	@touch $(BOOK_INDEX)

book: $(BOOK_INDEX)

# The sliders as a reader uses them: JupyterLab in headless Chromium (tests/test_browser.py).
# Needs Debian's Chromium: apt-get install chromium chromium-driver (never `playwright install`).
# Screenshots, the server log and timings.json go to test-artifacts/browser/.
# OASIS_BROWSER_ALL=1 also runs the long notebooks 04 and 06 in the browser.
# It also checks the book's pages (tests/test_book.py, screenshots in test-artifacts/book/).
test-browser: $(STAMP) book
	$(BIN)/python -m pytest -q -s -rs -m browser -p no:cacheprovider tests

# `make test` runs the browser tests where Chromium is installed, and says so where it is not.
test-browser-if-available: $(STAMP)
	@if command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium; then \
		$(MAKE) --no-print-directory test-browser; \
	else \
		echo "skipping browser tests: /usr/bin/chromium not found (apt-get install chromium)"; \
	fi

test: lint test-unit test-notebooks book test-browser-if-available  ## ruff, tests, nbval, book, browser

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_models.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache _build
