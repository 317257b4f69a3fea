// vmckpt-agent: the in-guest agent of vmckpt (guest-agent/PROTOCOL.md). Static binary.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "agent.hpp"

namespace {

using namespace vmckpt::agent;

const char* kUsage =
    "usage: vmckpt-agent [options]\n"
    "  --port PATH            host channel device (default /dev/virtio-ports/org.vmckpt.agent.0;\n"
    "                         a pty or other character device works for tests)\n"
    "  --port-socket PATH     connect to this unix socket as the host channel instead\n"
    "  --socket PATH          where processes register (default /run/vmckpt/agent.sock)\n"
    "  --mounts PATH          mount table read by fsfreeze (default /proc/self/mounts)\n"
    "  --no-fsfreeze          do not freeze filesystems\n"
    "  --notify-timeout-ms N  wait for RESUME/RESTART/CONNECT answers in thaw, restored, connect\n"
    "                         without deadline_ms (default 10000)\n"
    "  --rollback-timeout-ms N  wait for RESUME answers in a rollback (default 1000)\n"
    "  --register-timeout-ms N  a connection must register within this (default 5000)\n"
    "  --cuda-helper PATH     the CUDA helper run around quiesce and thaw\n"
    "                         (default: vmckpt-cuda-ckpt next to this binary)\n"
    "  --cuda-lock-timeout-ms N  wait at most this for a CUDA process's GPU work (default 10000)\n"
    "  --no-cuda              do not checkpoint processes holding /dev/nvidia* files\n"
    "  -v, --verbose          debug log\n"
    "  --version, --help\n";

bool parseMs(const char* s, std::chrono::milliseconds& out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 3600000) return false;
  out = std::chrono::milliseconds(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  AgentOptions opts;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "vmckpt-agent: %s needs a value\n%s", name, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    auto ms = [&](const char* name, std::chrono::milliseconds& out) {
      if (!parseMs(value(name), out)) {
        std::fprintf(stderr, "vmckpt-agent: %s needs milliseconds, 1..3600000\n", name);
        std::exit(2);
      }
    };
    if (a == "--port") {
      opts.portKind = HostPort::Kind::device;
      opts.portPath = value("--port");
    } else if (a == "--port-socket") {
      opts.portKind = HostPort::Kind::socket;
      opts.portPath = value("--port-socket");
    } else if (a == "--socket") {
      opts.socketPath = value("--socket");
    } else if (a == "--mounts") {
      opts.coordinator.mountsPath = value("--mounts");
    } else if (a == "--no-fsfreeze") {
      opts.coordinator.fsfreeze = false;
    } else if (a == "--notify-timeout-ms") {
      ms("--notify-timeout-ms", opts.coordinator.notifyTimeout);
    } else if (a == "--rollback-timeout-ms") {
      ms("--rollback-timeout-ms", opts.coordinator.rollbackTimeout);
    } else if (a == "--register-timeout-ms") {
      ms("--register-timeout-ms", opts.processes.registerTimeout);
    } else if (a == "--cuda-helper") {
      opts.coordinator.cuda.helper = value("--cuda-helper");
    } else if (a == "--cuda-lock-timeout-ms") {
      ms("--cuda-lock-timeout-ms", opts.coordinator.cuda.lockTimeout);
    } else if (a == "--no-cuda") {
      opts.coordinator.cuda.enabled = false;
    } else if (a == "-v" || a == "--verbose") {
      verbose = true;
    } else if (a == "--version") {
      std::printf("vmckpt-agent %s (protocol api_version %d)\n", VMCKPT_VERSION, vmckpt::wire::kApiVersion);
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "vmckpt-agent: unknown option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  Logger log(verbose);
  Agent agent(std::move(opts), log);
  return agent.run();
}
