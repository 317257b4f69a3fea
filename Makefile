# Front door over CMake. `make demo` and `make test` are the README's two set-up
# commands: each installs the Debian packages it needs, builds, and runs.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMCKPT_WERROR=ON

.PHONY: all deps build image test unit-test integration-test demo bench clean

all: build

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The test guest (kernel + busybox initramfs) in $(BUILD_DIR)/images/test-guest/.
image: build
	cmake --build $(BUILD_DIR) --target test-guest-image

# Unit tests run in parallel; integration tests (real QEMU guests) one at a time.
test: build image
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS)

unit-test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) -L unit

integration-test: build image
	ctest --test-dir $(BUILD_DIR) --output-on-failure -L integration

demo: build image
	bash scripts/demo.sh $(BUILD_DIR)

# Snapshot pause/restore against QEMU's stop+migrate-to-file (needs root: loop devices).
BENCH_OUT ?= bench/results/$(shell date -u +%Y-%m-%d)-snapshot.json
bench: build image
	$(BUILD_DIR)/bin/vmckpt-bench --sizes 1G,4G --runs 5 --baseline-runs 3 --out $(BENCH_OUT)

clean:
	rm -rf $(BUILD_DIR)
