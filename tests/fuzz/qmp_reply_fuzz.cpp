// libFuzzer target: the QMP client (qmp/qmp_client) reading what QEMU sends. QEMU runs
// the guest's device emulation, so a compromised QEMU is within the threat model: its
// bytes must not crash vmckpt, whose crash could leave a guest paused. Each input is the
// whole stream from "QEMU" on a socketpair: greeting, replies, events, then EOF. The
// client goes through the calls a snapshot makes: handshake, a command, a command that
// waits for an event, a wait for an event, and takes the queued events.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "qmp/qmp_client.hpp"

using namespace vmckpt;
using namespace std::chrono_literals;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  UniqueFd qemuSide(sv[1]);
  // The input fits the socket buffer (max_len is far below it), so one write and EOF.
  for (std::size_t off = 0; off < size;) {
    ssize_t n = ::write(sv[1], data + off, size - off);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(sv[1], SHUT_WR);  // the client's commands still have somewhere to go

  auto client = qmp::Client::handshake(UniqueFd(sv[0]), Deadline::in(2s));
  if (!client) return 0;
  (void)client->greeting();
  if (auto r = client->execute("query-status", qmp::Json::object(), Deadline::in(2s)); r) (void)r->dump();
  (void)client->executeUntilEvent("cont", qmp::Json::object(), "RESUME", Deadline::in(2s));
  (void)client->waitEvent("MIGRATION", Deadline::in(2s));
  auto events = client->takeEvents();
  if (events.size() > qmp::kMaxQueuedEvents) __builtin_trap();  // the queue's own bound
  return 0;
}
