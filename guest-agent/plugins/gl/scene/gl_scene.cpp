// vmckpt-gl-scene: deterministic off-screen OpenGL scenes for testing libvmckpt-gl.so.
//
// Renders N frames into an application-owned framebuffer object through a surfaceless EGL
// context, optionally checkpointing and restarting the GL state in the middle of the run
// (through the interposer's API, looked up with dlsym so the program also runs natively).
// Every per-frame value is a pure function of the frame index, so two runs -- or one run
// with a restart and one without -- produce the same pixels on the same driver.
//
// GL entry points are called directly (linked from libOpenGL), never through a loader:
// the interposer overrides those exported symbols.
//
// Build: g++ -std=c++20 -O2 gl_scene.cpp -o vmckpt-gl-scene -lEGL -lOpenGL -ldl

#define GL_GLEXT_PROTOTYPES 1
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GL/gl.h>
#include <GL/glext.h>
#include <dlfcn.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace {

constexpr const char* kProg = "vmckpt-gl-scene";
constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------------
// Errors

[[noreturn]] __attribute__((format(printf, 2, 3))) void die(int code, const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: ", kProg);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(code);
}

const char* glErrorName(GLenum e) {
  switch (e) {
    case GL_INVALID_ENUM: return "GL_INVALID_ENUM";
    case GL_INVALID_VALUE: return "GL_INVALID_VALUE";
    case GL_INVALID_OPERATION: return "GL_INVALID_OPERATION";
    case GL_STACK_OVERFLOW: return "GL_STACK_OVERFLOW";
    case GL_STACK_UNDERFLOW: return "GL_STACK_UNDERFLOW";
    case GL_OUT_OF_MEMORY: return "GL_OUT_OF_MEMORY";
    case GL_INVALID_FRAMEBUFFER_OPERATION: return "GL_INVALID_FRAMEBUFFER_OPERATION";
    default: return "unknown";
  }
}

// Exits 1 when the GL error flag is set; reports every queued error on one line.
void checkGl(const char* when) {
  std::string errs;
  for (int i = 0; i < 16; ++i) {
    GLenum e = glGetError();
    if (e == GL_NO_ERROR) break;
    char b[64];
    std::snprintf(b, sizeof b, "%s0x%04x (%s)", errs.empty() ? "" : ", ", e, glErrorName(e));
    errs += b;
  }
  if (!errs.empty()) die(1, "GL error %s: %s", when, errs.c_str());
}

void checkFbo(GLenum target, const char* what) {
  GLenum st = glCheckFramebufferStatus(target);
  if (st != GL_FRAMEBUFFER_COMPLETE) die(1, "%s framebuffer incomplete: status 0x%04x", what, st);
}

// ---------------------------------------------------------------------------------------
// Command line

enum class SceneKind { Core, Fixed, Heavy };

struct Options {
  SceneKind scene = SceneKind::Core;
  uint64_t frames = 30;
  int size = 0;  // 0: the scene's default
  int64_t restartAt = -1;
  bool haveRestartDriver = false;
  std::string restartDriver;
  std::string out;
  std::vector<uint64_t> logBytesAt;
  bool printRenderer = false;
  bool fps = false;
  bool loop = false;
  uint64_t crcEvery = 0;  // 0: no 'frame=<n> crc=' lines (--loop: 50 unless given)
  bool stats = false;
};

void printHelp() {
  std::printf(
      "Usage: %s [options]\n"
      "\n"
      "Renders deterministic OpenGL frames off-screen (surfaceless EGL, application-owned\n"
      "framebuffer object) to exercise libvmckpt-gl.so (LD_PRELOAD). Every per-frame value is\n"
      "a pure function of the frame index: two runs give identical pixels on one driver.\n"
      "Run it with EGL_PLATFORM=surfaceless.\n"
      "\n"
      "Options:\n"
      "  --scene core|fixed|heavy  scene to render (default core)\n"
      "        core:  OpenGL 3.3 core; 3 programs, 4 textures, 3 VAOs, static/dynamic/\n"
      "               per-frame temporary buffers, offscreen FBO pass + composite pass\n"
      "        fixed: compatibility context, fixed function: matrix stacks, lighting, fog,\n"
      "               texture env, client-state arrays from a VBO, glBegin/glEnd\n"
      "        heavy: OpenGL 3.3 core; 2000 tiny draws per frame, each with glUniform4f,\n"
      "               glUniform2f and glBindTexture (call-heavy overhead benchmark)\n"
      "  --frames N                frames to render (default 30)\n"
      "  --size S                  framebuffer size S x S pixels (default 128; heavy: 64)\n"
      "  --restart-at K            before frame K (0-based) call vmckpt_gl_checkpoint() and\n"
      "                            vmckpt_gl_restart(); needs the interposer (exit 2 without\n"
      "                            it), exit 1 if either call fails\n"
      "  --restart-driver NAME     gallium driver for that restart (llvmpipe, softpipe);\n"
      "                            default: NULL (same driver)\n"
      "  --out FILE                write every frame's pixels to FILE: S*S*4 bytes RGBA per\n"
      "                            frame as glReadPixels returns them (bottom row first),\n"
      "                            frames in order, no header\n"
      "  --log-bytes-at F1,F2,...  after F frames have been rendered print\n"
      "                            'log_bytes frames=F bytes=B entries=E' (needs the\n"
      "                            interposer; exit 2 without it)\n"
      "  --print-renderer          print 'renderer: <GL_RENDERER>' at start and after a restart\n"
      "  --fps                     print 'fps: <float>' after the run (steady clock over the\n"
      "                            rendered frames, glFinish before stopping the clock)\n"
      "  --loop                    render until SIGTERM/SIGINT (ignores --frames); for frame\n"
      "                            n = 0, 50, 100, ... print 'frame=<n> crc=<crc32>' (zlib\n"
      "                            CRC-32 of that frame's pixels, 8 hex digits)\n"
      "  --crc-every N             print 'frame=<n> crc=<crc32>' for every frame n that is a\n"
      "                            multiple of N (n = 0, N, 2N, ...), with or without --loop\n"
      "                            (default: 50 with --loop, none without)\n"
      "  --stats                   debug: print 'frame=<n> colors=<distinct colors>' per frame\n"
      "                            and the GL version at start\n"
      "  --help                    show this help\n"
      "\n"
      "After every frame vmckpt_gl_frame_boundary() is called when the interposer provides\n"
      "it; when it returns 1 (context replaced) the program prints\n"
      "'restarted at frame=<n> renderer=<GL_RENDERER>', n being the next frame to render.\n"
      "\n"
      "Exit status: 0 success, 1 GL/EGL/runtime failure (including GL errors after setup or\n"
      "at the end of the run), 2 usage error or missing interposer API.\n",
      kProg);
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void usageError(const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  die(2, "%s (see --help)", msg);
}

uint64_t parseCount(std::string_view opt, std::string_view v, uint64_t lo, uint64_t hi) {
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size())
    usageError("%.*s: '%.*s' is not a number", int(opt.size()), opt.data(), int(v.size()), v.data());
  if (n < lo || n > hi)
    usageError("%.*s: %llu is out of range [%llu, %llu]", int(opt.size()), opt.data(),
               static_cast<unsigned long long>(n), static_cast<unsigned long long>(lo),
               static_cast<unsigned long long>(hi));
  return n;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  bool framesGiven = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg;
    std::string_view value;
    bool inlineValue = false;
    if (arg.starts_with("--")) {
      size_t eq = arg.find('=');
      if (eq != std::string_view::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
        inlineValue = true;
      }
    }
    auto takeValue = [&]() -> std::string_view {
      if (inlineValue) return value;
      if (i + 1 >= argc) usageError("option %.*s needs a value", int(name.size()), name.data());
      return argv[++i];
    };
    auto flag = [&](bool& b) {
      if (inlineValue) usageError("option %.*s takes no value", int(name.size()), name.data());
      b = true;
    };
    if (name == "--help" || name == "-h") {
      printHelp();
      std::exit(0);
    } else if (name == "--scene") {
      std::string_view v = takeValue();
      if (v == "core") o.scene = SceneKind::Core;
      else if (v == "fixed") o.scene = SceneKind::Fixed;
      else if (v == "heavy") o.scene = SceneKind::Heavy;
      else usageError("--scene: unknown scene '%.*s' (core, fixed, heavy)", int(v.size()), v.data());
    } else if (name == "--frames") {
      o.frames = parseCount(name, takeValue(), 1, 1000000000);
      framesGiven = true;
    } else if (name == "--size") {
      o.size = static_cast<int>(parseCount(name, takeValue(), 8, 4096));
    } else if (name == "--restart-at") {
      o.restartAt = static_cast<int64_t>(parseCount(name, takeValue(), 0, 1000000000));
    } else if (name == "--restart-driver") {
      std::string_view v = takeValue();
      if (v.empty()) usageError("--restart-driver: empty driver name");
      o.restartDriver = std::string(v);
      o.haveRestartDriver = true;
    } else if (name == "--out") {
      std::string_view v = takeValue();
      if (v.empty()) usageError("--out: empty file name");
      o.out = std::string(v);
    } else if (name == "--log-bytes-at") {
      std::string_view v = takeValue();
      o.logBytesAt.clear();
      while (true) {
        size_t comma = v.find(',');
        o.logBytesAt.push_back(parseCount(name, v.substr(0, comma), 1, 1000000000));
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
      }
      std::sort(o.logBytesAt.begin(), o.logBytesAt.end());
    } else if (name == "--print-renderer") {
      flag(o.printRenderer);
    } else if (name == "--fps") {
      flag(o.fps);
    } else if (name == "--loop") {
      flag(o.loop);
    } else if (name == "--crc-every") {
      o.crcEvery = parseCount(name, takeValue(), 1, 1000000000);
    } else if (name == "--stats") {
      flag(o.stats);
    } else if (arg.starts_with("-")) {
      usageError("unknown option '%.*s'", int(name.size()), name.data());
    } else {
      usageError("unexpected argument '%.*s'", int(arg.size()), arg.data());
    }
  }
  if (o.haveRestartDriver && o.restartAt < 0) usageError("--restart-driver needs --restart-at");
  if (!o.loop) {
    if (o.restartAt >= 0 && static_cast<uint64_t>(o.restartAt) >= o.frames)
      usageError("--restart-at %lld is not below --frames %llu", static_cast<long long>(o.restartAt),
                 static_cast<unsigned long long>(o.frames));
    if (!o.logBytesAt.empty() && o.logBytesAt.back() > o.frames)
      usageError("--log-bytes-at %llu is above --frames %llu", static_cast<unsigned long long>(o.logBytesAt.back()),
                 static_cast<unsigned long long>(o.frames));
  } else if (framesGiven) {
    std::fprintf(stderr, "%s: note: --loop renders until SIGTERM/SIGINT; --frames is ignored\n", kProg);
  }
  if (o.size == 0) o.size = o.scene == SceneKind::Heavy ? 64 : 128;
  if (o.loop && o.crcEvery == 0) o.crcEvery = 50;
  return o;
}

// ---------------------------------------------------------------------------------------
// The interposer's optional API (absent when running natively)

struct VmckptApi {
  int (*frameBoundary)() = nullptr;
  int (*checkpoint)() = nullptr;
  int (*restart)(const char*) = nullptr;
  size_t (*logBytes)() = nullptr;
  size_t (*logEntries)() = nullptr;
};

template <typename Fn>
void lookup(Fn& fn, const char* name) {
  fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

VmckptApi lookupApi() {
  VmckptApi api;
  lookup(api.frameBoundary, "vmckpt_gl_frame_boundary");
  lookup(api.checkpoint, "vmckpt_gl_checkpoint");
  lookup(api.restart, "vmckpt_gl_restart");
  lookup(api.logBytes, "vmckpt_gl_log_bytes");
  lookup(api.logEntries, "vmckpt_gl_log_entries");
  return api;
}

// ---------------------------------------------------------------------------------------
// EGL

bool hasExtension(const char* list, std::string_view ext) {
  if (!list) return false;
  std::string_view l = list;
  size_t pos = 0;
  while ((pos = l.find(ext, pos)) != std::string_view::npos) {
    bool startOk = pos == 0 || l[pos - 1] == ' ';
    size_t end = pos + ext.size();
    bool endOk = end == l.size() || l[end] == ' ';
    if (startOk && endOk) return true;
    pos = end;
  }
  return false;
}

struct Egl {
  EGLDisplay dpy = EGL_NO_DISPLAY;
  EGLContext ctx = EGL_NO_CONTEXT;
};

Egl initEgl(SceneKind kind) {
  Egl e;
  const char* clientExts = eglQueryString(EGL_NO_DISPLAY, EGL_EXTENSIONS);
  if (hasExtension(clientExts, "EGL_MESA_platform_surfaceless") && hasExtension(clientExts, "EGL_EXT_platform_base")) {
    auto getPlatformDisplay =
        reinterpret_cast<PFNEGLGETPLATFORMDISPLAYEXTPROC>(eglGetProcAddress("eglGetPlatformDisplayEXT"));
    if (getPlatformDisplay) e.dpy = getPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, nullptr);
  }
  if (e.dpy == EGL_NO_DISPLAY) e.dpy = eglGetDisplay(EGL_DEFAULT_DISPLAY);
  if (e.dpy == EGL_NO_DISPLAY) die(1, "EGL: no display");
  EGLint major = 0, minor = 0;
  if (!eglInitialize(e.dpy, &major, &minor)) die(1, "EGL: eglInitialize failed: 0x%04x", eglGetError());
  const char* exts = eglQueryString(e.dpy, EGL_EXTENSIONS);
  if (!hasExtension(exts, "EGL_KHR_no_config_context") && !hasExtension(exts, "EGL_MESA_configless_context"))
    die(1, "EGL: display lacks EGL_KHR_no_config_context");
  if (!hasExtension(exts, "EGL_KHR_surfaceless_context")) die(1, "EGL: display lacks EGL_KHR_surfaceless_context");
  if (!eglBindAPI(EGL_OPENGL_API)) die(1, "EGL: eglBindAPI(EGL_OPENGL_API) failed: 0x%04x", eglGetError());

  std::vector<EGLint> attrs;
  if (kind == SceneKind::Fixed) {
    attrs = {EGL_CONTEXT_MAJOR_VERSION, 2, EGL_CONTEXT_MINOR_VERSION, 1, EGL_CONTEXT_OPENGL_PROFILE_MASK,
             EGL_CONTEXT_OPENGL_COMPATIBILITY_PROFILE_BIT, EGL_NONE};
  } else {
    attrs = {EGL_CONTEXT_MAJOR_VERSION, 3, EGL_CONTEXT_MINOR_VERSION, 3, EGL_CONTEXT_OPENGL_PROFILE_MASK,
             EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT, EGL_NONE};
  }
  e.ctx = eglCreateContext(e.dpy, EGL_NO_CONFIG_KHR, EGL_NO_CONTEXT, attrs.data());
  if (e.ctx == EGL_NO_CONTEXT) die(1, "EGL: eglCreateContext failed: 0x%04x", eglGetError());
  if (!eglMakeCurrent(e.dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, e.ctx))
    die(1, "EGL: eglMakeCurrent failed: 0x%04x", eglGetError());
  return e;
}

void shutdownEgl(const Egl& e) {
  eglMakeCurrent(e.dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
  eglDestroyContext(e.dpy, e.ctx);
  eglTerminate(e.dpy);
}

const char* glStr(GLenum name) {
  const GLubyte* s = glGetString(name);
  return s ? reinterpret_cast<const char*>(s) : "(null)";
}

// ---------------------------------------------------------------------------------------
// Small helpers: matrices, deterministic per-frame values, GL object creation

struct Mat4 {
  std::array<float, 16> m{};  // column-major, as glUniformMatrix4fv(transpose=GL_FALSE) wants
  static Mat4 identity() {
    Mat4 r;
    r.m[0] = r.m[5] = r.m[10] = r.m[15] = 1.0f;
    return r;
  }
  float& at(int row, int col) { return m[static_cast<size_t>(col * 4 + row)]; }
  float at(int row, int col) const { return m[static_cast<size_t>(col * 4 + row)]; }
};

Mat4 operator*(const Mat4& a, const Mat4& b) {
  Mat4 r;
  for (int c = 0; c < 4; ++c)
    for (int row = 0; row < 4; ++row) {
      float s = 0.0f;
      for (int k = 0; k < 4; ++k) s += a.at(row, k) * b.at(k, c);
      r.at(row, c) = s;
    }
  return r;
}

Mat4 translate(float x, float y, float z) {
  Mat4 r = Mat4::identity();
  r.at(0, 3) = x;
  r.at(1, 3) = y;
  r.at(2, 3) = z;
  return r;
}

Mat4 scale(float x, float y, float z) {
  Mat4 r = Mat4::identity();
  r.at(0, 0) = x;
  r.at(1, 1) = y;
  r.at(2, 2) = z;
  return r;
}

Mat4 rotateX(double a) {
  Mat4 r = Mat4::identity();
  float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
  r.at(1, 1) = c;
  r.at(1, 2) = -s;
  r.at(2, 1) = s;
  r.at(2, 2) = c;
  return r;
}

Mat4 rotateY(double a) {
  Mat4 r = Mat4::identity();
  float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
  r.at(0, 0) = c;
  r.at(0, 2) = s;
  r.at(2, 0) = -s;
  r.at(2, 2) = c;
  return r;
}

Mat4 rotateZ(double a) {
  Mat4 r = Mat4::identity();
  float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
  r.at(0, 0) = c;
  r.at(0, 1) = -s;
  r.at(1, 0) = s;
  r.at(1, 1) = c;
  return r;
}

Mat4 perspective(double fovyRad, double aspect, double zNear, double zFar) {
  Mat4 r;
  double f = 1.0 / std::tan(fovyRad / 2.0);
  r.at(0, 0) = static_cast<float>(f / aspect);
  r.at(1, 1) = static_cast<float>(f);
  r.at(2, 2) = static_cast<float>((zFar + zNear) / (zNear - zFar));
  r.at(2, 3) = static_cast<float>(2.0 * zFar * zNear / (zNear - zFar));
  r.at(3, 2) = -1.0f;
  return r;
}

// Position within a cycle of `period` frames, in [0, 1): keeps values exact for any index.
double cycle(uint64_t frame, uint64_t period) {
  return static_cast<double>(frame % period) / static_cast<double>(period);
}

uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

GLuint compileShader(GLenum type, const char* src, const char* what) {
  GLuint sh = glCreateShader(type);
  glShaderSource(sh, 1, &src, nullptr);
  glCompileShader(sh);
  GLint ok = GL_FALSE;
  glGetShaderiv(sh, GL_COMPILE_STATUS, &ok);
  if (!ok) {
    char log[2048] = {};
    glGetShaderInfoLog(sh, sizeof log, nullptr, log);
    for (char& c : log)
      if (c == '\n') c = ' ';
    die(1, "%s %s shader: compile failed: %s", what, type == GL_VERTEX_SHADER ? "vertex" : "fragment", log);
  }
  return sh;
}

struct AttribBinding {
  GLuint index;
  const char* name;
};

// Compiles and links a program, then deletes the shader objects right away (they stay
// attached, flagged for deletion, as many applications leave them).
GLuint buildProgram(const char* what, const char* vsSrc, const char* fsSrc, std::vector<AttribBinding> attribs = {}) {
  GLuint vs = compileShader(GL_VERTEX_SHADER, vsSrc, what);
  GLuint fs = compileShader(GL_FRAGMENT_SHADER, fsSrc, what);
  GLuint prog = glCreateProgram();
  glAttachShader(prog, vs);
  glAttachShader(prog, fs);
  for (const AttribBinding& a : attribs) glBindAttribLocation(prog, a.index, a.name);
  glLinkProgram(prog);
  GLint ok = GL_FALSE;
  glGetProgramiv(prog, GL_LINK_STATUS, &ok);
  if (!ok) {
    char log[2048] = {};
    glGetProgramInfoLog(prog, sizeof log, nullptr, log);
    for (char& c : log)
      if (c == '\n') c = ' ';
    die(1, "%s program: link failed: %s", what, log);
  }
  glDeleteShader(vs);
  glDeleteShader(fs);
  return prog;
}

GLint uniformLoc(GLuint prog, const char* name) {
  GLint loc = glGetUniformLocation(prog, name);
  if (loc < 0) die(1, "uniform '%s' not found in program %u", name, prog);
  return loc;
}

GLuint attribLoc(GLuint prog, const char* name) {
  GLint loc = glGetAttribLocation(prog, name);
  if (loc < 0) die(1, "attribute '%s' not found in program %u", name, prog);
  return static_cast<GLuint>(loc);
}

const void* bufferOffset(size_t bytes) { return reinterpret_cast<const void*>(bytes); }

// Output framebuffer: RGBA8 color renderbuffer + 24-bit depth renderbuffer, left bound to
// GL_FRAMEBUFFER.
GLuint createOutputFbo(int size) {
  GLuint fbo = 0, color = 0, depth = 0;
  glGenFramebuffers(1, &fbo);
  glBindFramebuffer(GL_FRAMEBUFFER, fbo);
  glGenRenderbuffers(1, &color);
  glBindRenderbuffer(GL_RENDERBUFFER, color);
  glRenderbufferStorage(GL_RENDERBUFFER, GL_RGBA8, size, size);
  glFramebufferRenderbuffer(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_RENDERBUFFER, color);
  glGenRenderbuffers(1, &depth);
  glBindRenderbuffer(GL_RENDERBUFFER, depth);
  glRenderbufferStorage(GL_RENDERBUFFER, GL_DEPTH_COMPONENT24, size, size);
  glFramebufferRenderbuffer(GL_FRAMEBUFFER, GL_DEPTH_ATTACHMENT, GL_RENDERBUFFER, depth);
  checkFbo(GL_FRAMEBUFFER, "output");
  return fbo;
}

// ---------------------------------------------------------------------------------------
// Scenes

class Scene {
 public:
  virtual ~Scene() = default;
  virtual void setup(int size) = 0;
  virtual void render(uint64_t frame) = 0;
  virtual GLuint outputFbo() const = 0;
};

// ---- core: OpenGL 3.3 core profile ----------------------------------------------------
//
// Set once at setup and never again: programs and their set-once uniforms (tint, palette
// array, samplers, transforms, kernel array), texture contents and parameters (one texture
// with mipmaps, one RGB odd-width texture uploaded with GL_UNPACK_ALIGNMENT 1, which stays
// 1 for the per-frame RGB sub-image uploads), the static VBO/EBO/VAO, the dynamic VAO's
// layout, the temporary-buffer VAO's enabled arrays, both FBOs, the clear color used for
// the output FBO, depth test/func, blending, culling with glFrontFace(GL_CW) and CW
// geometry.
//
// Per frame: a sub-image of the dynamic texture (it relies on that texture still being
// bound to unit 0 from the previous frame), glBufferSubData of the dynamic VBO, a temporary
// buffer generated, filled, drawn (through a persistent VAO) and deleted, per-frame
// uniforms, and bindings that change during the frame. A frame ends with pass 2's program
// and VAO bound, the output FBO bound and texture unit 1 active.

constexpr const char* kSceneVs = R"(#version 330 core
in vec3 aPos;
in vec3 aColor;
in vec2 aUv;
uniform mat4 uMvp;
uniform float uPhase;
out vec3 vColor;
out vec2 vUv;
void main() {
  gl_Position = uMvp * vec4(aPos, 1.0);
  vColor = aColor;
  vUv = aUv * 2.0 + vec2(uPhase, 0.0);
}
)";

constexpr const char* kSceneFs = R"(#version 330 core
in vec3 vColor;
in vec2 vUv;
uniform sampler2D uTexA;
uniform sampler2D uTexB;
uniform vec4 uTint;
uniform vec4 uPalette[3];
uniform float uPhase;
out vec4 fragColor;
void main() {
  vec4 a = texture(uTexA, vUv);
  vec4 b = texture(uTexB, vUv * 0.5 - vec2(0.0, uPhase));
  int idx = int(vColor.r * 2.99);
  vec3 c = mix(a.rgb * vColor, b.rgb, 0.35) * uTint.rgb + uPalette[idx].rgb * 0.25;
  fragColor = vec4(c, 1.0);
}
)";

constexpr const char* kDynVs = R"(#version 330 core
in vec2 aPos;
in vec4 aColor;
uniform mat4 uXform;
out vec4 vColor;
void main() {
  gl_Position = uXform * vec4(aPos, 0.0, 1.0);
  vColor = aColor;
}
)";

constexpr const char* kDynFs = R"(#version 330 core
in vec4 vColor;
uniform vec4 uColor;
uniform float uFade;
out vec4 fragColor;
void main() {
  fragColor = vec4(vColor.rgb * uColor.rgb, vColor.a * uColor.a * uFade);
}
)";

constexpr const char* kPostVs = R"(#version 330 core
in vec3 aPos;
in vec2 aUv;
uniform mat4 uUvXform;
out vec2 vUv;
void main() {
  gl_Position = vec4(aPos.xy, 0.0, 1.0);
  vUv = (uUvXform * vec4(aUv, 0.0, 1.0)).xy;
}
)";

constexpr const char* kPostFs = R"(#version 330 core
in vec2 vUv;
uniform sampler2D uScene;
uniform sampler2D uDetail;
uniform vec4 uWeights;
uniform vec4 uKernel[4];
uniform float uTime;
out vec4 fragColor;
void main() {
  vec4 acc = vec4(0.0);
  for (int i = 0; i < 4; ++i) acc += texture(uScene, vUv + uKernel[i].xy) * uKernel[i].z;
  vec4 d = texture(uDetail, vUv * 2.0 + vec2(0.0, uTime));
  vec3 c = acc.rgb * uWeights.x + d.rgb * uWeights.y;
  fragColor = vec4(c, uWeights.z + uWeights.w * d.a);
}
)";

class CoreScene final : public Scene {
 public:
  void setup(int size) override {
    size_ = size;
    off_ = std::max(16, size / 2);

    // Programs. progScene's attributes are bound before linking; progDyn's are queried.
    progScene_ = buildProgram("scene", kSceneVs, kSceneFs, {{0, "aPos"}, {1, "aColor"}, {2, "aUv"}});
    progDyn_ = buildProgram("dyn", kDynVs, kDynFs);
    progPost_ = buildProgram("post", kPostVs, kPostFs, {{0, "aPos"}, {2, "aUv"}});

    uMvp_ = uniformLoc(progScene_, "uMvp");
    uPhase_ = uniformLoc(progScene_, "uPhase");
    GLint uTexA = uniformLoc(progScene_, "uTexA");
    GLint uTexB = uniformLoc(progScene_, "uTexB");
    GLint uTint = uniformLoc(progScene_, "uTint");
    GLint uPalette = uniformLoc(progScene_, "uPalette");
    GLint uXform = uniformLoc(progDyn_, "uXform");
    GLint uColor = uniformLoc(progDyn_, "uColor");
    uFade_ = uniformLoc(progDyn_, "uFade");
    GLint uUvXform = uniformLoc(progPost_, "uUvXform");
    GLint uScene = uniformLoc(progPost_, "uScene");
    GLint uDetail = uniformLoc(progPost_, "uDetail");
    GLint uWeights = uniformLoc(progPost_, "uWeights");
    GLint uKernel = uniformLoc(progPost_, "uKernel");
    uTime_ = uniformLoc(progPost_, "uTime");

    // Set-once uniforms.
    glUseProgram(progScene_);
    glUniform1i(uTexA, 0);
    glUniform1i(uTexB, 1);
    glUniform4f(uTint, 1.0f, 0.92f, 0.85f, 1.0f);
    const float palette[12] = {0.9f, 0.2f, 0.1f, 1.0f, 0.1f, 0.8f, 0.3f, 1.0f, 0.2f, 0.3f, 0.95f, 1.0f};
    glUniform4fv(uPalette, 3, palette);
    glUseProgram(progDyn_);
    Mat4 xform = translate(0.05f, -0.05f, -0.25f) * scale(0.8f, 0.8f, 1.0f);
    glUniformMatrix4fv(uXform, 1, GL_FALSE, xform.m.data());
    glUniform4f(uColor, 1.0f, 0.95f, 0.9f, 0.9f);
    glUseProgram(progPost_);
    glUniform1i(uScene, 1);
    glUniform1i(uDetail, 0);
    glUniform4f(uWeights, 0.9f, 0.18f, 0.75f, 0.2f);
    Mat4 uvXform = translate(0.5f, 0.5f, 0.0f) * rotateZ(0.12) * scale(0.92f, 0.92f, 1.0f) * translate(-0.5f, -0.5f, 0.0f);
    glUniformMatrix4fv(uUvXform, 1, GL_FALSE, uvXform.m.data());
    const float texel = 1.0f / static_cast<float>(off_);
    const float kernel[16] = {-texel, 0.0f, 0.3f, 0.0f, texel, 0.0f, 0.3f, 0.0f,
                              0.0f, -texel, 0.2f, 0.0f, 0.0f, texel, 0.2f, 0.0f};
    glUniform4fv(uKernel, 4, kernel);

    // Textures. Unpack alignment 1 is set once and stays: texB and the per-frame sub-image
    // uploads are RGB rows of odd width.
    glPixelStorei(GL_UNPACK_ALIGNMENT, 1);

    glActiveTexture(GL_TEXTURE0);
    glGenTextures(1, &texA_);
    glBindTexture(GL_TEXTURE_2D, texA_);
    {
      constexpr int n = 32;
      std::vector<unsigned char> px(n * n * 4);
      for (int y = 0; y < n; ++y)
        for (int x = 0; x < n; ++x) {
          unsigned char* p = &px[static_cast<size_t>((y * n + x) * 4)];
          bool check = ((x / 4) + (y / 4)) & 1;
          p[0] = static_cast<unsigned char>(x * 8);
          p[1] = static_cast<unsigned char>(y * 8);
          p[2] = check ? 230 : 40;
          p[3] = 255;
        }
      glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, n, n, 0, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
    }
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR_MIPMAP_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_REPEAT);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_REPEAT);
    glGenerateMipmap(GL_TEXTURE_2D);

    glActiveTexture(GL_TEXTURE1);
    glGenTextures(1, &texB_);
    glBindTexture(GL_TEXTURE_2D, texB_);
    {
      constexpr int w = 13, h = 10;  // RGB, 39-byte rows: needs GL_UNPACK_ALIGNMENT 1
      std::vector<unsigned char> px(w * h * 3 + 16);
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          unsigned char* p = &px[static_cast<size_t>((y * w + x) * 3)];
          p[0] = static_cast<unsigned char>((x * 19 + y * 7) % 256);
          p[1] = static_cast<unsigned char>(255 - x * 18);
          p[2] = static_cast<unsigned char>(y * 25);
        }
      glTexImage2D(GL_TEXTURE_2D, 0, GL_RGB8, w, h, 0, GL_RGB, GL_UNSIGNED_BYTE, px.data());
    }
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_MIRRORED_REPEAT);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_MIRRORED_REPEAT);

    // Offscreen color texture (pass 1 target, pass 2 source) + its FBO.
    glGenTextures(1, &offTex_);
    glBindTexture(GL_TEXTURE_2D, offTex_);
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, off_, off_, 0, GL_RGBA, GL_UNSIGNED_BYTE, nullptr);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);

    glGenFramebuffers(1, &offFbo_);
    glBindFramebuffer(GL_FRAMEBUFFER, offFbo_);
    glFramebufferTexture2D(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_TEXTURE_2D, offTex_, 0);
    GLuint offDepth = 0;
    glGenRenderbuffers(1, &offDepth);
    glBindRenderbuffer(GL_RENDERBUFFER, offDepth);
    glRenderbufferStorage(GL_RENDERBUFFER, GL_DEPTH_COMPONENT24, off_, off_);
    glFramebufferRenderbuffer(GL_FRAMEBUFFER, GL_DEPTH_ATTACHMENT, GL_RENDERBUFFER, offDepth);
    checkFbo(GL_FRAMEBUFFER, "offscreen");

    // Dynamic detail texture: RGBA 16x16, a 5x7 RGB sub-region rewritten every frame. It is
    // left bound to unit 0, where every frame expects to find it.
    glActiveTexture(GL_TEXTURE0);
    glGenTextures(1, &texDyn_);
    glBindTexture(GL_TEXTURE_2D, texDyn_);
    {
      constexpr int n = 16;
      std::vector<unsigned char> px(n * n * 4);
      for (int y = 0; y < n; ++y)
        for (int x = 0; x < n; ++x) {
          unsigned char* p = &px[static_cast<size_t>((y * n + x) * 4)];
          p[0] = static_cast<unsigned char>(x * 16);
          p[1] = static_cast<unsigned char>(128);
          p[2] = static_cast<unsigned char>(y * 16);
          p[3] = static_cast<unsigned char>(((x ^ y) & 1) ? 255 : 96);
        }
      glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, n, n, 0, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
    }
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);

    // Static geometry: a cube (24 vertices, 36 indices) and a full-screen quad (4 vertices,
    // 6 indices) in one VBO/EBO; layout pos3 color3 uv2. All triangles are clockwise seen
    // from their front side (glFrontFace(GL_CW) below).
    {
      std::vector<float> v;
      std::vector<GLushort> idx;
      struct Face {
        float n[3], u[3], w[3];
      };
      const Face faces[6] = {
          {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},  {{-1, 0, 0}, {0, 0, 1}, {0, 1, 0}}, {{0, 1, 0}, {0, 0, 1}, {1, 0, 0}},
          {{0, -1, 0}, {1, 0, 0}, {0, 0, 1}}, {{0, 0, 1}, {1, 0, 0}, {0, 1, 0}},  {{0, 0, -1}, {0, 1, 0}, {1, 0, 0}},
      };
      const float corner[4][2] = {{-1, -1}, {1, -1}, {1, 1}, {-1, 1}};  // CCW seen from outside
      for (int f = 0; f < 6; ++f) {
        GLushort base = static_cast<GLushort>(v.size() / 8);
        for (int c = 0; c < 4; ++c) {
          for (int k = 0; k < 3; ++k)
            v.push_back(faces[f].n[k] + corner[c][0] * faces[f].u[k] + corner[c][1] * faces[f].w[k]);
          v.push_back(0.35f + 0.1f * static_cast<float>(f));
          v.push_back(c == 0 || c == 3 ? 1.0f : 0.55f);
          v.push_back(c < 2 ? 0.9f : 0.45f);
          v.push_back(corner[c][0] * 0.5f + 0.5f);
          v.push_back(corner[c][1] * 0.5f + 0.5f);
        }
        for (GLushort i : {0, 2, 1, 0, 3, 2}) idx.push_back(static_cast<GLushort>(base + i));
      }
      GLushort base = static_cast<GLushort>(v.size() / 8);
      for (int c = 0; c < 4; ++c) {
        const float q[8] = {corner[c][0], corner[c][1], 0.0f, 1, 1, 1, corner[c][0] * 0.5f + 0.5f,
                            corner[c][1] * 0.5f + 0.5f};
        v.insert(v.end(), q, q + 8);
      }
      for (GLushort i : {0, 2, 1, 0, 3, 2}) idx.push_back(static_cast<GLushort>(base + i));

      glGenVertexArrays(1, &staticVao_);
      glBindVertexArray(staticVao_);
      GLuint vbo = 0, ebo = 0;
      glGenBuffers(1, &vbo);
      glBindBuffer(GL_ARRAY_BUFFER, vbo);
      glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(v.size() * sizeof(float)), v.data(), GL_STATIC_DRAW);
      glGenBuffers(1, &ebo);
      glBindBuffer(GL_ELEMENT_ARRAY_BUFFER, ebo);
      glBufferData(GL_ELEMENT_ARRAY_BUFFER, static_cast<GLsizeiptr>(idx.size() * sizeof(GLushort)), idx.data(),
                   GL_STATIC_DRAW);
      constexpr GLsizei stride = 8 * sizeof(float);
      glVertexAttribPointer(0, 3, GL_FLOAT, GL_FALSE, stride, bufferOffset(0));
      glVertexAttribPointer(1, 3, GL_FLOAT, GL_FALSE, stride, bufferOffset(3 * sizeof(float)));
      glVertexAttribPointer(2, 2, GL_FLOAT, GL_FALSE, stride, bufferOffset(6 * sizeof(float)));
      glEnableVertexAttribArray(0);
      glEnableVertexAttribArray(1);
      glEnableVertexAttribArray(2);
    }

    // Dynamic geometry: 12 triangles (pos2 color4), rewritten each frame with glBufferSubData.
    dynPos_ = attribLoc(progDyn_, "aPos");
    dynColor_ = attribLoc(progDyn_, "aColor");
    glGenVertexArrays(1, &dynVao_);
    glBindVertexArray(dynVao_);
    glGenBuffers(1, &dynVbo_);
    glBindBuffer(GL_ARRAY_BUFFER, dynVbo_);
    glBufferData(GL_ARRAY_BUFFER, kDynBytes, nullptr, GL_DYNAMIC_DRAW);
    glVertexAttribPointer(dynPos_, 2, GL_FLOAT, GL_FALSE, 6 * sizeof(float), bufferOffset(0));
    glVertexAttribPointer(dynColor_, 4, GL_FLOAT, GL_FALSE, 6 * sizeof(float), bufferOffset(2 * sizeof(float)));
    glEnableVertexAttribArray(dynPos_);
    glEnableVertexAttribArray(dynColor_);

    // VAO for the per-frame temporary buffer: arrays enabled once, pointers set per frame.
    glGenVertexArrays(1, &tmpVao_);
    glBindVertexArray(tmpVao_);
    glEnableVertexAttribArray(dynPos_);
    glEnableVertexAttribArray(dynColor_);

    // Output FBO (color renderbuffer + depth renderbuffer).
    outFbo_ = createOutputFbo(size_);

    // Fixed-function state, set once.
    glEnable(GL_DEPTH_TEST);
    glDepthFunc(GL_LEQUAL);
    glEnable(GL_BLEND);
    glBlendFunc(GL_SRC_ALPHA, GL_ONE_MINUS_SRC_ALPHA);
    glEnable(GL_CULL_FACE);
    glCullFace(GL_BACK);
    glFrontFace(GL_CW);
    glClearColor(0.08f, 0.1f, 0.16f, 1.0f);  // the output FBO's clear color; pass 1 uses glClearBufferfv

    // Leave the state a frame leaves: texDyn on unit 0, unit 1 active, pass 2 bound.
    glActiveTexture(GL_TEXTURE1);
    glUseProgram(progPost_);
    glBindVertexArray(staticVao_);
    glBindBuffer(GL_ARRAY_BUFFER, 0);
  }

  void render(uint64_t frame) override {
    const uint32_t f32 = static_cast<uint32_t>(frame % 1000003);

    // Dynamic texture: one of 8 overlapping 5x7 rectangles, RGB rows of 15 bytes (alignment 1
    // from setup). texDyn is still bound to unit 0 from the previous frame (or setup).
    {
      std::array<unsigned char, 5 * 7 * 3 + 16> px{};
      for (size_t i = 0; i < 5 * 7 * 3; ++i) px[i] = static_cast<unsigned char>(hash32(f32 * 131u + static_cast<uint32_t>(i)) >> 24);
      const int x = static_cast<int>(frame % 4) * 3 + 1;
      const int y = static_cast<int>((frame / 4) % 2) * 7 + 1;
      glActiveTexture(GL_TEXTURE0);
      glTexSubImage2D(GL_TEXTURE_2D, 0, x, y, 5, 7, GL_RGB, GL_UNSIGNED_BYTE, px.data());
    }

    // ---- pass 1: cube + dynamic star into the offscreen FBO ----
    glBindFramebuffer(GL_FRAMEBUFFER, offFbo_);
    glViewport(0, 0, off_, off_);
    const float c = static_cast<float>(cycle(frame, 64));
    const float clear[4] = {0.15f + 0.3f * c, 0.12f, 0.3f - 0.2f * c, 1.0f};
    const float one = 1.0f;
    glClearBufferfv(GL_COLOR, 0, clear);
    glClearBufferfv(GL_DEPTH, 0, &one);

    glBindTexture(GL_TEXTURE_2D, texA_);  // unit 0
    glActiveTexture(GL_TEXTURE1);
    glBindTexture(GL_TEXTURE_2D, texB_);
    glUseProgram(progScene_);
    const double ay = 2.0 * kPi * cycle(frame, 90);
    const double ax = 2.0 * kPi * cycle(frame, 150) + 0.4;
    Mat4 mvp = perspective(0.9, 1.0, 0.5, 20.0) * translate(0.0f, 0.0f, -3.6f) * rotateY(ay) * rotateX(ax);
    glUniformMatrix4fv(uMvp_, 1, GL_FALSE, mvp.m.data());
    glUniform1f(uPhase_, static_cast<float>(cycle(frame, 40)));
    glBindVertexArray(staticVao_);
    glDrawElements(GL_TRIANGLES, 36, GL_UNSIGNED_SHORT, bufferOffset(0));

    {
      std::array<float, kDynFloats> v{};
      const double rot = -2.0 * kPi * cycle(frame, 120);
      const double step = 2.0 * kPi / 12.0;
      size_t k = 0;
      auto put = [&](double px, double py, float r, float g, float b, float a) {
        const float vals[6] = {static_cast<float>(px), static_cast<float>(py), r, g, b, a};
        for (float val : vals) v[k++] = val;
      };
      for (int i = 0; i < 12; ++i) {
        const double a0 = rot + step * i;
        const double a1 = a0 + step * 0.55;
        const double r = (i & 1) ? 0.95 : 0.7;
        const float t = static_cast<float>(i) / 11.0f;
        put(0.0, 0.0, 1.0f, 1.0f, 1.0f, 0.95f);  // clockwise: center, a1, a0
        put(r * std::cos(a1), r * std::sin(a1), t, 0.4f, 1.0f - t, 0.85f);
        put(r * std::cos(a0), r * std::sin(a0), 1.0f - t, t, 0.3f, 0.85f);
      }
      glBindBuffer(GL_ARRAY_BUFFER, dynVbo_);
      glBufferSubData(GL_ARRAY_BUFFER, 0, kDynBytes, v.data());
    }
    glUseProgram(progDyn_);
    glUniform1f(uFade_, 0.7f + 0.3f * static_cast<float>(cycle(frame, 30)));
    glBindVertexArray(dynVao_);
    glDrawArrays(GL_TRIANGLES, 0, 36);

    // ---- pass 2: into the output FBO ----
    glBindFramebuffer(GL_FRAMEBUFFER, outFbo_);
    glViewport(0, 0, size_, size_);
    glClear(GL_COLOR_BUFFER_BIT | GL_DEPTH_BUFFER_BIT);  // set-once clear color

    // Temporary buffer: generated, filled, drawn and deleted within the frame.
    {
      const float len = 1.8f * static_cast<float>(cycle(frame, 40)) + 0.05f;
      const float x0 = -0.92f, x1 = x0 + len, y0 = -0.94f, y1 = -0.74f;
      const float tri[6 * 6] = {
          // clockwise: (x0,y0) (x0,y1) (x1,y1) and (x0,y0) (x1,y1) (x1,y0)
          x0, y0, 1.0f, 0.8f, 0.2f, 1.0f, x0, y1, 1.0f, 0.8f, 0.2f, 1.0f, x1, y1, 0.2f, 1.0f, 0.4f, 1.0f,
          x0, y0, 1.0f, 0.8f, 0.2f, 1.0f, x1, y1, 0.2f, 1.0f, 0.4f, 1.0f, x1, y0, 0.2f, 1.0f, 0.4f, 1.0f,
      };
      GLuint tmp = 0;
      glGenBuffers(1, &tmp);
      glBindBuffer(GL_ARRAY_BUFFER, tmp);
      glBufferData(GL_ARRAY_BUFFER, sizeof tri, tri, GL_STREAM_DRAW);
      glBindVertexArray(tmpVao_);
      glVertexAttribPointer(dynPos_, 2, GL_FLOAT, GL_FALSE, 6 * sizeof(float), bufferOffset(0));
      glVertexAttribPointer(dynColor_, 4, GL_FLOAT, GL_FALSE, 6 * sizeof(float), bufferOffset(2 * sizeof(float)));
      glUniform1f(uFade_, 1.0f);  // progDyn is still current
      glDrawArrays(GL_TRIANGLES, 0, 6);
      glDeleteBuffers(1, &tmp);
    }

    glActiveTexture(GL_TEXTURE0);
    glBindTexture(GL_TEXTURE_2D, texDyn_);
    glActiveTexture(GL_TEXTURE1);
    glBindTexture(GL_TEXTURE_2D, offTex_);
    glUseProgram(progPost_);
    glUniform1f(uTime_, static_cast<float>(cycle(frame, 50)));
    glBindVertexArray(staticVao_);
    glDrawElements(GL_TRIANGLES, 6, GL_UNSIGNED_SHORT, bufferOffset(36 * sizeof(GLushort)));
    // Left bound: progPost, staticVao, outFbo, texture unit 1 active.
  }

  GLuint outputFbo() const override { return outFbo_; }

 private:
  static constexpr size_t kDynFloats = 12 * 3 * 6;
  static constexpr GLsizeiptr kDynBytes = kDynFloats * sizeof(float);

  int size_ = 0, off_ = 0;
  GLuint progScene_ = 0, progDyn_ = 0, progPost_ = 0;
  GLint uMvp_ = -1, uPhase_ = -1, uFade_ = -1, uTime_ = -1;
  GLuint dynPos_ = 0, dynColor_ = 0;
  GLuint texA_ = 0, texB_ = 0, texDyn_ = 0, offTex_ = 0;
  GLuint offFbo_ = 0, outFbo_ = 0;
  GLuint staticVao_ = 0, dynVao_ = 0, tmpVao_ = 0, dynVbo_ = 0;
};

// ---- fixed: OpenGL 1.5 fixed function in a compatibility context ----------------------
//
// Set once: projection (glFrustum) with GL_MODELVIEW left as the matrix mode, viewport,
// lighting (GL_LIGHT0 position/diffuse/ambient, material ambient + emission, color
// material for diffuse), GL_NORMALIZE (the cube's normals have length 2 and the quad is
// scaled), smooth shading, depth test, culling, the texture (contents, parameters,
// GL_MODULATE, GL_TEXTURE_2D enabled, binding), linear fog whose coordinate comes from the
// current fog coordinate (glFogCoordf once: a piece of "current" vertex state that no draw
// ever changes), the VBO and the client-state arrays pointing into it (GL_ARRAY_BUFFER is
// unbound afterwards), the clear color and the output FBO binding.
//
// Per frame: modelview (glLoadIdentity/glTranslatef/glRotatef), a glPushMatrix/glPopMatrix
// pair around an immediate-mode quad, the current color before the VBO draw.

class FixedScene final : public Scene {
 public:
  void setup(int size) override {
    const char* ver = glStr(GL_VERSION);
    if (std::atoi(ver) < 3) die(1, "fixed scene needs framebuffer objects (GL 3.0), context is '%s'", ver);

    outFbo_ = createOutputFbo(size);  // stays bound for the whole run
    glViewport(0, 0, size, size);
    glClearColor(0.12f, 0.1f, 0.18f, 1.0f);

    glMatrixMode(GL_PROJECTION);
    glLoadIdentity();
    glFrustum(-0.6, 0.6, -0.6, 0.6, 1.5, 30.0);
    glMatrixMode(GL_MODELVIEW);
    glLoadIdentity();

    glEnable(GL_DEPTH_TEST);
    glEnable(GL_CULL_FACE);
    glShadeModel(GL_SMOOTH);
    glEnable(GL_NORMALIZE);

    // Lighting; the light position is given with an identity modelview (eye space).
    glEnable(GL_LIGHTING);
    glEnable(GL_LIGHT0);
    const GLfloat lightPos[4] = {0.4f, 0.7f, 1.0f, 0.0f};
    const GLfloat lightDiffuse[4] = {0.9f, 0.85f, 0.8f, 1.0f};
    const GLfloat lightAmbient[4] = {0.3f, 0.3f, 0.35f, 1.0f};
    glLightfv(GL_LIGHT0, GL_POSITION, lightPos);
    glLightfv(GL_LIGHT0, GL_DIFFUSE, lightDiffuse);
    glLightfv(GL_LIGHT0, GL_AMBIENT, lightAmbient);
    const GLfloat matAmbient[4] = {0.7f, 0.6f, 0.5f, 1.0f};
    const GLfloat matEmission[4] = {0.05f, 0.02f, 0.08f, 1.0f};
    glMaterialfv(GL_FRONT_AND_BACK, GL_AMBIENT, matAmbient);
    glMaterialfv(GL_FRONT_AND_BACK, GL_EMISSION, matEmission);
    glColorMaterial(GL_FRONT_AND_BACK, GL_DIFFUSE);
    glEnable(GL_COLOR_MATERIAL);

    // Fog from the current fog coordinate, which is set here once and never again.
    glEnable(GL_FOG);
    glFogi(GL_FOG_MODE, GL_LINEAR);
    glFogf(GL_FOG_START, 0.0f);
    glFogf(GL_FOG_END, 1.0f);
    const GLfloat fogColor[4] = {0.45f, 0.3f, 0.6f, 1.0f};
    glFogfv(GL_FOG_COLOR, fogColor);
    glFogi(GL_FOG_COORD_SRC, GL_FOG_COORD);
    glFogCoordf(0.3f);

    // Texture.
    glGenTextures(1, &tex_);
    glBindTexture(GL_TEXTURE_2D, tex_);
    {
      constexpr int n = 64;
      std::vector<unsigned char> px(n * n * 4);
      for (int y = 0; y < n; ++y)
        for (int x = 0; x < n; ++x) {
          unsigned char* p = &px[static_cast<size_t>((y * n + x) * 4)];
          bool check = ((x / 8) + (y / 8)) & 1;
          p[0] = check ? 255 : static_cast<unsigned char>(120 + x);
          p[1] = check ? 230 : static_cast<unsigned char>(60 + y * 2);
          p[2] = check ? 200 : 70;
          p[3] = 255;
        }
      glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, n, n, 0, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
    }
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_LINEAR);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_REPEAT);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_REPEAT);
    glTexEnvi(GL_TEXTURE_ENV, GL_TEXTURE_ENV_MODE, GL_MODULATE);
    glEnable(GL_TEXTURE_2D);

    // Cube VBO: 36 vertices, interleaved pos3 normal3 uv2, counter-clockwise from outside.
    // The normals have length 2 (GL_NORMALIZE fixes them).
    {
      std::vector<float> v;
      struct Face {
        float n[3], u[3], w[3];
      };
      const Face faces[6] = {
          {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},  {{-1, 0, 0}, {0, 0, 1}, {0, 1, 0}}, {{0, 1, 0}, {0, 0, 1}, {1, 0, 0}},
          {{0, -1, 0}, {1, 0, 0}, {0, 0, 1}}, {{0, 0, 1}, {1, 0, 0}, {0, 1, 0}},  {{0, 0, -1}, {0, 1, 0}, {1, 0, 0}},
      };
      const float corner[4][2] = {{-1, -1}, {1, -1}, {1, 1}, {-1, 1}};
      for (const Face& face : faces)
        for (int c : {0, 1, 2, 0, 2, 3}) {
          for (int k = 0; k < 3; ++k) v.push_back(face.n[k] + corner[c][0] * face.u[k] + corner[c][1] * face.w[k]);
          for (int k = 0; k < 3; ++k) v.push_back(2.0f * face.n[k]);
          v.push_back(corner[c][0] * 0.5f + 0.5f);
          v.push_back(corner[c][1] * 0.5f + 0.5f);
        }
      glGenBuffers(1, &vbo_);
      glBindBuffer(GL_ARRAY_BUFFER, vbo_);
      glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(v.size() * sizeof(float)), v.data(), GL_STATIC_DRAW);
      constexpr GLsizei stride = 8 * sizeof(float);
      glVertexPointer(3, GL_FLOAT, stride, bufferOffset(0));
      glNormalPointer(GL_FLOAT, stride, bufferOffset(3 * sizeof(float)));
      glTexCoordPointer(2, GL_FLOAT, stride, bufferOffset(6 * sizeof(float)));
      glEnableClientState(GL_VERTEX_ARRAY);
      glEnableClientState(GL_NORMAL_ARRAY);
      glEnableClientState(GL_TEXTURE_COORD_ARRAY);
      glBindBuffer(GL_ARRAY_BUFFER, 0);  // the pointers keep referring to vbo_
    }
    glColor4f(1.0f, 1.0f, 1.0f, 1.0f);
  }

  void render(uint64_t frame) override {
    glClear(GL_COLOR_BUFFER_BIT | GL_DEPTH_BUFFER_BIT);
    const float a = static_cast<float>(360.0 * cycle(frame, 120));
    glLoadIdentity();
    glTranslatef(0.0f, 0.0f, -6.0f);

    glPushMatrix();
    glTranslatef(0.0f, -1.2f, 1.2f);
    glRotatef(-2.0f * a, 0.2f, 0.3f, 1.0f);
    glScalef(1.8f, 0.9f, 1.0f);
    glBegin(GL_QUADS);
    glColor3f(1.0f, 0.4f, 0.3f);
    glNormal3f(0.3f, 0.4f, 0.9f);
    glTexCoord2f(0.0f, 0.0f);
    glVertex3f(-0.5f, -0.5f, 0.0f);
    glColor3f(0.3f, 1.0f, 0.4f);
    glNormal3f(0.3f, 0.4f, 0.9f);
    glTexCoord2f(2.0f, 0.0f);
    glVertex3f(0.5f, -0.5f, 0.0f);
    glColor3f(0.3f, 0.4f, 1.0f);
    glNormal3f(-0.2f, 0.1f, 0.9f);
    glTexCoord2f(2.0f, 2.0f);
    glVertex3f(0.5f, 0.5f, 0.0f);
    glColor3f(1.0f, 1.0f, 0.4f);
    glNormal3f(-0.2f, 0.1f, 0.9f);
    glTexCoord2f(0.0f, 2.0f);
    glVertex3f(-0.5f, 0.5f, 0.0f);
    glEnd();
    glPopMatrix();

    glRotatef(a, 0.3f, 1.0f, 0.2f);
    const float t = static_cast<float>(cycle(frame, 45));
    glColor4f(0.5f + 0.5f * t, 0.85f, 1.0f - 0.5f * t, 1.0f);
    glDrawArrays(GL_TRIANGLES, 0, 36);
  }

  GLuint outputFbo() const override { return outFbo_; }

 private:
  GLuint outFbo_ = 0, tex_ = 0, vbo_ = 0;
};

// ---- heavy: many small state-changing draws per frame (3.3 core) -----------------------

constexpr const char* kHeavyVs = R"(#version 330 core
in vec2 aPos;
in vec2 aUv;
uniform vec2 uOffset;
out vec2 vUv;
void main() {
  gl_Position = vec4(aPos * 0.045 + uOffset, 0.0, 1.0);
  vUv = aUv;
}
)";

constexpr const char* kHeavyFs = R"(#version 330 core
in vec2 vUv;
uniform vec4 uColor;
uniform sampler2D uTex;
out vec4 fragColor;
void main() {
  fragColor = uColor * texture(uTex, vUv);
}
)";

class HeavyScene final : public Scene {
 public:
  static constexpr int kDraws = 2000;

  void setup(int size) override {
    outFbo_ = createOutputFbo(size);
    glViewport(0, 0, size, size);
    glClearColor(0.05f, 0.05f, 0.08f, 1.0f);

    prog_ = buildProgram("heavy", kHeavyVs, kHeavyFs);
    uColor_ = uniformLoc(prog_, "uColor");
    uOffset_ = uniformLoc(prog_, "uOffset");
    GLint uTex = uniformLoc(prog_, "uTex");
    glUseProgram(prog_);
    glUniform1i(uTex, 0);

    glGenTextures(2, tex_);
    for (int t = 0; t < 2; ++t) {
      glBindTexture(GL_TEXTURE_2D, tex_[t]);
      unsigned char px[8 * 8 * 4];
      for (int i = 0; i < 64; ++i) {
        bool on = (((i % 8) / (2 + t)) + ((i / 8) / (2 + t))) & 1;
        px[i * 4 + 0] = on ? 255 : static_cast<unsigned char>(60 + 90 * t);
        px[i * 4 + 1] = on ? static_cast<unsigned char>(200 - 100 * t) : 90;
        px[i * 4 + 2] = on ? 120 : static_cast<unsigned char>(255 - 100 * t);
        px[i * 4 + 3] = 255;
      }
      glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA8, 8, 8, 0, GL_RGBA, GL_UNSIGNED_BYTE, px);
      glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
      glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    }

    const float tri[12] = {-1.0f, -1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 1.0f, 0.0f, 0.0f, 1.0f, 0.5f, 1.0f};
    glGenVertexArrays(1, &vao_);
    glBindVertexArray(vao_);
    GLuint vbo = 0;
    glGenBuffers(1, &vbo);
    glBindBuffer(GL_ARRAY_BUFFER, vbo);
    glBufferData(GL_ARRAY_BUFFER, sizeof tri, tri, GL_STATIC_DRAW);
    GLuint aPos = attribLoc(prog_, "aPos"), aUv = attribLoc(prog_, "aUv");
    glVertexAttribPointer(aPos, 2, GL_FLOAT, GL_FALSE, 4 * sizeof(float), bufferOffset(0));
    glVertexAttribPointer(aUv, 2, GL_FLOAT, GL_FALSE, 4 * sizeof(float), bufferOffset(2 * sizeof(float)));
    glEnableVertexAttribArray(aPos);
    glEnableVertexAttribArray(aUv);
  }

  void render(uint64_t frame) override {
    glClear(GL_COLOR_BUFFER_BIT);
    const uint32_t shift = static_cast<uint32_t>(frame % 50);
    const uint32_t tint = static_cast<uint32_t>(frame % 256);
    for (uint32_t i = 0; i < kDraws; ++i) {
      const uint32_t col = (i + shift) % 50, row = i / 50;  // 50 x 40 grid
      const uint32_t h = hash32(i * 256u + tint);
      glUniform4f(uColor_, static_cast<float>(h & 255) / 255.0f, static_cast<float>((h >> 8) & 255) / 255.0f,
                  static_cast<float>((h >> 16) & 255) / 255.0f, 1.0f);
      glUniform2f(uOffset_, -0.98f + 0.04f * static_cast<float>(col), -0.97f + 0.05f * static_cast<float>(row));
      glBindTexture(GL_TEXTURE_2D, tex_[i & 1]);
      glDrawArrays(GL_TRIANGLES, 0, 3);
    }
  }

  GLuint outputFbo() const override { return outFbo_; }

 private:
  GLuint outFbo_ = 0, prog_ = 0, vao_ = 0;
  GLuint tex_[2] = {0, 0};
  GLint uColor_ = -1, uOffset_ = -1;
};

// ---------------------------------------------------------------------------------------
// Run

uint32_t crc32(const unsigned char* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFU;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

size_t distinctColors(const std::vector<unsigned char>& px) {
  std::unordered_set<uint32_t> seen;
  for (size_t i = 0; i + 3 < px.size(); i += 4) {
    uint32_t v;
    std::memcpy(&v, &px[i], 4);
    seen.insert(v);
  }
  return seen.size();
}

volatile sig_atomic_t gStop = 0;

extern "C" void onStopSignal(int) { gStop = 1; }

void installStopHandlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parseArgs(argc, argv);
  const VmckptApi api = lookupApi();
  if (opt.restartAt >= 0 && (!api.checkpoint || !api.restart))
    die(2, "--restart-at needs vmckpt_gl_checkpoint and vmckpt_gl_restart, which were not found: "
           "run with LD_PRELOAD=libvmckpt-gl.so");
  if (!opt.logBytesAt.empty() && (!api.logBytes || !api.logEntries))
    die(2, "--log-bytes-at needs vmckpt_gl_log_bytes and vmckpt_gl_log_entries, which were not found: "
           "run with LD_PRELOAD=libvmckpt-gl.so");

  Egl egl = initEgl(opt.scene);

  std::unique_ptr<Scene> scene;
  switch (opt.scene) {
    case SceneKind::Core: scene = std::make_unique<CoreScene>(); break;
    case SceneKind::Fixed: scene = std::make_unique<FixedScene>(); break;
    case SceneKind::Heavy: scene = std::make_unique<HeavyScene>(); break;
  }
  if (opt.stats) say("version: %s", glStr(GL_VERSION));
  if (opt.printRenderer) say("renderer: %s", glStr(GL_RENDERER));
  scene->setup(opt.size);
  checkGl("after setup");

  FILE* out = nullptr;
  if (!opt.out.empty()) {
    out = std::fopen(opt.out.c_str(), "wb");
    if (!out) die(1, "cannot open %s: %s", opt.out.c_str(), std::strerror(errno));
  }
  if (opt.loop) installStopHandlers();

  const size_t frameBytes = static_cast<size_t>(opt.size) * static_cast<size_t>(opt.size) * 4;
  std::vector<unsigned char> pixels(frameBytes);
  size_t nextLog = 0;
  uint64_t rendered = 0;
  const auto t0 = std::chrono::steady_clock::now();

  for (uint64_t frame = 0; opt.loop ? !gStop : frame < opt.frames; ++frame) {
    if (opt.restartAt >= 0 && frame == static_cast<uint64_t>(opt.restartAt)) {
      if (api.checkpoint() != 0) die(1, "vmckpt_gl_checkpoint failed before frame %llu", static_cast<unsigned long long>(frame));
      if (api.restart(opt.haveRestartDriver ? opt.restartDriver.c_str() : nullptr) != 0)
        die(1, "vmckpt_gl_restart(%s) failed before frame %llu", opt.haveRestartDriver ? opt.restartDriver.c_str() : "NULL",
            static_cast<unsigned long long>(frame));
      checkGl("after restart");
      if (opt.printRenderer) say("renderer: %s", glStr(GL_RENDERER));
    }

    scene->render(frame);
    ++rendered;

    const bool printCrc = opt.crcEvery != 0 && frame % opt.crcEvery == 0;
    if (out || opt.stats || printCrc) {
      glBindFramebuffer(GL_READ_FRAMEBUFFER, scene->outputFbo());
      glReadPixels(0, 0, opt.size, opt.size, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());
      if (out && std::fwrite(pixels.data(), 1, frameBytes, out) != frameBytes)
        die(1, "writing %s: %s", opt.out.c_str(), std::strerror(errno));
      if (opt.stats)
        say("frame=%llu colors=%zu", static_cast<unsigned long long>(frame), distinctColors(pixels));
      if (printCrc)
        say("frame=%llu crc=%08x", static_cast<unsigned long long>(frame), crc32(pixels.data(), frameBytes));
    }

    if (api.frameBoundary) {
      int r = api.frameBoundary();
      if (r < 0) die(1, "vmckpt_gl_frame_boundary failed after frame %llu", static_cast<unsigned long long>(frame));
      if (r == 1) {
        checkGl("after a restart at a frame boundary");
        say("restarted at frame=%llu renderer=%s", static_cast<unsigned long long>(frame + 1), glStr(GL_RENDERER));
        if (opt.printRenderer) say("renderer: %s", glStr(GL_RENDERER));
      }
    }

    while (nextLog < opt.logBytesAt.size() && opt.logBytesAt[nextLog] == rendered) {
      say("log_bytes frames=%llu bytes=%zu entries=%zu", static_cast<unsigned long long>(rendered), api.logBytes(),
          api.logEntries());
      ++nextLog;
    }
  }

  glFinish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  checkGl("at the end of the run");
  if (out && std::fclose(out) != 0) die(1, "closing %s: %s", opt.out.c_str(), std::strerror(errno));
  if (opt.fps) say("fps: %.2f", secs > 0.0 ? static_cast<double>(rendered) / secs : 0.0);
  shutdownEgl(egl);
  return 0;
}
