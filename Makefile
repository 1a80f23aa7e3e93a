# airlock: `make run` installs what is missing and starts the demo;
# `make test` installs what is missing and runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/airlock
# A static binary without cgo by default; a cgo build (plain `go build` or
# `go install` wherever gcc is) works too, and `make test` runs the seal's
# tests on one.
export CGO_ENABLED := 0
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all deps web build release deb run run-session test bench lint fuzz clean

all: build

deps:
	@scripts/install-deps.sh

# noVNC (and playwright-core for the browser tests) from npm, pinned by
# package-lock.json; the noVNC modules are copied where go:embed finds them.
web:
	@scripts/build-web.sh

build: web
	$(GO) build -trimpath -o $(BIN) ./cmd/airlock

# The user's side alone (`airlock rdp`, `airlock login`) for every
# platform users bring: bin/release/airlock-OS-ARCH[.exe].
RELEASE_TARGETS := linux/amd64 linux/arm64 darwin/arm64 darwin/amd64 windows/amd64
release:
	@mkdir -p bin/release
	@for t in $(RELEASE_TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  echo "building bin/release/airlock-$$os-$$arch$$ext"; \
	  GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -o bin/release/airlock-$$os-$$arch$$ext ./cmd/airlock-client || exit 1; \
	done

# The Debian package (dpkg-deb): bin/airlock_VERSION_ARCH.deb with the
# binary, the gateway's systemd unit, /etc/airlock/airlock.yaml, man pages
# and bash completion (scripts/build-deb.sh says what and why).
deb: build
	@scripts/build-deb.sh $(BIN)

# The gateway with its embedded defaults: open the URL it prints and log in
# as "demo" with the password it prints on first start.
run: deps build
	$(BIN) serve

# One sealed desktop session without the gateway, for poking at the seal.
run-session: deps build
	@scripts/demo.sh $(BIN)

# The last line runs the race detector on every package that starts
# goroutines (about 4.5 minutes on two busy cores); anchorbench only
# measures, and its figures mean nothing under -race. It runs with
# CGO_ENABLED=1, so the runner's and the seal's tests there start sessions
# from a cgo build of airlock (realtest.Binary).
test: deps web
	$(GO) vet ./...
	AIRLOCK_TEST_USER=$$(scripts/test-user.sh) $(GO) test -count=1 -timeout 25m ./...
	CGO_ENABLED=1 $(GO) build -o /dev/null ./cmd/airlock
	AIRLOCK_TEST_USER=$$(scripts/test-user.sh) CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./internal/ticket/ ./internal/relay/ ./internal/connector/ ./internal/runner/ ./internal/seal/... ./internal/auth/... ./internal/store/... ./internal/backend/... ./internal/registration/ ./internal/gateway/

bench: deps
	AIRLOCK_TEST_USER=$$(scripts/test-user.sh) $(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseSpec -fuzztime 30s ./internal/runner/
	$(GO) test -run '^$$' -fuzz FuzzParseFD -fuzztime 30s ./internal/seal/fdpass/
	$(GO) test -run '^$$' -fuzz FuzzUnixGuardParse -fuzztime 30s ./internal/seal/
	$(GO) test -run '^$$' -fuzz FuzzReadConnect -fuzztime 30s ./internal/egressproxy/
	$(GO) test -run '^$$' -fuzz FuzzParseSetup -fuzztime 30s ./internal/kioskwm/
	$(GO) test -run '^$$' -fuzz FuzzParseUnixDiag -fuzztime 30s ./internal/seal/
	$(GO) test -run '^$$' -fuzz FuzzParseMountinfoDevs -fuzztime 30s ./internal/seal/
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 30s ./internal/ticket/
	$(GO) test -run '^$$' -fuzz FuzzViewFilter -fuzztime 30s ./internal/connector/
	$(GO) test -run '^$$' -fuzz FuzzCleanNext -fuzztime 30s ./internal/connector/
	$(GO) test -run '^$$' -fuzz FuzzRelayHandshake -fuzztime 30s ./internal/connector/
	$(GO) test -run '^$$' -fuzz FuzzServerFilter -fuzztime 30s ./internal/connector/
	$(GO) test -run '^$$' -fuzz FuzzClipClientFilter -fuzztime 30s ./internal/connector/
	$(GO) test -run '^$$' -fuzz FuzzFrameParser -fuzztime 30s ./internal/recording/
	$(GO) test -run '^$$' -fuzz FuzzClientScanner -fuzztime 30s ./internal/recording/
	$(GO) test -run '^$$' -fuzz FuzzReadPointer -fuzztime 30s ./internal/recording/
	$(GO) test -run '^$$' -fuzz 'FuzzRead$$' -fuzztime 30s ./internal/recording/
	$(GO) test -run '^$$' -fuzz FuzzParseSqueue -fuzztime 30s ./internal/backend/slurm/
	$(GO) test -run '^$$' -fuzz FuzzDecodeEvent -fuzztime 30s ./internal/backend/local/
	$(GO) test -run '^$$' -fuzz FuzzParseInfo -fuzztime 30s ./internal/vm/
	$(GO) test -run '^$$' -fuzz FuzzQMPReply -fuzztime 30s ./internal/vm/
	$(GO) test -run '^$$' -fuzz FuzzForwardLabel -fuzztime 30s ./internal/gateway/
	$(GO) test -run '^$$' -fuzz FuzzParseTarget -fuzztime 30s ./internal/forward/
	$(GO) test -run '^$$' -fuzz FuzzFrameScanner -fuzztime 30s ./internal/forward/
	$(GO) test -run '^$$' -fuzz FuzzParseDiagUID -fuzztime 30s ./internal/forward/
	$(GO) test -run '^$$' -fuzz FuzzPDU -fuzztime 30s ./internal/rdcleanpath/
	$(GO) test -run '^$$' -fuzz FuzzX224 -fuzztime 30s ./internal/rdcleanpath/
	$(GO) test -run '^$$' -fuzz FuzzFilter -fuzztime 30s ./internal/rdpfilter/
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime 30s ./internal/gateway/
	$(GO) test -run '^$$' -fuzz FuzzLocalPath -fuzztime 30s ./internal/gateway/
	$(GO) test -run '^$$' -fuzz FuzzAppNext -fuzztime 30s ./internal/gateway/
	$(GO) test -run '^$$' -fuzz FuzzAppHostLabel -fuzztime 30s ./internal/gateway/
	$(GO) test -run '^$$' -fuzz FuzzClaims -fuzztime 30s ./internal/auth/oidc/
	$(GO) test -run '^$$' -fuzz FuzzMapLogin -fuzztime 30s ./internal/auth/mail/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/auth/totp/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/rdpfile/
	$(GO) test -run '^$$' -fuzz FuzzWaysLines -fuzztime 30s ./internal/cli/

clean:
	rm -rf bin internal/portal/static/vendor
