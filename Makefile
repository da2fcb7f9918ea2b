# haagent: `make demo` runs the main job on one machine, `make test` installs what the
# tests need and runs them all.
SHELL := /bin/bash
VERSION := $(shell cat VERSION)
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/haagent/haagent/base/release.Version=$(VERSION) -X github.com/haagent/haagent/base/release.Commit=$(COMMIT)
BIN := bin/haagent
export CGO_ENABLED := 0

.PHONY: build man reference test e2e demo lab conformance bench chaos deps kube airgap clean

build:
	go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/haagent

# man writes a man page per command into MAN_DIR (next to the binary), gzipped as
# distros ship them. The binary writes them itself, so that they say what it does; they
# are dated by the last commit, so that one tree always makes the same pages.
MAN_DIR ?= $(dir $(BIN))man
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
man: build
	mkdir -p $(MAN_DIR)
	rm -f $(MAN_DIR)/haagent*.1 $(MAN_DIR)/haagent*.1.gz
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(BIN) gen-man $(MAN_DIR)
	gzip -9n $(MAN_DIR)/haagent*.1

# reference writes docs/reference.md, every flag and command, from the binary; a test in
# cmd/haagent fails when it is stale.
reference: build
	$(BIN) gen-reference docs/reference.md

# deps installs the Debian packages the tests and benchmarks use (apt-get, as root).
deps:
	./scripts/deps.sh

# kube builds the real Kubernetes 1.37.2 and flannel 0.28.10 binaries the e2e test runs,
# CoreDNS, containerd 2.4, and Kubernetes' conformance suite (e2e.test, ginkgo and its
# test images' programs), cached outside the repo (about 25 minutes the first time on 2
# cores, then instant).
kube:
	./scripts/build-kube.sh

# test runs everything: unit tests with -race, the --peers and join request fuzzers for a
# few seconds each, the
# integration tests (processes on 127.0.0.x, and in network namespaces), the packaging
# tests and the e2e test on real systemd hosts. Packages run one at a time (-p 1): the
# timing tests measure failover and must not share the two cores with an e2e cluster.
# HAAGENT_REQUIRE_ROOT_TESTS=1 makes every root-only test fail where it would skip
# (test/framework/rootonly): a run that is not root fails instead of passing untested.
test: deps build kube
	HAAGENT_REQUIRE_ROOT_TESTS=1 HAAGENT_BIN=$(CURDIR)/$(BIN) CGO_ENABLED=1 go test -race -p 1 -count=1 -timeout 60m ./...
	go test -run='^$$' -fuzz=FuzzParsePeers -fuzztime=5s ./embed/etcdmember/
	go test -run='^$$' -fuzz=FuzzJoinRequest -fuzztime=5s ./trust/join/

# airgap writes dist/haagent-airgap-images-$(VERSION).tar, the CoreDNS image as a
# docker-archive: for sites with no registry, drop it into each minion's
# /var/lib/haagent/images/ (haagent imports it into containerd at start).
COREDNS_BIN ?= /var/cache/haagent/kube/coredns-v1.14.6/bin/coredns
airgap:
	./scripts/build-kube.sh coredns >/dev/null
	mkdir -p dist
	go run ./test/framework/images/airgapimages -coredns $(COREDNS_BIN) -o dist/haagent-airgap-images-$(VERSION).tar

e2e: deps build kube
	HAAGENT_REQUIRE_ROOT_TESTS=1 HAAGENT_BIN=$(CURDIR)/$(BIN) go test -count=1 -timeout 45m -v ./test/e2e/

demo: build
	HAAGENT_BIN=$(CURDIR)/$(BIN) go run ./test/tools/demo

# lab boots the walkthrough's six hosts (lb1, master1-3, minion1-2) and returns once both
# minions are Ready; `go run ./test/tools/lab help` says what else it does. Root, Linux.
lab: deps kube
	go run ./test/tools/lab up

# conformance runs every [Conformance] spec of Kubernetes' own suite (e2e.test v1.37.2)
# on the lab, offline, through the VIP: it brings the lab up if it is not, builds the
# suite's images and pushes them into lb1's registry, prints a summary and keeps the
# JUnit report in dist/conformance. CONFORMANCE_ARGS passes flags, e.g.
# CONFORMANCE_ARGS='-halt master1 -halt-after 10m'; go run ./test/tools/lab conformance -h
# lists them.
conformance: deps kube
	go run ./test/tools/lab up
	go run ./test/tools/lab conformance $(CONFORMANCE_ARGS)

bench: deps build kube
	HAAGENT_BIN=$(CURDIR)/$(BIN) go run ./test/tools/bench

# chaos runs the long chaos schedule (test/chaos, about 3 minutes, root): clients read
# and write through the lb while masters and the lb are killed, blackholed and
# partitioned three times over, and porcupine checks the history for linearizability;
# then the same checker must flag two independent etcds behind a round-robin proxy.
# make test runs the short version (the schedule once).
chaos: deps build
	HAAGENT_REQUIRE_ROOT_TESTS=1 HAAGENT_BIN=$(CURDIR)/$(BIN) go test -count=1 -timeout 30m -v -run 'TestChaos' ./test/chaos/ -chaos.long

clean:
	rm -rf bin dist

include packaging/package.mk
