// libvmckpt: the C ABI entry points of vmckpt/plugin.h. One registration per process;
// its thread serves the agent's events (agent_connection.cpp).
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>

#include "agent_connection.hpp"
#include "hook_context.hpp"
#include "vmckpt/plugin.h"

namespace {

using namespace vmckpt;

struct Global {
  std::mutex mutex;
  bool registered = false;
  std::thread thread;
  UniqueFd stopFd;  // eventfd: written once to stop the thread
};

Global& global() {
  // Never destroyed: a process may exit without vmckpt_unregister, and destroying a
  // joinable std::thread at exit would end it in std::terminate. The event thread ends
  // with the process; the agent sees the connection close.
  static Global* g = new Global;
  return *g;
}

std::string agentSocketPath() {
  const char* env = std::getenv("VMCKPT_AGENT_SOCKET");
  return env && *env ? env : VMCKPT_AGENT_SOCKET_DEFAULT;
}

}  // namespace

extern "C" VMCKPT_API int vmckpt_register(const vmckpt_plugin_descriptor* desc) {
  // Version 1 descriptors still register: such a plugin is never sent CONNECT.
  if (!desc || desc->api_version < 1 || desc->api_version > VMCKPT_PLUGIN_API_VERSION || !desc->hook ||
      !desc->name || !wire::validPluginName(desc->name))
    return -EINVAL;

  Global& g = global();
  std::lock_guard lock(g.mutex);
  if (g.registered) return -EBUSY;

  plugin::Registration reg{desc->name, desc->hook, desc->ctx, desc->api_version};
  std::string path = agentSocketPath();
  UniqueFd stopFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stopFd) return -errno;

  plugin::AgentConnection conn;
  if (int rc = plugin::connectAndRegister(path, reg, Deadline::in(std::chrono::seconds(5)), -1, conn);
      rc < 0)
    return rc;
  try {
    g.thread = std::thread(plugin::serveEvents, std::move(conn), std::move(reg), std::move(path),
                           stopFd.get());
  } catch (const std::system_error& e) {
    return e.code().value() > 0 ? -e.code().value() : -EAGAIN;
  }
  g.stopFd = std::move(stopFd);
  g.registered = true;
  return 0;
}

extern "C" VMCKPT_API void vmckpt_unregister(void) {
  Global& g = global();
  std::lock_guard lock(g.mutex);
  if (!g.registered) return;
  uint64_t one = 1;
  ssize_t n = ::write(g.stopFd.get(), &one, sizeof one);
  (void)n;  // an eventfd write of 1 cannot fail short of a counter overflow
  if (g.thread.get_id() == std::this_thread::get_id()) {
    // Called from the hook despite plugin.h: the thread stops after the hook returns.
    // Its stop fd must outlive it, so it is left open.
    g.thread.detach();
    (void)g.stopFd.release();
  } else {
    g.thread.join();
    g.stopFd.reset();
  }
  g.registered = false;
}

extern "C" VMCKPT_API const char* vmckpt_event_name(vmckpt_event ev) {
  switch (ev) {
    case VMCKPT_PRESUSPEND: return "PRESUSPEND";
    case VMCKPT_PRECHECKPOINT: return "PRECHECKPOINT";
    case VMCKPT_RESUME: return "RESUME";
    case VMCKPT_RESTART: return "RESTART";
    case VMCKPT_CONNECT: return "CONNECT";
  }
  return "UNKNOWN";
}

extern "C" VMCKPT_API int vmckpt_connect_follows(void) { return plugin::connectFollows(); }

extern "C" VMCKPT_API int vmckpt_release_requested(void) { return plugin::releaseRequested(); }

extern "C" VMCKPT_API int vmckpt_publish(const char* json_object) { return plugin::publish(json_object); }
