// The plugin's face: the exported vmckpt_gl_* API and the agent's events. Agent events
// arrive on libvmckpt's thread; GL belongs to the render thread, which parks itself at a
// frame boundary while the host captures the guest and rebuilds the context on RESTART.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "context.hpp"
#include "gl_generated.hpp"
#include "replayer.hpp"
#include "state.hpp"
#include "vmckpt/gl.h"
#include "vmckpt/plugin.h"

namespace vmckpt::gl {

namespace {

enum class Phase { Idle, Requested, Parked, Released };

struct Handshake {
  std::mutex m;
  std::condition_variable cv;
  Phase phase = Phase::Idle;
  vmckpt_event action = VMCKPT_RESUME;
  bool finished = false;
  bool ok = true;
  std::string reason;
  std::atomic<bool> pending{false};
  std::atomic<bool> haveRenderThread{false};
};

Handshake& hs() {
  static auto* h = new Handshake;
  return *h;
}

int boundaryTimeoutMs() {
  const char* v = std::getenv("VMCKPT_GL_BOUNDARY_TIMEOUT_MS");
  const int ms = v ? std::atoi(v) : 0;
  return ms > 0 ? ms : 3000;
}

vmckpt_result fail(char* reason, std::size_t len, const std::string& why) {
  std::snprintf(reason, len, "%s", why.c_str());
  return VMCKPT_FAILED;
}

vmckpt_result hook(void*, vmckpt_event ev, const char*, char* reason, std::size_t len) {
  Handshake& h = hs();
  std::unique_lock lock(h.m);
  switch (ev) {
    case VMCKPT_PRESUSPEND: {
      if (!h.haveRenderThread || state().appContext == EGL_NO_CONTEXT) return VMCKPT_NOT_MINE;
      h.phase = Phase::Requested;
      h.pending = true;
      const int ms = boundaryTimeoutMs();
      if (!h.cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return h.phase == Phase::Parked; })) {
        h.phase = Phase::Idle;
        h.pending = false;
        return fail(reason, len,
                    "gl: the render thread did not reach a frame boundary within " +
                        std::to_string(ms) + " ms (eglSwapBuffers or vmckpt_gl_frame_boundary)");
      }
      if (!h.ok) {
        h.phase = Phase::Released;
        h.action = VMCKPT_RESUME;
        h.cv.notify_all();
        return fail(reason, len, "gl: " + h.reason);
      }
      return VMCKPT_DONE;
    }
    case VMCKPT_PRECHECKPOINT:
      return h.phase == Phase::Parked ? VMCKPT_DONE : VMCKPT_NOT_MINE;
    case VMCKPT_RESUME:
      if (h.phase == Phase::Parked) {
        h.action = VMCKPT_RESUME;
        h.phase = Phase::Released;
        h.cv.notify_all();
        return VMCKPT_DONE;
      }
      h.phase = Phase::Idle;
      h.pending = false;
      return VMCKPT_NOT_MINE;
    case VMCKPT_RESTART: {
      if (h.phase != Phase::Parked) return VMCKPT_NOT_MINE;
      h.action = VMCKPT_RESTART;
      h.finished = false;
      h.phase = Phase::Released;
      h.cv.notify_all();
      if (!h.cv.wait_for(lock, std::chrono::seconds(30), [&] { return h.finished; }))
        return fail(reason, len, "gl: the replay did not finish within 30 s");
      return h.ok ? VMCKPT_DONE : fail(reason, len, "gl: " + h.reason);
    }
    default:
      return VMCKPT_NOT_MINE;
  }
}

}  // namespace

bool checkpointContext(std::string& error) {
  State& s = state();
  if (!t_recordedCurrent) {
    error = "the recorded OpenGL context is not current on this thread";
    return false;
  }
  real.Finish();
  s.captured = captureQueried(s.rec.compat());
  if (s.unsupportedCalls.load() > 0)
    std::fprintf(stderr, "vmckpt-gl: checkpoint: %u call(s) not recorded (first: %s)\n",
                 s.unsupportedCalls.load(), s.firstUnsupported.c_str());
  return true;
}

void noteRenderThread() { hs().haveRenderThread = true; }

int frameBoundary() {
  Handshake& h = hs();
  if (!h.pending.load(std::memory_order_relaxed) || !t_recordedCurrent) return 0;
  std::unique_lock lock(h.m);
  if (h.phase != Phase::Requested) return 0;
  lock.unlock();
  std::string error;
  const bool ok = checkpointContext(error);
  lock.lock();
  h.ok = ok;
  h.reason = error;
  h.phase = Phase::Parked;
  h.cv.notify_all();
  h.cv.wait(lock, [&] { return h.phase == Phase::Released; });
  const vmckpt_event action = h.action;
  lock.unlock();
  int result = 0;
  bool restartOk = true;
  std::string restartError;
  if (action == VMCKPT_RESTART) {
    restartOk = restartContext(nullptr, restartError);
    result = restartOk ? 1 : -1;
    if (!restartOk) std::fprintf(stderr, "vmckpt-gl: restart failed: %s\n", restartError.c_str());
  }
  lock.lock();
  h.ok = restartOk;
  h.reason = restartError;
  h.finished = true;
  h.phase = Phase::Idle;
  h.pending = false;
  h.cv.notify_all();
  return result;
}

void registerWithAgent() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("VMCKPT_GL_NO_AGENT")) return;
    const char* path = std::getenv("VMCKPT_AGENT_SOCKET");
    if (!path) path = VMCKPT_AGENT_SOCKET_DEFAULT;
    if (::access(path, F_OK) != 0) return;  // no agent: standalone, driven by the API
    static const vmckpt_plugin_descriptor desc = {VMCKPT_PLUGIN_API_VERSION, "gl", hook, nullptr};
    const int rc = vmckpt_register(&desc);
    if (rc < 0)
      std::fprintf(stderr, "vmckpt-gl: could not register with the agent at %s (error %d); "
                   "this process is not checkpointed consistently\n", path, -rc);
  });
}

}  // namespace vmckpt::gl

using namespace vmckpt::gl;

extern "C" {

VMCKPT_GL_EXPORT int vmckpt_gl_frame_boundary(void) { return frameBoundary(); }

VMCKPT_GL_EXPORT int vmckpt_gl_checkpoint(void) {
  std::string error;
  if (checkpointContext(error)) return 0;
  std::fprintf(stderr, "vmckpt-gl: checkpoint: %s\n", error.c_str());
  return -1;
}

VMCKPT_GL_EXPORT int vmckpt_gl_restart(const char* gallium_driver) {
  std::string error;
  if (!t_recordedCurrent) {
    std::fprintf(stderr, "vmckpt-gl: restart: the recorded OpenGL context is not current on this thread\n");
    return -1;
  }
  if (restartContext(gallium_driver, error)) return 0;
  std::fprintf(stderr, "vmckpt-gl: restart: %s\n", error.c_str());
  return -1;
}

VMCKPT_GL_EXPORT size_t vmckpt_gl_log_bytes(void) { return state().rec.bytes(); }

VMCKPT_GL_EXPORT size_t vmckpt_gl_log_entries(void) { return state().rec.size(); }

}  // extern "C"
