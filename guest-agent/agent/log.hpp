// vmckpt-agent's log: one line per message on stderr, "vmckpt-agent: ..." (the test
// guest's /init sends it to the console). Debug lines only with -v.
#pragma once

#include <unistd.h>

#include <string>
#include <string_view>

namespace vmckpt::agent {

class Logger {
 public:
  explicit Logger(bool verbose = false) : verbose_(verbose) {}
  void info(std::string_view msg) const { write(msg); }
  void debug(std::string_view msg) const {
    if (verbose_) write(msg);
  }
  bool verbose() const { return verbose_; }

 private:
  static void write(std::string_view msg) {
    std::string line = "vmckpt-agent: ";
    line.append(msg);
    line.push_back('\n');
    // One write per line so lines never interleave with other console output.
    ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
    (void)n;
  }
  bool verbose_;
};

}  // namespace vmckpt::agent
