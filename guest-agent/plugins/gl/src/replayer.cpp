#include "replayer.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "gl_generated.hpp"

namespace vmckpt::gl {

namespace {

std::string hex(GLenum v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04x", v);
  return buf;
}

}  // namespace

Captured captureQueried(bool compat) {
  Captured c;
  if (!compat) return c;
  c.valid = true;
  real.GetIntegerv(GL_MATRIX_MODE, &c.matrixMode);
  real.GetIntegerv(GL_ACTIVE_TEXTURE, &c.activeUnit);
  GLint units = 1;
  real.GetIntegerv(GL_MAX_TEXTURE_COORDS, &units);
  units = std::clamp(units, 1, 8);
  auto readStack = [&](GLenum mode, GLenum depthQuery, GLenum matrixQuery, GLint unit) {
    Captured::Stack s;
    s.mode = mode;
    s.unit = unit;
    real.MatrixMode(mode);
    GLint depth = 1;
    real.GetIntegerv(depthQuery, &depth);
    s.levels.resize(static_cast<std::size_t>(std::max(depth, 1)));
    // Read from the top down, popping; then push the levels back.
    for (GLint i = depth - 1; i >= 0; --i) {
      real.GetFloatv(matrixQuery, s.levels[static_cast<std::size_t>(i)].data());
      if (i > 0) real.PopMatrix();
    }
    for (GLint i = 1; i < depth; ++i) {
      real.PushMatrix();
      real.LoadMatrixf(s.levels[static_cast<std::size_t>(i)].data());
    }
    c.stacks.push_back(std::move(s));
  };
  readStack(GL_MODELVIEW, GL_MODELVIEW_STACK_DEPTH, GL_MODELVIEW_MATRIX, 0);
  readStack(GL_PROJECTION, GL_PROJECTION_STACK_DEPTH, GL_PROJECTION_MATRIX, 0);
  c.texCoords.resize(static_cast<std::size_t>(units));
  for (GLint u = 0; u < units; ++u) {
    real.ActiveTexture(GL_TEXTURE0 + static_cast<GLenum>(u));
    readStack(GL_TEXTURE, GL_TEXTURE_STACK_DEPTH, GL_TEXTURE_MATRIX, u);
    real.GetFloatv(GL_CURRENT_TEXTURE_COORDS, c.texCoords[static_cast<std::size_t>(u)].data());
  }
  real.ActiveTexture(static_cast<GLenum>(c.activeUnit));
  real.MatrixMode(static_cast<GLenum>(c.matrixMode));
  real.GetFloatv(GL_CURRENT_COLOR, c.color.data());
  real.GetFloatv(GL_CURRENT_NORMAL, c.normal.data());
  real.GetFloatv(GL_CURRENT_FOG_COORD, &c.fogCoord);
  return c;
}

bool Replayer::run(const Captured& captured, std::string& error) {
  error_.clear();
  debug_ = std::getenv("VMCKPT_GL_DEBUG") != nullptr;
  names_.setRemapped();
  real.ActiveTexture(GL_TEXTURE0);
  if (rec_.compat()) real.ClientActiveTexture(GL_TEXTURE0);
  createObjects();
  checkError("creating objects");

  const std::vector<const Entry*> order = rec_.entriesInOrder();
  for (const Entry* e : order)
    if (e->key.ns != Ns::None) replayObjectEntry(*e);
  checkError("replaying object state");
  resetTouched();

  for (const Entry* e : order)
    if (e->key.ns == Ns::None) replayGlobalEntry(*e);
  checkError("replaying context state");

  restoreCaptured(captured);
  real.ActiveTexture(GL_TEXTURE0 + rec_.activeUnit());
  if (rec_.compat()) real.ClientActiveTexture(GL_TEXTURE0 + rec_.clientUnit());
  deleteZombies();
  checkError("finishing the replay");
  error = error_;
  return error_.empty();
}

void Replayer::createObjects() {
  for (int i = 1; i < kNsCount; ++i) {
    const Ns ns = static_cast<Ns>(i);
    std::vector<std::pair<std::uint64_t, GLuint>> objs;
    const auto& all = names_.all(ns);
    for (GLuint v = 1; v < all.size(); ++v)
      if (all[v].live || all[v].zombie) objs.emplace_back(all[v].seq, v);
    std::sort(objs.begin(), objs.end());
    for (const auto& [seq, v] : objs) {
      const Names::Object& o = all[v];
      GLuint r = 0;
      switch (ns) {
        case Ns::Buffer: real.GenBuffers(1, &r); break;
        case Ns::Texture: real.GenTextures(1, &r); break;
        case Ns::Framebuffer: real.GenFramebuffers(1, &r); break;
        case Ns::Renderbuffer: real.GenRenderbuffers(1, &r); break;
        case Ns::VertexArray: real.GenVertexArrays(1, &r); break;
        case Ns::Sampler: real.GenSamplers(1, &r); break;
        case Ns::Query: real.GenQueries(1, &r); break;
        case Ns::Program: r = o.shaderType ? real.CreateShader(o.shaderType) : real.CreateProgram(); break;
        default: break;
      }
      const GLenum first = o.firstTarget;
      names_.rebind(ns, v, r);
      // GL creates the object (and fixes its type) at its first bind.
      if (first != 0 || ns == Ns::VertexArray || ns == Ns::Renderbuffer) bindObject(ns, first, v);
      if (debug_) trace("create", ns, v, first);
    }
  }
  resetTouched();
}

void Replayer::bindObject(Ns ns, GLenum target, GLuint virt, GLuint unit) {
  const GLuint r = names_.toReal(ns, virt);
  switch (ns) {
    case Ns::Buffer: real.BindBuffer(target, r); break;
    case Ns::Texture:
      if (unit != 0) real.ActiveTexture(GL_TEXTURE0 + unit);
      real.BindTexture(target, r);
      if (unit != 0) real.ActiveTexture(GL_TEXTURE0);
      break;
    case Ns::Framebuffer: real.BindFramebuffer(target, r); break;
    case Ns::Renderbuffer: real.BindRenderbuffer(GL_RENDERBUFFER, r); return;
    case Ns::VertexArray: real.BindVertexArray(r); target = 0; break;
    case Ns::Program: real.UseProgram(r); target = 0; break;
    case Ns::Sampler: real.BindSampler(target, r); break;
    default: return;
  }
  if (std::find(touched_.begin(), touched_.end(), std::make_pair(ns, target)) == touched_.end())
    touched_.emplace_back(ns, target);
}

void Replayer::setUnpack(const Unpack& u) {
  auto set = [](GLenum pname, GLint want, GLint& have) {
    if (want != have) real.PixelStorei(pname, want);
    have = want;
  };
  set(GL_UNPACK_ALIGNMENT, u.alignment, unpack_.alignment);
  set(GL_UNPACK_ROW_LENGTH, u.rowLength, unpack_.rowLength);
  set(GL_UNPACK_IMAGE_HEIGHT, u.imageHeight, unpack_.imageHeight);
  set(GL_UNPACK_SKIP_PIXELS, u.skipPixels, unpack_.skipPixels);
  set(GL_UNPACK_SKIP_ROWS, u.skipRows, unpack_.skipRows);
  set(GL_UNPACK_SKIP_IMAGES, u.skipImages, unpack_.skipImages);
  set(GL_UNPACK_SWAP_BYTES, u.swapBytes, unpack_.swapBytes);
  set(GL_UNPACK_LSB_FIRST, u.lsbFirst, unpack_.lsbFirst);
}

void Replayer::prepare(const Entry& e) {
  if (e.mode == ObjMode::Bound || e.mode == ObjMode::Current) bindObject(e.ns, e.bindTarget, e.obj);
  bool pboDep = false;
  for (int i = 0; i < e.ndeps; ++i) {
    bindObject(e.deps[i].ns, e.deps[i].target, e.deps[i].obj);
    pboDep |= e.deps[i].target == GL_PIXEL_UNPACK_BUFFER;
  }
  if (e.hasUnpack) {
    if (!pboDep) bindObject(Ns::Buffer, GL_PIXEL_UNPACK_BUFFER, 0);
    setUnpack(e.unpack);
  }
  if (e.unitKind == Unit::Client) real.ClientActiveTexture(GL_TEXTURE0 + e.unit);
  if (e.unitKind == Unit::Active) real.ActiveTexture(GL_TEXTURE0 + e.unit);
  if (e.eye) {
    real.MatrixMode(GL_MODELVIEW);
    real.LoadMatrixf(e.eyeMatrix.data());
  }
}

void Replayer::replayObjectEntry(const Entry& e) {
  prepare(e);
  if (e.key.group == Group::Bind) {  // a VAO's element-array buffer
    real.BindBuffer(GL_ELEMENT_ARRAY_BUFFER, names_.toReal(Ns::Buffer, decode<GLuint>(e.a[1])));
  } else if (e.cmd == Cmd::ShaderSource) {
    const GLchar* src = reinterpret_cast<const GLchar*>(e.data.data());
    const GLint len = static_cast<GLint>(e.data.size());
    real.ShaderSource(names_.toReal(Ns::Program, e.obj), 1, &src, &len);
  } else if (e.cmd == Cmd::LinkProgram) {
    real.LinkProgram(names_.toReal(Ns::Program, e.obj));
    relocate(e.obj);
  } else {
    replayCall(e, *this);
  }
  if (e.unitKind == Unit::Client) real.ClientActiveTexture(GL_TEXTURE0);
  if (e.unitKind == Unit::Active) real.ActiveTexture(GL_TEXTURE0);
  if (debug_) trace(commandName(e.cmd), e.ns, e.obj, e.bindTarget);
}

// Uniform locations of a program just linked in the new context, by uniform name.
void Replayer::relocate(GLuint program) {
  const GLuint r = names_.toReal(Ns::Program, program);
  for (const auto& [loc, name] : names_.locations(program))
    names_.setRealLocation(program, loc, real.GetUniformLocation(r, name.c_str()));
}

void Replayer::replayGlobalEntry(const Entry& e) {
  if (e.key.group == Group::Bind || e.key.group == Group::BindIndexed) {
    const Ns ns = static_cast<Ns>(e.key.sel[0]);
    const GLenum target = decode<GLenum>(e.a[0]);
    const GLuint r = names_.toReal(ns, decode<GLuint>(e.a[1]));
    if (e.cmd == Cmd::BindBufferBase) {
      real.BindBufferBase(target, decode<GLuint>(e.a[2]), r);
    } else if (e.cmd == Cmd::BindBufferRange) {
      real.BindBufferRange(target, decode<GLuint>(e.a[2]), r, decode<GLintptr>(e.a[3]),
                           decode<GLsizeiptr>(e.a[4]));
    } else if (ns == Ns::Texture) {
      real.ActiveTexture(GL_TEXTURE0 + e.unit);
      real.BindTexture(target, r);
    } else if (ns == Ns::Sampler) {
      real.BindSampler(target, r);
    } else {
      switch (ns) {
        case Ns::Buffer: real.BindBuffer(target, r); break;
        case Ns::Framebuffer: real.BindFramebuffer(target, r); break;
        case Ns::Renderbuffer: real.BindRenderbuffer(target, r); break;
        case Ns::VertexArray: real.BindVertexArray(r); break;
        case Ns::Program: real.UseProgram(r); break;
        default: break;
      }
    }
    return;
  }
  prepare(e);
  replayCall(e, *this);
  if (debug_) trace(commandName(e.cmd), Ns::None, 0, 0);
}

// VMCKPT_GL_DEBUG: every replayed call, and the GL error it raised.
void Replayer::trace(const char* what, Ns ns, GLuint obj, GLenum target) {
  const GLenum err = real.GetError();
  std::fprintf(stderr, "vmckpt-gl: replay %s ns=%d obj=%u target=0x%x%s%s\n", what,
               static_cast<int>(ns), obj, target, err ? " error " : "", err ? hex(err).c_str() : "");
  if (err && error_.empty()) error_ = "GL error " + hex(err) + " in " + what;
}

void Replayer::resetTouched() {
  for (const auto& [ns, target] : touched_) {
    switch (ns) {
      case Ns::Buffer: real.BindBuffer(target, 0); break;
      case Ns::Texture: real.BindTexture(target, 0); break;
      case Ns::Framebuffer: real.BindFramebuffer(target, 0); break;
      case Ns::VertexArray: real.BindVertexArray(0); break;
      case Ns::Program: real.UseProgram(0); break;
      case Ns::Sampler: real.BindSampler(target, 0); break;
      default: break;
    }
  }
  touched_.clear();
  real.BindRenderbuffer(GL_RENDERBUFFER, 0);
  setUnpack(Unpack{});
  real.ActiveTexture(GL_TEXTURE0);
}

void Replayer::restoreCaptured(const Captured& c) {
  if (!c.valid) return;
  for (const Captured::Stack& s : c.stacks) {
    if (s.mode == GL_TEXTURE) real.ActiveTexture(GL_TEXTURE0 + static_cast<GLenum>(s.unit));
    real.MatrixMode(s.mode);
    for (std::size_t i = 0; i < s.levels.size(); ++i) {
      if (i > 0) real.PushMatrix();
      real.LoadMatrixf(s.levels[i].data());
    }
  }
  for (std::size_t u = 0; u < c.texCoords.size(); ++u)
    real.MultiTexCoord4fv(GL_TEXTURE0 + static_cast<GLenum>(u), c.texCoords[u].data());
  real.Color4fv(c.color.data());
  real.Normal3fv(c.normal.data());
  real.FogCoordf(c.fogCoord);
  real.MatrixMode(static_cast<GLenum>(c.matrixMode));
}

void Replayer::deleteZombies() {
  for (int i = 1; i < kNsCount; ++i) {
    const Ns ns = static_cast<Ns>(i);
    const auto& all = names_.all(ns);
    for (GLuint v = 1; v < all.size(); ++v) {
      if (!all[v].zombie) continue;
      GLuint r = all[v].real;
      switch (ns) {
        case Ns::Buffer: real.DeleteBuffers(1, &r); break;
        case Ns::Texture: real.DeleteTextures(1, &r); break;
        case Ns::Renderbuffer: real.DeleteRenderbuffers(1, &r); break;
        case Ns::Program:
          if (all[v].shaderType) real.DeleteShader(r); else real.DeleteProgram(r);
          break;
        default: break;
      }
    }
  }
}

void Replayer::notReplayable(const Entry& e) {
  if (error_.empty()) error_ = std::string(commandName(e.cmd)) + " cannot be replayed";
}

void Replayer::checkError(const char* where) {
  const GLenum err = real.GetError();
  if (err != GL_NO_ERROR && error_.empty()) error_ = "GL error " + hex(err) + " while " + where;
  while (real.GetError() != GL_NO_ERROR) {
  }
}

}  // namespace vmckpt::gl
