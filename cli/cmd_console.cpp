// vmckpt console NAME [--send LINE]: the guest's serial console. With --send, types one
// line and returns; otherwise relays the terminal to the console until Ctrl-] or EOF.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::cli {
namespace {

constexpr char kEscape = 0x1d;  // Ctrl-]

Result<UniqueFd> connectConsole(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return failErrno("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return fail(Errc::invalidArgument, cat("console path too long: ", path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return failErrno(cat("connect ", path), errno);
  return fd;
}

Status writeAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failErrno("console write", errno);
    data += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

// Relays stdin -> console and console -> stdout; the terminal is raw while it runs.
Status relay(int sock) {
  bool tty = ::isatty(STDIN_FILENO);
  termios saved{};
  if (tty) {
    ::tcgetattr(STDIN_FILENO, &saved);
    termios raw = saved;
    ::cfmakeraw(&raw);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    const char* hint = "[vmckpt: console connected; Ctrl-] to leave]\r\n";
    (void)!::write(STDOUT_FILENO, hint, std::strlen(hint));
  }
  struct Restore {
    bool tty;
    termios t;
    ~Restore() {
      if (tty) ::tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
  } restore{tty, saved};
  char buf[4096];
  for (;;) {
    pollfd p[2] = {{STDIN_FILENO, POLLIN, 0}, {sock, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return failErrno("poll", errno);
    }
    if (p[1].revents) {
      ssize_t n = ::read(sock, buf, sizeof buf);
      if (n <= 0) return {};  // QEMU went away
      (void)!::write(STDOUT_FILENO, buf, static_cast<size_t>(n));
    }
    if (p[0].revents) {
      ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) return {};
      if (tty && std::memchr(buf, kEscape, static_cast<size_t>(n))) return {};
      VMCKPT_TRY(writeAll(sock, buf, static_cast<size_t>(n)));
    }
  }
}

}  // namespace

void addConsole(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, send;
    bool haveSend = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("console", "Attach to the guest's serial console, or type one line with --send");
  sub->add_option("name", o->name, "VM name")->required();
  auto* send = sub->add_option("--send", o->send, "Type LINE (plus Enter) on the console and return");
  sub->callback([&ctx, o, send] {
    o->haveSend = send->count() > 0;
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->status(o->name);
      if (!st) return fail(st.error());
      if (st->state != vmm::VmState::running && st->state != vmm::VmState::paused)
        return fail(Errc::wrongState, cat("console: VM ", o->name, " is not running (state: ", vmm::vmStateName(st->state), ")"));
      auto sock = connectConsole(mgr->root().vm(o->name).console);
      if (!sock) return fail(sock.error().context("console"));
      if (o->haveSend) {
        std::string line = o->send + "\n";
        VMCKPT_TRY(writeAll(sock->get(), line.data(), line.size()));
        ::shutdown(sock->get(), SHUT_WR);
        ::usleep(100 * 1000);  // let QEMU read it before the hang-up
        ctx.emit(Json{{"name", o->name}, {"sent", o->send}}, "");
        return {};
      }
      if (ctx.json) return fail(Errc::invalidArgument, "an interactive console cannot be combined with --json");
      return relay(sock->get());
    };
  });
}

}  // namespace vmckpt::cli
