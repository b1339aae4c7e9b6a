# difftrain: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
CTEST_ARGS ?=

.PHONY: all deps configure build test demo clean

all: build

deps:
	./scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	# Multi-process fault tests are timing-sensitive on a loaded 2-core machine: a failing test
	# is retried (up to 3 runs) and ctest prints every failed attempt.
	cd $(BUILD) && ctest --output-on-failure --timeout 900 --repeat until-pass:3 $(CTEST_ARGS)

demo: build
	./scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)
