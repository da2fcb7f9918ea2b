# haagent: `make demo` runs the main job on one machine, `make test` installs what the
# tests need and runs them all.
SHELL := /bin/bash
VERSION := $(shell cat VERSION)
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/haagent/haagent/version.Version=$(VERSION) -X github.com/haagent/haagent/version.Commit=$(COMMIT)
BIN := bin/haagent
export CGO_ENABLED := 0

.PHONY: build test unit integration demo bench deps clean

build:
	go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/haagent

# deps installs the Debian packages the tests and benchmarks use.
deps:
	./scripts/deps.sh

test: deps build
	HAAGENT_BIN=$(CURDIR)/$(BIN) CGO_ENABLED=1 go test -race -count=1 -timeout 20m ./...
	go test -run=^$$ -fuzz=FuzzParsePeers -fuzztime=5s ./embed/

demo: build
	HAAGENT_BIN=$(CURDIR)/$(BIN) go run ./test/demo

bench: deps build
	HAAGENT_BIN=$(CURDIR)/$(BIN) go run ./test/bench

clean:
	rm -rf bin
