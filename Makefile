# Front door over CMake. `make demo` and `make test` are the README's two set-up
# commands: each installs the Debian packages it needs, builds, and runs.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
# -g1 (line tables: backtraces and sanitizer reports keep file:line) instead of -g: full
# debug info made each compile about 1.4x (optimized) to 2x (sanitized) slower on 2 cores.
# Configure with -DCMAKE_BUILD_TYPE=RelWithDebInfo alone for a debugger build.
DEBUG_INFO = -g1
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMCKPT_WERROR=ON \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 $(DEBUG_INFO) -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 $(DEBUG_INFO) -DNDEBUG"
# For the fuzzing summary: VMCKPT_FUZZ_SECONDS's default in tests/fuzz/CMakeLists.txt.
FUZZ_SECONDS = 20

.PHONY: test-sanitize test-slow all deps build image test unit-test integration-test demo bench bench-smoke clean

all: build

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The test guest (kernel + busybox initramfs) in $(BUILD_DIR)/images/test-guest/.
image: build
	cmake --build $(BUILD_DIR) --target test-guest-image

# Unit tests run in parallel; integration tests (real QEMU guests) one at a time; then
# the sanitizer build. The slow label (>= 100 crash trials) runs with make test-slow.
test: build image
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) -LE slow
	@awk '/Testing: fuzz\./{t=$$3} /stat::number_of_executed_units/{if (t != "") printf "fuzzing: %s ran %s inputs in $(FUZZ_SECONDS) s\n", t, $$2; t=""}' \
	  $(BUILD_DIR)/Testing/Temporary/LastTest.log
	$(MAKE) test-sanitize

# ASan + UBSan build in $(SAN_DIR): every unit test and one snapshot/restore round trip
# on a real guest (the vmckpt binary under test is the sanitized one). Any finding fails.
SAN_DIR ?= build-asan
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-sanitize: deps
	cmake -S . -B $(SAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DVMCKPT_SANITIZE=ON -DVMCKPT_WERROR=ON \
	  -DCMAKE_CXX_FLAGS_DEBUG=$(DEBUG_INFO) -DCMAKE_C_FLAGS_DEBUG=$(DEBUG_INFO)
	cmake --build $(SAN_DIR) -j$(JOBS) --target sanitize-set
	$(SAN_ENV) ctest --test-dir $(SAN_DIR) --output-on-failure -j$(JOBS) -L unit
	$(SAN_ENV) ctest --test-dir $(SAN_DIR) --output-on-failure -R 'SnapshotRoundTrip.KilledGuestComesBackExactlyWhereItWas/btrfs'

test-slow: build image
	ctest --test-dir $(BUILD_DIR) --output-on-failure -L slow

unit-test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) -L unit

integration-test: build image
	ctest --test-dir $(BUILD_DIR) --output-on-failure -L integration

demo: build image
	bash scripts/demo.sh $(BUILD_DIR)

# vmckpt against QEMU's own snapshot methods, a 16 GiB scaling check and the runtime
# cost of file-backed RAM (needs root: loop devices; --runtime-tuned changes vm.dirty_*
# sysctls for its runs and puts them back). About 30 minutes on 2 cores.
# Writes bench/results/<UTC date-time>.{json,md,png}.
BENCH_ARGS ?= --sizes 1G,2G,4G --runs 5 --scaling 16G --runtime-tuned --out-dir bench/results
bench: build image
	$(BUILD_DIR)/bin/vmckpt-bench $(BENCH_ARGS)

# One small guest, one run of every method (the test suite runs this too).
bench-smoke: build image
	$(BUILD_DIR)/bin/vmckpt-bench --smoke --out-dir $(BUILD_DIR)/bench-smoke

clean:
	rm -rf $(BUILD_DIR) $(SAN_DIR)
