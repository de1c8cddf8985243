# trunkgate — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/trunkgate
SIPP    := $(shell command -v sipp 2>/dev/null)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -ldflags "-X main.version=$(VERSION)"

.PHONY: all build install run test deps vet bench loadtest call fuzz clean

all: build

build:
	$(GO) build $(LDFLAGS) -o $(BIN) ./cmd/trunkgate

## install: put trunkgate in $(go env GOPATH)/bin (have it on PATH), so the README's `trunkgate ...` lines work
install:
	$(GO) install $(LDFLAGS) ./cmd/trunkgate
	@bin=$$($(GO) env GOBIN); [ -n "$$bin" ] || bin=$$($(GO) env GOPATH)/bin; \
		echo "installed $$bin/trunkgate ($$($$bin/trunkgate version))"; \
		case ":$$PATH:" in *":$$bin:"*) ;; *) echo "add it to PATH: export PATH=\"\$$PATH:$$bin\"";; esac

## run: start the edge on SQLite (data/trunkgate.db) with the demo key, trunk and echo app
run: build
	./$(BIN) serve --demo

## call: place one demo call against `make run` with SIPp and check the echo came back
call: deps
	./scripts/demo-call.sh

## test: install SIPp, Kamailio, SIPVicious and PostgreSQL if missing, vet, check formatting, run every test with the
## race detector (-p 1: one package at a time, so the end-to-end timing checks have the cores to themselves),
## then the stores' conformance tests again on PostgreSQL (the tests start their own server)
STORE_PKGS := ./internal/sqldb/... ./keys ./trunks ./billing ./alerts ./cluster ./api
test: deps vet
	TRUNKGATE_PG_REQUIRED=1 $(GO) test -race -count=1 -p 1 ./...
	TRUNKGATE_PG_REQUIRED=1 TRUNKGATE_TEST_DB=postgres $(GO) test -race -count=1 -p 1 $(STORE_PKGS)

## deps: the real peers the end-to-end tests drive, from Debian: SIPp (the
## carrier and its gateways), Kamailio (a record-routing proxy, a dispatcher)
## PostgreSQL (edges sharing one database; its binaries are not on PATH),
## SIPVicious (svwar, the number scanner the hardening tests run),
## baresip (a phone calling over SIP over TLS with SRTP) and Chromium
## (headless, driving the web console)
DEB_DEPS := sipp:sip-tester kamailio:kamailio svwar:sipvicious baresip:baresip-core chromium:chromium
deps:
	@missing=""; for pair in $(DEB_DEPS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

## bench: Go micro-benchmarks, then, in the same run, the anchor (Kamailio + rtpengine) and the edge at the same N
## and the same call rates; one table with the ratios into docs/PERFORMANCE.md (about 20 minutes; see scripts/bench.sh)
bench: build deps
	@missing=""; command -v rtpengine >/dev/null 2>&1 || missing="rtpengine-daemon"; \
		command -v dumpcap >/dev/null 2>&1 || missing="$$missing wireshark-common"; \
		if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi
	./scripts/bench.sh

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseAppMessage -fuzztime $(FUZZTIME) -timeout 0 ./bridge
	$(GO) test -run '^$$' -fuzz FuzzParseSDP -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzReceiveRTP -fuzztime $(FUZZTIME) -timeout 0 ./media
	$(GO) test -run '^$$' -fuzz FuzzReceiveRTCP -fuzztime $(FUZZTIME) -timeout 0 ./media
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) -timeout 0 ./keys
	$(GO) test -run '^$$' -fuzz FuzzRequestBodies -fuzztime $(FUZZTIME) -timeout 0 ./api
	$(GO) test -run '^$$' -fuzz FuzzParseRateDeck -fuzztime $(FUZZTIME) -timeout 0 ./billing
	$(GO) test -run '^$$' -fuzz FuzzParseGateway -fuzztime $(FUZZTIME) -timeout 0 ./trunks
	$(GO) test -run '^$$' -fuzz FuzzReasonCause -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzScreenDatagram -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzCheckDigest -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzAuthorize -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzSipfragStatus -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzParseCrypto -fuzztime $(FUZZTIME) -timeout 0 ./sip
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) -timeout 0 ./media/g722
	$(GO) test -run '^$$' -fuzz FuzzEncode -fuzztime $(FUZZTIME) -timeout 0 ./media/g722

clean:
	rm -rf bin data
