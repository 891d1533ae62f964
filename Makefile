# cifha — see README.md. The two commands a newcomer needs:
#   make demo   start a local 3-node cluster (embedded etcd, real PostgreSQL)
#   make test   run every test (installs PostgreSQL first if it is missing)
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X github.com/cifha/cifha/pkg/version.Version=$(VERSION) -X github.com/cifha/cifha/pkg/version.Commit=$(COMMIT) -X github.com/cifha/cifha/pkg/version.BuildDate=$(BUILD_DATE)

.PHONY: all build deps test unit integration lint demo bench fuzz soak lab dist deb docs clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/cifha ./cmd/cifhactl

# make docs: regenerate docs/configuration.md from the configuration structs
# and docs/metrics.md from the agent's metrics registry (TestReferenceUpToDate
# and TestMetricsReference fail when they are out of date).
docs:
	UPDATE_CONFREF=1 $(GO) test -count=1 -run TestReferenceUpToDate ./internal/confref
	UPDATE_METRICSREF=1 $(GO) test -count=1 -run TestMetricsReference ./pkg/agent

# make dist: the install tarball of docs/install.md, to unpack with
# tar -xzf dist/cifha-*.tar.gz -C /usr/local (bin/, lib/systemd/system/
# for the units, share/doc/cifha/ for the docs and examples).
DISTDIR ?= dist
GOARCH  ?= $(shell $(GO) env GOARCH)
dist: build
	rm -rf $(DISTDIR)/stage
	mkdir -p $(DISTDIR)/stage/bin $(DISTDIR)/stage/lib/systemd/system $(DISTDIR)/stage/share/doc/cifha/examples
	install -m 0755 bin/cifha bin/cifhactl $(DISTDIR)/stage/bin/
	install -m 0644 deploy/systemd/*.service $(DISTDIR)/stage/lib/systemd/system/
	install -m 0644 README.md docs/*.md $(DISTDIR)/stage/share/doc/cifha/
	install -m 0644 docs/*.toml deploy/prometheus/*.yml deploy/haproxy/haproxy.cfg deploy/grafana/cifha-dashboard.json $(DISTDIR)/stage/share/doc/cifha/examples/
	tar --owner=0 --group=0 --numeric-owner -czf $(DISTDIR)/cifha-$(VERSION)-linux-$(GOARCH).tar.gz -C $(DISTDIR)/stage bin lib share
	rm -rf $(DISTDIR)/stage

# make deb: a Debian package (nfpm, pinned in go.mod as a tool) with the
# binaries in /usr/bin, the cifha and cif-sync units in /lib/systemd/system,
# the docs and examples in /usr/share/doc/cifha and shell completions; its
# postinst makes /etc/cifha and enables nothing.
DEB_VERSION ?= 0.0.0~git$(shell git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0).$(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
deb: build
	rm -rf $(DISTDIR)/deb-stage
	mkdir -p $(DISTDIR)/deb-stage/usr/bin $(DISTDIR)/deb-stage/lib/systemd/system $(DISTDIR)/deb-stage/usr/share/doc/cifha/examples \
		$(DISTDIR)/deb-stage/usr/share/bash-completion/completions $(DISTDIR)/deb-stage/usr/share/zsh/vendor-completions $(DISTDIR)/deb-stage/usr/share/fish/vendor_completions.d
	install -m 0755 bin/cifha bin/cifhactl $(DISTDIR)/deb-stage/usr/bin/
	for u in cifha cifha-cif-sync; do sed -e 's#/usr/local/bin/#/usr/bin/#g' -e 's#/usr/local/share/doc/#/usr/share/doc/#g' -e 's#/usr/local/lib/systemd/system/#/lib/systemd/system/#g' \
		deploy/systemd/$$u.service > $(DISTDIR)/deb-stage/lib/systemd/system/$$u.service; done
	install -m 0644 README.md docs/*.md $(DISTDIR)/deb-stage/usr/share/doc/cifha/
	install -m 0644 docs/*.toml deploy/prometheus/*.yml deploy/haproxy/haproxy.cfg deploy/grafana/cifha-dashboard.json deploy/systemd/etcd.service $(DISTDIR)/deb-stage/usr/share/doc/cifha/examples/
	bin/cifhactl completion bash > $(DISTDIR)/deb-stage/usr/share/bash-completion/completions/cifhactl
	bin/cifhactl completion zsh > $(DISTDIR)/deb-stage/usr/share/zsh/vendor-completions/_cifhactl
	bin/cifhactl completion fish > $(DISTDIR)/deb-stage/usr/share/fish/vendor_completions.d/cifhactl.fish
	install -m 0755 deploy/deb-postinst.sh $(DISTDIR)/deb-stage/postinst
	$(GO) build -o bin/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm
	cd $(DISTDIR)/deb-stage && GOARCH=$(GOARCH) DEB_VERSION=$(DEB_VERSION) $(abspath bin/nfpm) package --config $(abspath deploy/nfpm.yaml) --packager deb --target $(abspath $(DISTDIR))/
	rm -rf $(DISTDIR)/deb-stage

deps:
	@scripts/deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests run with the race detector; the integration tests start real
# postgres and cifha processes on 127.0.0.11-13:5432 as the postgres user.
test: deps lint
	$(GO) test -race -count=1 -timeout 10m ./pkg/... ./internal/... ./cmd/...
	$(GO) test -count=1 -timeout 32m ./integration/...

unit:
	$(GO) test -race -count=1 ./pkg/...

integration: deps
	$(GO) test -count=1 -timeout 20m -v ./integration/...

fuzz:
	$(GO) test ./pkg/config -run '^$$' -fuzz FuzzParse -fuzztime 30s
	$(GO) test ./pkg/election -run '^$$' -fuzz FuzzParseCluster -fuzztime 30s
	$(GO) test ./pkg/election -run '^$$' -fuzz FuzzParseRequests -fuzztime 30s
	$(GO) test ./pkg/agent -run '^$$' -fuzz FuzzParseDynamicConfig -fuzztime 30s
	$(GO) test ./pkg/agent -run '^$$' -fuzz FuzzParseControlData -fuzztime 30s
	$(GO) test ./pkg/cifsync -run '^$$' -fuzz FuzzSetDBHost -fuzztime 30s
	$(GO) test ./pkg/election -run '^$$' -fuzz FuzzServerVersion -fuzztime 30s
	$(GO) test ./pkg/state -run '^$$' -fuzz FuzzValidators -fuzztime 30s
	$(GO) test ./pkg/state -run '^$$' -fuzz FuzzParseSyncStandbyNames -fuzztime 30s
	$(GO) test ./pkg/election -run '^$$' -fuzz '^FuzzParseSync$$' -fuzztime 30s
	$(GO) test ./pkg/election -run '^$$' -fuzz '^FuzzParseFailsafe$$' -fuzztime 30s
	$(GO) test ./pkg/tuning -run '^$$' -fuzz FuzzParseVersion -fuzztime 30s
	$(GO) test ./pkg/archive -run '^$$' -fuzz FuzzValidName -fuzztime 30s

# make soak: first a pgbench load at ttl 3 s for SOAK_LOAD with no fault
# (0 skips it; it must see no failover, demotion or fence), then the fault
# checker (cmd/cifha-check), synchronous mode, on a 3-member etcd:
# SOAK_ROUNDS seeded random rounds (SOAK_SEED to replay).
SOAK_LOAD ?= 30m
SOAK_ROUNDS ?= 1000
SOAK_SEED ?= $(shell date +%s)
# SOAK_LANES clusters run side by side (each its own etcd and addresses),
# so that 1,000 rounds take about two hours instead of six.
SOAK_LANES ?= 3
soak: deps build
	$(GO) build -o bin/ ./cmd/cifha-check ./cmd/cifha-devetcd
	if [ "$(SOAK_LOAD)" != "0" ]; then bin/cifha-check --bin bin --load $(SOAK_LOAD) --ttl 3s; fi
	bin/cifha-check --bin bin --rounds $(SOAK_ROUNDS) --lanes $(SOAK_LANES) --seed $(SOAK_SEED)

# make lab: the fault lab (cifha-check lab, docs/lab.md): every DB host in
# its own network namespace with its own etcd member, faults from nftables
# and whole-host signals; LAB_ROUNDS seeded rounds at LAB_FLAGS (the shipped
# defaults when empty). Root only.
LAB_ROUNDS ?= 1000
LAB_SEED ?= $(shell date +%s)
LAB_FLAGS ?=
lab: deps build
	$(GO) build -o bin/ ./cmd/cifha-check ./cmd/cifha-devetcd
	bin/cifha-check lab --bin bin --rounds $(LAB_ROUNDS) --seed $(LAB_SEED) $(LAB_FLAGS)

ETCD_MEMBERS ?= 1
demo: deps build
	$(GO) build -o bin/ ./cmd/cifha-demo ./cmd/cifha-devetcd
	bin/cifha-demo --bin bin --etcd-members $(ETCD_MEMBERS)

bench: deps build
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 40m ./integration/... | tee bench.out

clean:
	rm -rf bin dist bench.out
