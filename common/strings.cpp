#include "common/strings.hpp"

#include <cctype>
#include <cstdio>
#include <limits>

namespace vmckpt {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    parts.emplace_back(s.substr(start, pos == std::string_view::npos ? s.npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

bool startsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

ParsedSize parseSize(std::string_view text) {
  std::string_view t = trim(text);
  if (t.empty()) return {false, 0, "empty size"};
  unsigned long long value = 0;
  size_t i = 0;
  constexpr auto kMax = std::numeric_limits<unsigned long long>::max();
  for (; i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])); ++i) {
    unsigned digit = static_cast<unsigned>(t[i] - '0');
    if (value > (kMax - digit) / 10) return {false, 0, cat("size '", text, "' is too large")};
    value = value * 10 + digit;
  }
  if (i == 0) return {false, 0, cat("size '", text, "' is not a number (use e.g. 512M or 2G)")};
  std::string unit;
  for (char c : t.substr(i)) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with("IB")) unit.resize(unit.size() - 2);
  else if (unit.size() == 2 && unit.back() == 'B') unit.resize(1);
  unsigned shift = 0;
  if (unit.empty() || unit == "B") shift = 0;
  else if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else return {false, 0, cat("size '", text, "' has an unknown unit (use K, M, G or T)")};
  if (shift > 0 && value > (kMax >> shift)) return {false, 0, cat("size '", text, "' is too large")};
  value <<= shift;
  if (value == 0) return {false, 0, cat("size '", text, "' must be greater than zero")};
  return {true, value, {}};
}

std::string formatSize(unsigned long long bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  double v = static_cast<double>(bytes);
  unsigned long long whole = bytes;
  bool exact = true;
  while (v >= 1024.0 && unit < 4) {
    exact = exact && whole % 1024 == 0;
    whole /= 1024;
    v /= 1024.0;
    ++unit;
  }
  char buf[64];
  if (exact) std::snprintf(buf, sizeof buf, "%llu %s", whole, kUnits[unit]);
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

std::string shellQuote(std::string_view arg) {
  bool plain = !arg.empty();
  for (char c : arg) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-_./=:,+@%").find(c) != std::string_view::npos)) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(arg);
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  out += "'";
  return out;
}

}  // namespace vmckpt
