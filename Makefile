# bastiond: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   := $(PREFIX)/bin
UNITDIR  ?= /etc/systemd/system
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO       ?= go
LDFLAGS  := -s -w -X github.com/bastiond/bastiond/internal/version.Version=$(VERSION)
BIN      := bin
UID      := $(shell id -u)
FUZZTIME ?= 30s

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: web
web: web/node_modules/.package-lock.json ## build the browser client into web/dist (tsc, esbuild)
	cd web && npm run --silent build

# npm ci only when node_modules is missing or older than the lock file; npm
# writes node_modules/.package-lock.json on every install.
web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null || { echo "make web needs node >= 18 and npm: run 'sudo make deps'"; exit 1; }
	cd web && npm ci --no-audit --no-fund
	@touch $@

.PHONY: build
build: web ## build bin/bastiond and bin/bastionctl
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/bastiond ./cmd/bastionctl

# Release builds: bastionctl for every desktop, bastiond for Linux servers. CGO off (static binaries, cross-compiled
# without a C toolchain; bastiond then resolves user and group names from /etc/passwd and /etc/group, where
# systemd-sysusers puts its own), -trimpath and no VCS stamp (the version comes from git describe through VERSION),
# so that the same source and Go toolchain give the same bytes: make release-check checks it.
DIST            ?= dist
RELEASE_TARGETS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
DAEMON_TARGETS  ?= linux/amd64 linux/arm64
RELEASE_CHECK   ?= linux/amd64

.PHONY: release release-bin release-check
release: web ## build bastionctl for RELEASE_TARGETS and bastiond for DAEMON_TARGETS into dist/, with SHA256SUMS
	@$(MAKE) --no-print-directory release-bin

release-bin: # release without building web/dist first (release-check)
	rm -rf $(DIST)
	mkdir -p $(DIST)
	@set -e; for t in $(RELEASE_TARGETS:%=bastionctl/%) $(DAEMON_TARGETS:%=bastiond/%); do \
	  cmd=$${t%%/*}; os=$${t#*/}; os=$${os%/*}; arch=$${t##*/}; out=$(DIST)/$$cmd-$(VERSION)-$$os-$$arch; \
	  if [ "$$os" = windows ]; then out=$$out.exe; fi; \
	  echo "release: $$out"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' -o $$out ./cmd/$$cmd; \
	done
	cd $(DIST) && sha256sum -- * > SHA256SUMS

release-check: ## build bastionctl for RELEASE_CHECK here and from a copy elsewhere with an empty build cache: same bytes?
	@GO=$(GO) VERSION=$(VERSION) bash test/reproducible.sh $(RELEASE_CHECK)

.PHONY: package
package: web ## build bastiond's .deb and .rpm for PKG_ARCHES (default amd64 arm64) into dist/ with nfpm (packaging/)
	@GO=$(GO) VERSION=$(VERSION) DIST=$(DIST) bash packaging/build.sh

.PHONY: deps deps-test
deps: ## install the system packages the demo needs (root, idempotent)
	@bash test/deps.sh demo
deps-test: ## install the system packages the tests need too: browser, nmap, iperf3, ... (root, idempotent)
	@bash test/deps.sh test

.PHONY: test
test: lint ## run every test: unit tests, and as root the network-namespace lab tier
ifeq ($(UID),0)
	@bash test/deps.sh test
	@$(MAKE) --no-print-directory web
	@# The lab tiers take turns on the one lab (flock): a package's clock runs
	@# while it waits for the one before it, hence the long timeout.
	@# test/testtimes prints what go test would, then the slowest tests.
	set -o pipefail; $(GO) test -race -timeout 50m -count=1 -json ./... | $(GO) run ./test/testtimes
else
	@echo "make test: not root, so the root tier (network-namespace lab: real sshd, FreeRDP, nftables) is SKIPPED; run 'sudo make test' for it"
	@$(MAKE) --no-print-directory web
	set -o pipefail; $(GO) test -race -timeout 30m -count=1 -json ./... | $(GO) run ./test/testtimes
endif

.PHONY: lint
lint: ## gofmt, go vet, every relative link in the Markdown files resolves inside the repository, no test hooks, the layers hold
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./test/doclinks/ ./test/testhooks/ ./test/layers/

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s; a count such as 20000x works too)
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash test/fuzz.sh

.PHONY: bench
bench: ## run the benchmarks (see BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

.PHONY: demo
demo: ## start the lab and bastiond in it; prints the URL and credentials (root); CLUSTER=1: two instances behind a balancer on PostgreSQL
	@if [ "$(UID)" != 0 ]; then echo "make demo needs root (network namespaces): sudo make demo"; exit 1; fi
	@bash test/deps.sh $(if $(CLUSTER),demo-cluster,demo)
	@echo "demo: building bastiond and bastionctl"
	@$(MAKE) --no-print-directory -s build
	@CLUSTER=$(CLUSTER) bash test/demo.sh $(BIN)

.PHONY: lab-up lab-down
lab-up: ## bring the test lab up (root)
	bash test/lab/lab.sh up
lab-down: ## tear the test lab down (root)
	bash test/lab/lab.sh down

.PHONY: install
install: build ## install binaries, systemd units and the example config (PREFIX, DESTDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)/usr/lib/sysusers.d $(DESTDIR)/usr/lib/tmpfiles.d $(DESTDIR)/etc/bastiond
	install -m 0755 $(BIN)/bastiond $(BIN)/bastionctl $(DESTDIR)$(BINDIR)/
	sed 's#/usr/local/bin/#$(BINDIR)/#g' systemd/bastiond.service > $(DESTDIR)$(UNITDIR)/bastiond.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/bastiond.service
	install -m 0644 systemd/bastiond.socket $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/sysusers.d/bastiond.conf $(DESTDIR)/usr/lib/sysusers.d/bastiond.conf
	install -m 0644 systemd/tmpfiles.d/bastiond.conf $(DESTDIR)/usr/lib/tmpfiles.d/bastiond.conf
	@if [ -e $(DESTDIR)/etc/bastiond/bastiond.yaml ]; then \
	  echo "keeping the existing /etc/bastiond/bastiond.yaml; the example is at /etc/bastiond/bastiond.example.yaml"; \
	else install -m 0640 systemd/bastiond.example.yaml $(DESTDIR)/etc/bastiond/bastiond.yaml; fi
	install -m 0644 systemd/bastiond.example.yaml $(DESTDIR)/etc/bastiond/bastiond.example.yaml
	@# The daemon runs as bastiond and reads its config through the group.
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null && [ -d /run/systemd/system ]; then \
	  systemd-sysusers bastiond.conf && systemd-tmpfiles --create bastiond.conf && systemctl daemon-reload; \
	  chgrp bastiond /etc/bastiond /etc/bastiond/bastiond.yaml; \
	  echo "edit /etc/bastiond/bastiond.yaml, then: systemctl enable --now bastiond.socket bastiond.service"; fi

.PHONY: uninstall
uninstall: ## remove what install put in place (keeps /etc/bastiond and state)
	rm -f $(DESTDIR)$(BINDIR)/bastiond $(DESTDIR)$(BINDIR)/bastionctl \
	  $(DESTDIR)$(UNITDIR)/bastiond.service $(DESTDIR)$(UNITDIR)/bastiond.socket \
	  $(DESTDIR)/usr/lib/sysusers.d/bastiond.conf $(DESTDIR)/usr/lib/tmpfiles.d/bastiond.conf

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN) $(DIST)
	find web/dist -mindepth 1 ! -name README.txt -delete
