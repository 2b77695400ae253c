# gpu-vm-bootstrap / vmctl: build, test and benchmark entry points. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
# Tests that need root, libvirtd or network namespaces run when GVB_LAB=1 and then must pass;
# as root we set it, so nothing is silently skipped.
GVB_LAB ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)
export GVB_LAB

.PHONY: setup deps build demo test unit e2e lint bench deb release check-debs fmt

## setup: install system packages, then build both binaries
setup: deps build

deps:
	scripts/install-deps.sh

build:
	$(CARGO) build --workspace --bins

## demo: detect this host, then plan a full bootstrap on a fixture host (changes nothing)
DEMO_HOST ?= amd-b550m-gt710-rtx2070s
DEMO_ROOT ?= $(CURDIR)/target/demo-host
demo: build
	./target/debug/gpu-vm-bootstrap detect
	$(CARGO) run -q -p gpu-vm-bootstrap --example fixture-tree -- $(DEMO_HOST) $(DEMO_ROOT) dhcp
	./target/debug/gpu-vm-bootstrap detect --host-root $(DEMO_ROOT)
	./target/debug/gpu-vm-bootstrap plan --gpu-mode passthrough --host-root $(DEMO_ROOT)
	./target/debug/vmctl --connect test:///default list

## test: every test: unit, CLI, real-component (root: libvirtd, netns, netplan) and end-to-end
test: build
	scripts/test-all.sh

unit:
	$(CARGO) test --workspace --all-targets

e2e: build
	scripts/run-all.sh tests/e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: performance figures side by side with reference tools
bench:
	$(CARGO) build --release --workspace --bins --examples
	scripts/bench.sh

## deb: Debian packages for both binaries in dist/ (packaging/README.md)
deb:
	packaging/build-debs.sh

## release: stripped binaries, the .debs and SHA256SUMS in dist/
release:
	packaging/release.sh

## check-debs: build the .debs and check contents, a scratch-root install, completions, man pages
check-debs:
	PROFILE=dev packaging/check-debs.sh
