# pgbb — parallel PostgreSQL base backups over SQL connections.
GO      ?= go
PREFIX  ?= /usr/local
BINDIR  := bin

.PHONY: all build test test-matrix unit demo install clean deps fuzz soak bench

all: build

# The source revision --version prints (docs/toolbox.md), "-dirty" when the tree has changes.
REVISION = $(shell r=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD || r=$$r-dirty; } && echo $$r)
build:
	$(GO) build -ldflags "-X github.com/pgbb/pgbb/internal/cliapp.builtRevision=$(REVISION)" -o $(BINDIR)/ ./cmd/...

# Installs what the tests and the demo need (PostgreSQL 15 server and client tools, GNU parallel) when
# missing, and the server binaries of the other majors the version tests use (cached); a no-op where they
# are present.
deps:
	scripts/install-deps
	scripts/install-pg-majors $(MAJORS_TEST) >/dev/null

# The whole suite: pure packages and the end-to-end pipelines against real PostgreSQL servers.
MAJORS_TEST ?= 15 17 18
test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...
	$(MAKE) fuzz FUZZTIME=10s

# The version tests (primary under load, standby under its primary's load, restore oracle with each major's
# stock verifier) on every supported major; make test runs them on 15 and 18. The server binaries of the
# majors other than Debian's 15 are fetched once by scripts/install-pg-majors and cached.
MAJORS ?= 13 14 15 16 17 18
test-matrix: deps build
	PGBB_MAJORS="$(MAJORS)" $(GO) test -count=1 -timeout 60m -run 'TestEveryMajorUnderLoad|TestStandbyUnderPrimaryLoad|TestStandbyPromotedDuringBackup' -v ./e2e

# Short runs of every fuzz target (the corpora in testdata/fuzz are replayed by every go test as well).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./internal/chunkstream
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./internal/worklist
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/manifest

# The plain under-load backup-and-restore check N times in a row (not in CI): make soak N=50
N ?= 10
soak: deps build
	scripts/soak $(N)

# The benchmarks of docs/BENCHMARKS.md, native pg_basebackup and pgbb side by side on one throwaway cluster
# per script (not in CI; on a quiet machine; capped.sh needs root for ip netns and tc). RUNS per variant.
RUNS ?= 3
bench: deps build
	bench/plain.sh 50 $(RUNS)
	bench/capped.sh 10 $(RUNS) 1 2 4 8
	bench/tar.sh 50 $(RUNS)
	bench/manyfiles.sh 20000 $(RUNS)
	bench/growth.sh "10 100" $(RUNS)
	bench/resume.sh 50 $(RUNS) 4 0.6
	bench/incremental.sh 50 $(RUNS) 4 20
	bench/maxrate.sh 50 4
	bench/hosts.sh 10 1 2
	bench/reference.sh 50 $(RUNS) 4 20
	PGBB_PGBIN=$$(scripts/install-pg-majors 18 | cut -f2) bench/reference.sh 50 $(RUNS) 4 20

# Pure packages only (no server needed).
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /e2e -e /pgtest)

demo: deps build
	scripts/demo

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINDIR)/pgbb-list $(BINDIR)/pgbb-fetch $(BINDIR)/pgbb-xlog $(BINDIR)/pgbb-pack scripts/pgbb-basebackup $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf $(BINDIR)
