# difftrain: `make demo` and `make test` do all set-up on a fresh Debian 12 machine (with the
# CUDA toolkit): Debian packages, the pinned PyTorch in .venv/, then the build.
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
	./scripts/run-tests.sh $(BUILD) $(CTEST_ARGS)

demo: build
	./scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)
