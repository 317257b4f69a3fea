// String helpers: concatenation of mixed values (GCC 12 has no <format>), trimming, splitting.
#pragma once

#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace vmckpt {

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

std::string_view trim(std::string_view s);
std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool startsWith(std::string_view s, std::string_view prefix);

// Parses a size such as "512M", "2G", "1048576" (bytes), "4GiB". Units are powers of 1024.
// Rejects zero, negative, non-numeric and overflowing values.
struct ParsedSize {
  bool ok;
  unsigned long long bytes;
  std::string error;
};
ParsedSize parseSize(std::string_view text);

// "2 GiB", "512 MiB", "123 B": exact when the value divides evenly, else one decimal.
std::string formatSize(unsigned long long bytes);

// Quotes an argument for display in a shell-like command line (never executed).
std::string shellQuote(std::string_view arg);

}  // namespace vmckpt
