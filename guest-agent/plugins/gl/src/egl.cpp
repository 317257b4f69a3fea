// EGL interposition: tracks the one recorded context, answers eglGetProcAddress with the
// wrappers, and replaces the context on restart (the application keeps its handle).
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "context.hpp"
#include "gl_generated.hpp"
#include "replayer.hpp"
#include "state.hpp"

namespace vmckpt::gl {

void forgetSyncs();

namespace {

void* nextSymbol(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (!p) {
    static void* egl = dlopen("libEGL.so.1", RTLD_LAZY | RTLD_GLOBAL);
    if (egl) p = dlsym(egl, name);
  }
  return p;
}

template <typename F>
F nextEgl(const char* name) {
  return reinterpret_cast<F>(nextSymbol(name));
}

struct RealEgl {
  decltype(&::eglGetProcAddress) GetProcAddress = nextEgl<decltype(&::eglGetProcAddress)>("eglGetProcAddress");
  decltype(&::eglCreateContext) CreateContext = nextEgl<decltype(&::eglCreateContext)>("eglCreateContext");
  decltype(&::eglDestroyContext) DestroyContext = nextEgl<decltype(&::eglDestroyContext)>("eglDestroyContext");
  decltype(&::eglMakeCurrent) MakeCurrent = nextEgl<decltype(&::eglMakeCurrent)>("eglMakeCurrent");
  decltype(&::eglGetCurrentContext) GetCurrentContext = nextEgl<decltype(&::eglGetCurrentContext)>("eglGetCurrentContext");
  decltype(&::eglSwapBuffers) SwapBuffers = nextEgl<decltype(&::eglSwapBuffers)>("eglSwapBuffers");
  decltype(&::eglQueryAPI) QueryAPI = nextEgl<decltype(&::eglQueryAPI)>("eglQueryAPI");
  decltype(&::eglBindAPI) BindAPI = nextEgl<decltype(&::eglBindAPI)>("eglBindAPI");
  decltype(&::eglGetConfigAttrib) GetConfigAttrib = nextEgl<decltype(&::eglGetConfigAttrib)>("eglGetConfigAttrib");
  decltype(&::eglChooseConfig) ChooseConfig = nextEgl<decltype(&::eglChooseConfig)>("eglChooseConfig");
  decltype(&::eglTerminate) Terminate = nextEgl<decltype(&::eglTerminate)>("eglTerminate");
  decltype(&::eglInitialize) Initialize = nextEgl<decltype(&::eglInitialize)>("eglInitialize");
  decltype(&::eglGetError) GetError = nextEgl<decltype(&::eglGetError)>("eglGetError");
};

RealEgl& egl() {
  static RealEgl* r = new RealEgl;
  return *r;
}

using GlxGetProc = void* (*)(const unsigned char*);

void resolveAll() {
  for (int i = 0; i < kCommandCount; ++i) {
    const char* name = commandName(static_cast<Cmd>(i));
    if (resolveDriverOptional(name)) resolve(static_cast<Cmd>(i));
  }
}

// The first time the recorded context is current: what kind of context it is.
void onFirstCurrent(State& s) {
  if (s.compatChecked) return;
  s.compatChecked = true;
  resolveAll();
  GLint major = 0, minor = 0, profile = 0;
  real.GetIntegerv(GL_MAJOR_VERSION, &major);
  real.GetIntegerv(GL_MINOR_VERSION, &minor);
  while (real.GetError() != GL_NO_ERROR) {
  }
  if (major >= 3 && (major > 3 || minor >= 2)) real.GetIntegerv(GL_CONTEXT_PROFILE_MASK, &profile);
  while (real.GetError() != GL_NO_ERROR) {
  }
  s.rec.setCompat(!(profile & GL_CONTEXT_CORE_PROFILE_BIT) && s.api == EGL_OPENGL_API);
}

}  // namespace

void* resolveDriverOptional(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (!p) {
    static void* gl = dlopen("libOpenGL.so.0", RTLD_LAZY | RTLD_GLOBAL);
    if (gl) p = dlsym(gl, name);
  }
  if (!p && egl().GetProcAddress) p = reinterpret_cast<void*>(egl().GetProcAddress(name));
  if (!p) {
    auto glx = reinterpret_cast<GlxGetProc>(dlsym(RTLD_NEXT, "glXGetProcAddressARB"));
    if (glx) p = reinterpret_cast<void*>(glx(reinterpret_cast<const unsigned char*>(name)));
  }
  return p;
}

void* resolveDriver(const char* name) {
  void* p = resolveDriverOptional(name);
  if (!p) {
    std::fprintf(stderr, "vmckpt-gl: the GL driver has no %s\n", name);
    std::abort();
  }
  return p;
}

bool restartContext(const char* galliumDriver, std::string& error) {
  State& s = state();
  RealEgl& e = egl();
  if (s.appContext == EGL_NO_CONTEXT) {
    error = "no OpenGL context has been created";
    return false;
  }
  if (galliumDriver && (s.draw != EGL_NO_SURFACE || s.read != EGL_NO_SURFACE)) {
    error = "switching drivers needs a surfaceless context (the display is re-initialised)";
    return false;
  }
  const Captured captured = s.captured;
  e.MakeCurrent(s.display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
  t_recordedCurrent = false;
  e.DestroyContext(s.display, s.realContext);  // may fail when the device is gone
  s.realContext = EGL_NO_CONTEXT;
  if (galliumDriver) {
    setenv("GALLIUM_DRIVER", galliumDriver, 1);
    e.Terminate(s.display);
    EGLint major = 0, minor = 0;
    if (!e.Initialize(s.display, &major, &minor)) {
      error = "eglInitialize failed after switching to " + std::string(galliumDriver);
      return false;
    }
    if (s.configId != 0) {
      const EGLint want[] = {EGL_CONFIG_ID, s.configId, EGL_NONE};
      EGLint n = 0;
      if (!e.ChooseConfig(s.display, want, &s.config, 1, &n) || n != 1) {
        error = "the new driver has no EGL config like the old one";
        return false;
      }
    }
  }
  const EGLenum api = e.QueryAPI();
  e.BindAPI(s.api);
  s.realContext = e.CreateContext(s.display, s.config, EGL_NO_CONTEXT, s.attribs.data());
  e.BindAPI(api);
  if (s.realContext == EGL_NO_CONTEXT) {
    error = "eglCreateContext failed for the replacement context";
    return false;
  }
  if (!e.MakeCurrent(s.display, s.draw, s.read, s.realContext)) {
    error = "eglMakeCurrent failed for the replacement context";
    return false;
  }
  t_recordedCurrent = true;
  s.replaying = true;
  Replayer rp(s.rec, s.names);
  std::string replayError;
  const bool ok = rp.run(captured, replayError);
  s.replaying = false;
  ++s.restarts;
  forgetSyncs();
  if (!ok) {
    error = "replay: " + replayError;
    return false;
  }
  return true;
}

}  // namespace vmckpt::gl

using namespace vmckpt::gl;

extern "C" {

VMCKPT_GL_EXPORT __eglMustCastToProperFunctionPointerType eglGetProcAddress(const char* name) {
  if (name)
    if (void* w = wrapperFor(name))
      return reinterpret_cast<__eglMustCastToProperFunctionPointerType>(w);
  return egl().GetProcAddress ? egl().GetProcAddress(name) : nullptr;
}

VMCKPT_GL_EXPORT void* glXGetProcAddressARB(const unsigned char* name) {
  if (name)
    if (void* w = wrapperFor(reinterpret_cast<const char*>(name))) return w;
  static auto next = reinterpret_cast<GlxGetProc>(dlsym(RTLD_NEXT, "glXGetProcAddressARB"));
  return next ? next(name) : nullptr;
}

VMCKPT_GL_EXPORT void* glXGetProcAddress(const unsigned char* name) {
  return glXGetProcAddressARB(name);
}

VMCKPT_GL_EXPORT EGLContext eglCreateContext(EGLDisplay dpy, EGLConfig config,
                                             EGLContext share, const EGLint* attribs) {
  State& s = state();
  EGLContext real = egl().CreateContext(dpy, config,
                                        share == s.appContext && share != EGL_NO_CONTEXT
                                            ? s.realContext : share,
                                        attribs);
  if (real == EGL_NO_CONTEXT) return real;
  if (s.appContext != EGL_NO_CONTEXT) {
    std::fprintf(stderr, "vmckpt-gl: only the first OpenGL context is recorded; this process "
                         "made another one\n");
    return real;
  }
  s.display = dpy;
  s.appContext = real;
  s.realContext = real;
  s.config = config;
  s.api = egl().QueryAPI();
  if (config) egl().GetConfigAttrib(dpy, config, EGL_CONFIG_ID, &s.configId);
  s.attribs.clear();
  for (const EGLint* a = attribs; a && *a != EGL_NONE; a += 2) {
    s.attribs.push_back(a[0]);
    s.attribs.push_back(a[1]);
  }
  s.attribs.push_back(EGL_NONE);
  if (share != EGL_NO_CONTEXT)
    std::fprintf(stderr, "vmckpt-gl: shared contexts are not recorded as a share group\n");
  registerWithAgent();
  return real;
}

VMCKPT_GL_EXPORT EGLBoolean eglDestroyContext(EGLDisplay dpy, EGLContext ctx) {
  State& s = state();
  if (ctx != EGL_NO_CONTEXT && ctx == s.appContext) {
    EGLBoolean ok = egl().DestroyContext(dpy, s.realContext);
    s.appContext = s.realContext = EGL_NO_CONTEXT;
    t_recordedCurrent = false;
    return ok;
  }
  return egl().DestroyContext(dpy, ctx);
}

VMCKPT_GL_EXPORT EGLBoolean eglMakeCurrent(EGLDisplay dpy, EGLSurface draw, EGLSurface read,
                                           EGLContext ctx) {
  State& s = state();
  const bool ours = ctx != EGL_NO_CONTEXT && ctx == s.appContext;
  EGLBoolean ok = egl().MakeCurrent(dpy, draw, read, ours ? s.realContext : ctx);
  if (!ok) return ok;
  t_recordedCurrent = ours;
  if (ours) {
    s.draw = draw;
    s.read = read;
    noteRenderThread();
    onFirstCurrent(s);
  }
  return ok;
}

VMCKPT_GL_EXPORT EGLContext eglGetCurrentContext(void) {
  State& s = state();
  EGLContext c = egl().GetCurrentContext();
  return (c != EGL_NO_CONTEXT && c == s.realContext) ? s.appContext : c;
}

VMCKPT_GL_EXPORT EGLBoolean eglSwapBuffers(EGLDisplay dpy, EGLSurface surface) {
  EGLBoolean ok = egl().SwapBuffers(dpy, surface);
  if (t_recordedCurrent) frameBoundary();
  return ok;
}

}  // extern "C"
