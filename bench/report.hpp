// Turns a bench result (JSON, see README.md in this directory) into what people read:
// a Markdown table with the ratios, and a PNG plot of pause and restore time against
// guest memory (gnuplot).
#pragma once

#include <string>

#include "bench/bench_support.hpp"

namespace vmckpt::bench {

// The key methods the ratios compare: vmckpt (Btrfs) against QEMU stop+migrate-to-file.
inline constexpr const char* kVmckptMethod = "vmckpt-btrfs";
inline constexpr const char* kBaselineMethod = "qemu-migrate-to-file";

std::string markdownReport(const Json& results);

// Writes `png` with gnuplot (data and script beside it, in a temporary directory).
// Raises BenchError when gnuplot is missing or fails.
void plotPng(const Json& results, const std::string& png);

// {"pause": x, "restore": y} of vmckpt against the baseline at one size; null members
// when either side failed or is missing.
Json ratiosAt(const Json& size);

}  // namespace vmckpt::bench
