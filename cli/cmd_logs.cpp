// vmckpt logs NAME [-f] [-n N]: the guest's serial console.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/qemu_process.hpp"

namespace vmckpt::cli {
namespace {

std::atomic<bool> gInterrupted{false};

// Console bytes come from the guest, which is untrusted: on a terminal, control
// characters (escape sequences) are shown as '?' unless --raw.
std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '\n' || c == '\t' || c >= 0x20) out += static_cast<char>(c == 0x7f ? '?' : c);
    else if (c != '\r') out += '?';
  }
  return out;
}

std::string lastLines(const std::string& text, size_t n) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (size_t i = 0; i < n; ++i) {
    size_t nl = text.rfind('\n', pos == 0 ? 0 : pos - 1);
    if (nl == std::string::npos || pos == 0) return text;
    pos = nl;
  }
  return text.substr(pos + 1);
}

}  // namespace

void addLogs(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name;
    bool follow = false, raw = false;
    size_t lines = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("logs", "Show the guest's serial console output");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_flag("--follow,-f", o->follow, "Keep printing new output until the VM stops (Ctrl-C to leave)");
  sub->add_option("--lines,-n", o->lines, "Only the last N lines");
  sub->add_flag("--raw", o->raw, "Print control characters as they are, even on a terminal");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->status(o->name);  // also checks that the VM exists
      if (!st) return fail(st.error());
      if (ctx.json && o->follow) return fail(Errc::invalidArgument, "--follow cannot be combined with --json");
      vmm::VmPaths p = mgr->root().vm(o->name);
      bool clean = !o->raw && ctx.stdoutIsTty();

      UniqueFd fd(::open(p.serialLog.c_str(), O_RDONLY | O_CLOEXEC));
      std::string text;
      if (fd) {
        char buf[65536];
        for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
      }
      if (o->lines > 0) text = lastLines(text, o->lines);
      if (ctx.json) {
        ctx.emit(Json{{"name", o->name}, {"state", vmm::vmStateName(st->state)}, {"log", text}},
                 "");
        return {};
      }
      if (clean) text = sanitize(text);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      if (!o->follow) return {};

      struct sigaction sa{};
      sa.sa_handler = [](int) { gInterrupted = true; };
      ::sigaction(SIGINT, &sa, nullptr);
      ::sigaction(SIGTERM, &sa, nullptr);
      int idleRounds = 0;
      while (!gInterrupted) {
        if (!fd) fd.reset(::open(p.serialLog.c_str(), O_RDONLY | O_CLOEXEC));
        bool got = false;
        if (fd) {
          char buf[65536];
          for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) {
            std::string chunk(buf, static_cast<size_t>(n));
            if (clean) chunk = sanitize(chunk);
            std::fwrite(chunk.data(), 1, chunk.size(), stdout);
            got = true;
          }
          std::fflush(stdout);
        }
        // Leave once QEMU is gone and the file has been drained.
        if (!got && vmm::checkPidFile(p).state != vmm::PidState::alive && ++idleRounds > 1) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      return {};
    };
  });
}

}  // namespace vmckpt::cli
