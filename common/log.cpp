#include "common/log.hpp"

#include <unistd.h>

#include <atomic>
#include <string>

namespace vmckpt::log {
namespace {
std::atomic<Level> gLevel{Level::warn};

const char* levelName(Level l) {
  switch (l) {
    case Level::error: return "error";
    case Level::warn: return "warning";
    case Level::info: return "info";
    case Level::debug: return "debug";
    case Level::trace: return "trace";
  }
  return "?";
}
}  // namespace

void setLevel(Level level) { gLevel = level; }
Level level() { return gLevel; }
bool enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(gLevel.load()); }

void write(Level l, std::string_view message) {
  // One write(2) per line so that concurrent writers do not interleave mid-line.
  std::string line = "vmckpt: ";
  line += levelName(l);
  line += ": ";
  line += message;
  line += '\n';
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace vmckpt::log
