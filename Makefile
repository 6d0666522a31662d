# Axon build, test and run entry points. `make help` lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Go modules of the workspace (tools/ is kept out of go.work on purpose:
# buf's dependencies must not leak into the services' build list).
MODULES := gen bpf services services/operator cni-shim
PKGS    := $(foreach m,$(MODULES),./$(m)/...)
BIN     := $(CURDIR)/bin
TOOLBIN := $(CURDIR)/.bin
export PATH := $(TOOLBIN):$(PATH)

GO_TEST_FLAGS ?= -race -count=1
BUF := $(TOOLBIN)/buf

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Each entry point first checks the system packages (and bpffs) it needs:
# as root scripts/setup.sh installs what is missing, otherwise it says what
# to install and stops.
.PHONY: setup setup-test setup-run setup-generate setup-bench
setup: ## check what test, run and generate need; as root install what is missing, mount bpffs
	scripts/setup.sh test run generate
setup-test:
	scripts/setup.sh test
setup-run:
	scripts/setup.sh run
setup-generate:
	scripts/setup.sh generate
setup-bench:
	scripts/setup.sh bench

.PHONY: tools
tools: ## build the pinned code generators into .bin/
	cd tools && GOWORK=off go build -o $(TOOLBIN)/ \
		github.com/bufbuild/buf/cmd/buf \
		github.com/cilium/ebpf/cmd/bpf2go \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc

.PHONY: generate
generate: setup-generate tools ## regenerate protobuf stubs (gen/) and eBPF objects (bpf/)
	find gen -name '*.pb.go' -delete
	$(BUF) generate
	cd bpf && go generate ./...

.PHONY: check-generate
check-generate: generate ## fail if generated code differs from what is committed
	@if [ -n "$$(git status --porcelain -- gen bpf)" ]; then \
		echo "generated code is out of date; run 'make generate' and commit:"; \
		git status --porcelain -- gen bpf; git diff --stat -- gen bpf; exit 1; fi

.PHONY: build
build: ## build every binary into bin/
	cd services && go build -o $(BIN)/ ./cmd/...
	cd services/operator && go build -o $(BIN)/ ./cmd/...
	cd cni-shim && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $(BIN)/axon-cni ./cmd/axon-cni

CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d

.PHONY: install-cni
install-cni: build ## install axon-cni and its network configuration where runtimes look
	install -D -m 0755 $(BIN)/axon-cni $(CNI_BIN_DIR)/axon-cni
	install -D -m 0644 cni-shim/conf/10-axon.conflist $(CNI_CONF_DIR)/10-axon.conflist

.PHONY: lint
lint: tools ## go vet, gofmt, buf lint, buf format; each module builds alone
	go vet $(PKGS)
	@for m in $(MODULES); do (cd $$m && GOWORK=off go build ./...) || exit 1; done
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(BUF) lint
	$(BUF) format --diff --exit-code

.PHONY: test
test: setup-test ## run every test (root runs the kernel tests too) with the race detector
	go test $(GO_TEST_FLAGS) $(PKGS)

.PHONY: bench
bench: setup-bench ## run the benchmarks
	GOWORK=off GOBIN=$(TOOLBIN) go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
	go test -run '^$$' -bench . -benchmem $(PKGS)
	go test ./services/ipam/bench -run TestIPAMBenchReport -count=1 -timeout 30m \
		-args -ipam.report=$(CURDIR)/docs/bench/ipam.md -ipam.hostlocal=$(TOOLBIN)/host-local -ipam.scale=true
	GOWORK=off GOBIN=$(TOOLBIN) go install github.com/containernetworking/plugins/plugins/main/ptp@v1.10.0
	go test ./services/datapath/bench -run TestDatapathBenchReport -count=1 -timeout 30m \
		-args -dp.report=$(CURDIR)/docs/bench/datapath.md -dp.plugins=$(TOOLBIN)
	go test ./services/datapath/bench -run TestServiceBenchReport -count=1 -timeout 45m \
		-args -svc.report=$(CURDIR)/docs/bench/services.md

.PHONY: run
run: setup-run build ## start the whole system on this machine with an embedded etcd
	$(BIN)/axon-local --state-dir $(CURDIR)/.run

.PHONY: clean
clean: ## remove built binaries and local run state
	rm -rf $(BIN) $(CURDIR)/.run
