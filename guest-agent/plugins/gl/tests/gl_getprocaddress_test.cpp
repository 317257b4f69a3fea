// Run with libvmckpt-gl.so preloaded (ctest sets LD_PRELOAD): programs that load GL
// through eglGetProcAddress (glad, GLEW, epoxy...) must get the recording wrappers, and
// the calls they make through them must land in the log.
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GL/gl.h>
#include <GL/glext.h>
#include <dlfcn.h>

#include <cstddef>

#include <gtest/gtest.h>

namespace {

using CountFn = std::size_t (*)();
using GenFn = void (*)(GLsizei, GLuint*);
using BindFn = void (*)(GLenum, GLuint);
using ParamFn = void (*)(GLenum, GLenum, GLint);
using ClearFn = void (*)(GLbitfield);

TEST(GlGetProcAddress, ReturnsTheWrappersAndTheyRecord) {
  auto entries = reinterpret_cast<CountFn>(dlsym(RTLD_DEFAULT, "vmckpt_gl_log_entries"));
  if (!entries) GTEST_SKIP() << "libvmckpt-gl.so is not preloaded";
  EGLDisplay dpy = eglGetPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, nullptr);
  ASSERT_NE(dpy, EGL_NO_DISPLAY);
  ASSERT_TRUE(eglInitialize(dpy, nullptr, nullptr));
  ASSERT_TRUE(eglBindAPI(EGL_OPENGL_API));
  const EGLint attribs[] = {EGL_CONTEXT_MAJOR_VERSION, 3, EGL_CONTEXT_MINOR_VERSION, 3,
                            EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
                            EGL_NONE};
  EGLContext ctx = eglCreateContext(dpy, EGL_NO_CONFIG_KHR, EGL_NO_CONTEXT, attribs);
  ASSERT_NE(ctx, EGL_NO_CONTEXT);
  ASSERT_TRUE(eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx));
  EXPECT_EQ(eglGetCurrentContext(), ctx);

  auto gen = reinterpret_cast<GenFn>(eglGetProcAddress("glGenTextures"));
  auto bind = reinterpret_cast<BindFn>(eglGetProcAddress("glBindTexture"));
  auto param = reinterpret_cast<ParamFn>(eglGetProcAddress("glTexParameteri"));
  auto clear = reinterpret_cast<ClearFn>(eglGetProcAddress("glClear"));
  ASSERT_TRUE(gen && bind && param && clear);
  EXPECT_EQ(reinterpret_cast<void*>(param), dlsym(RTLD_DEFAULT, "glTexParameteri"))
      << "eglGetProcAddress did not return the wrapper";
  // Not state: handed out as the driver's own entry point, no wrapper in the way.
  EXPECT_NE(reinterpret_cast<void*>(clear), dlsym(RTLD_DEFAULT, "glTexParameteri"));

  const std::size_t before = entries();
  GLuint tex = 0;
  gen(1, &tex);
  bind(GL_TEXTURE_2D, tex);
  param(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
  param(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR);  // replaces the one before
  param(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
  EXPECT_EQ(entries(), before + 3) << "bind + two parameters";

  eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
  eglDestroyContext(dpy, ctx);
  eglTerminate(dpy);
}

}  // namespace
