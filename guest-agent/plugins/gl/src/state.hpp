// The process-wide state of the interposer: the one recorded context, its log and names.
#pragma once

#include <EGL/egl.h>

#include <atomic>
#include <string>
#include <vector>

#include "names.hpp"
#include "recorder.hpp"
#include "replayer.hpp"

namespace vmckpt::gl {

struct State {
  Names names;
  Recorder rec{names};
  bool replaying = false;

  // The recorded context: the first one the application creates (one per process).
  EGLDisplay display = EGL_NO_DISPLAY;
  EGLContext appContext = EGL_NO_CONTEXT;   // the handle the application holds
  EGLContext realContext = EGL_NO_CONTEXT;  // the driver's context behind it now
  EGLConfig config = nullptr;
  EGLint configId = 0;
  std::vector<EGLint> attribs;              // as given to eglCreateContext, EGL_NONE-ended
  EGLSurface draw = EGL_NO_SURFACE, read = EGL_NO_SURFACE;
  EGLenum api = EGL_OPENGL_API;
  bool compatChecked = false;
  int restarts = 0;
  Captured captured;  // read back at the last checkpoint

  // Calls the log cannot restore; the first one is named in warnings.
  std::atomic<unsigned> unsupportedCalls{0};
  std::string firstUnsupported;
};

State& state();

// True while the recorded context is current on this thread.
extern thread_local bool t_recordedCurrent;

// Turns an application name into the driver's for a bind; in the compatibility profile a
// name that was never generated creates the object, as GL does.
GLuint toRealBind(Ns ns, GLenum target, GLuint virt);

}  // namespace vmckpt::gl
