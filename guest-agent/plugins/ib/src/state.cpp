// The process-wide state of the interposer: its object lists, id tables and gate.
#include <cstdarg>
#include <cstdio>
#include <unistd.h>

#include "gate.hpp"
#include "ids.hpp"
#include "objects.hpp"

namespace vmckpt::ib {

Objects& objects() {
  static Objects o;
  return o;
}

Translation& translation() {
  static Translation t;
  return t;
}

Gate& gate() {
  static Gate g;
  return g;
}

Gate& rebuildGate() {
  static Gate g;
  return g;
}

void logLine(const char* format, ...) {
  char line[512];
  int n = std::snprintf(line, sizeof line, "vmckpt-ib: ");
  va_list ap;
  va_start(ap, format);
  int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, format, ap);
  va_end(ap);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, line, len);  // one write: lines never interleave
}

}  // namespace vmckpt::ib
