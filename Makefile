# HVMind: build, test, run, bench.
GO        ?= go
BIN       := bin
NATS_VER  := v0.5.0
SERVER_VER:= v2.15.2
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin

.PHONY: build test fuzz run game pool bench chaos tools vet fmt clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The tests start real processes (built into bin/) and use the nats CLI and
# an external nats-server, which `tools` installs.
test: build tools
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . ; echo "gofmt needed"; exit 1)
	PATH="$(CURDIR)/$(BIN):$(GOBIN_DIR):$$PATH" $(GO) test -race -count=1 -timeout 12m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

# Each fuzz target: by default for a count of inputs, about 5 s of each on
# a 2-core machine; with FUZZTIME (make fuzz FUZZTIME=10m) for that long.
# A count, not a duration, by default: with a duration Go's fuzzing
# (before Go 1.27, golang/go#75804) now and then fails a run at its end
# with "context deadline exceeded" and no input at fault. Their seed
# corpora are in the tests, and what a run finds is kept under
# testdata/fuzz to be committed.
FUZZTIME ?=
FUZZ := ./job:FuzzParse:300000x ./pool:FuzzServiceRequests:15000x ./pool/timeline:FuzzTimeline:20000x \
	./world:FuzzWorldRequests:2000x ./world/game:FuzzParseScenario:20x ./world/game:FuzzGrowThreads:300000x \
	./world/game:FuzzRunFormulas:60000x
fuzz:
	@for t in $(FUZZ); do pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; budget=$${rest#*:}; \
		budget=$(if $(FUZZTIME),$(FUZZTIME),$$budget); \
		echo "fuzz $$name ($$pkg) for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$budget $$pkg >/tmp/hvmind-fuzz.out 2>&1 || { cat /tmp/hvmind-fuzz.out; exit 1; }; \
	done

# The nats CLI and nats-server for the tests, Debian's Chromium for the web
# UI's browser test and Node.js for the game executor's (installed with
# apt-get when they are missing and this runs as root; otherwise install
# them yourself).
tools:
	@command -v nats >/dev/null 2>&1 || test -x $(GOBIN_DIR)/nats || $(GO) install github.com/nats-io/natscli/nats@$(NATS_VER)
	@command -v nats-server >/dev/null 2>&1 || test -x $(GOBIN_DIR)/nats-server || $(GO) install github.com/nats-io/nats-server/v2@$(SERVER_VER)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || \
		{ test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 && \
		  echo "installing Debian's chromium for the browser test" && \
		  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "no Chromium: the web UI's browser test will fail; install the chromium package"
	@command -v node >/dev/null 2>&1 || \
		{ test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 && \
		  echo "installing Debian's nodejs for the game executor's tests" && \
		  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; } || \
		echo "no node: the game executor's tests will fail; install Node.js 20.10 or later"

DATA   ?= $(HOME)/.local/share/hvmind
TARGET ?= --auto
SPEED  ?= 60
# HTTP is where the pool serves the jobs' live timeline and its metrics.
HTTP   ?= 127.0.0.1:7464

# The main job: the pool (embedded broker, the world at SPEED times game
# speed) in the background, and the batcher on TARGET with its dashboard.
# Ctrl-C stops the batcher, which lets its batches in flight land; then the
# pool (in a session of its own, so that Ctrl-C does not stop it first) and
# the workers stop.
run: build
	@mkdir -p "$(DATA)"
	@echo "the jobs' live timeline: http://$(HTTP)/ (metrics: http://$(HTTP)/metrics; the pool logs to $(DATA)/pool.out)"
	@setsid $(BIN)/hvmind-pool --data "$(DATA)" --speed $(SPEED) --stop-workers --size-policy host --fill-hosts --worker-process local --tolerance 50ms --http $(HTTP) --log-format json >>"$(DATA)/pool.out" 2>&1 & pool=$$!; \
	trap 'kill $$pool 2>/dev/null; wait $$pool' EXIT INT TERM; \
	$(BIN)/hvmind-manager $(TARGET) --timeline http://$(HTTP)/

# The live game: the pool plays it through the executor the player
# installs in the game's terminal (the line below), the batcher on TARGET.
# Ctrl-C stops both, as with run.
game: build
	@mkdir -p "$(DATA)"
	@echo "in the game's terminal: wget http://$(HTTP)/hvmind.js hvmind.js, then run hvmind.js"
	@echo "the jobs' live timeline: http://$(HTTP)/ (the pool logs to $(DATA)/game.out)"
	@setsid $(BIN)/hvmind-pool --game --data "$(DATA)" --stop-workers --size-policy host --fill-hosts --worker-process local --tolerance 50ms --http $(HTTP) --log-format json >>"$(DATA)/game.out" 2>&1 & pool=$$!; \
	trap 'kill $$pool 2>/dev/null; wait $$pool' EXIT INT TERM; \
	$(BIN)/hvmind-manager $(TARGET) --gap $(GAME_GAP) --timeline http://$(HTTP)/

# The game lands an operation late by up to tens of milliseconds now and
# then (its timers are a browser page's): with the simulated world's 2 ms
# between landings, or 20 ms, a grow and its weaken swap places there.
GAME_GAP ?= 100ms

# The pool alone, with four local workers and its live table, the world at
# SPEED times game speed (the README's world example lands in seconds).
pool: build
	@echo "hvmind-pool: four local workers, the world at $(SPEED)x game speed; Ctrl-C stops it and its workers"
	$(BIN)/hvmind-pool --workers 4 --threads 64 --speed $(SPEED) --tail

bench: build
	$(BIN)/hvmind-manager bench dispatch

# The chaos test at length: the batcher on reference-880 at 60x while a
# driver kills and restarts the broker, the pool, the worker process and the
# batcher (CI runs four kills on a new game). KILLS and SCENARIO override.
KILLS    ?= 24
SCENARIO ?= reference-880
chaos: build tools
	PATH="$(CURDIR)/$(BIN):$(GOBIN_DIR):$$PATH" HVMIND_CHAOS_KILLS=$(KILLS) HVMIND_CHAOS_SCENARIO=$(SCENARIO) \
		$(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./e2e

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
