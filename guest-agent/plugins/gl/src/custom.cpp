// Wrappers written by hand: calls whose recording needs more than gl_rules.py can say
// (string arrays, bindings, mapped buffers, uniform locations, sync objects).
#include <cstdio>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "gl_generated.hpp"
#include "recorder.hpp"
#include "state.hpp"

using namespace vmckpt::gl;

namespace {

#define REAL(cmd) \
  if (!real.cmd) resolve(Cmd::cmd)

void bindCommon(Cmd cmd, Ns ns, GLenum target, GLuint virt) { onBind(cmd, ns, target, virt); }

// Buffers mapped for writing: their new contents are recorded when they are unmapped.
struct Mapping {
  GLuint buffer = 0;
  GLintptr offset = 0;
  GLsizeiptr length = 0;
  void* pointer = nullptr;
};
std::unordered_map<GLenum, Mapping>& mappings() {
  static auto* m = new std::unordered_map<GLenum, Mapping>;
  return *m;
}

// Sync objects die with their context: those of an earlier context count as signalled.
std::unordered_set<GLsync>& liveSyncs() {
  static auto* s = new std::unordered_set<GLsync>;
  return *s;
}
bool staleSync(GLsync sync) { return state().restarts > 0 && !liveSyncs().count(sync); }

Ns bindingNamespace(GLenum pname) {
  switch (pname) {
    case GL_ARRAY_BUFFER_BINDING: case GL_ELEMENT_ARRAY_BUFFER_BINDING:
    case GL_PIXEL_PACK_BUFFER_BINDING: case GL_PIXEL_UNPACK_BUFFER_BINDING:
    case GL_UNIFORM_BUFFER_BINDING: case GL_COPY_READ_BUFFER_BINDING:
    case GL_COPY_WRITE_BUFFER_BINDING: case GL_TRANSFORM_FEEDBACK_BUFFER_BINDING:
      return Ns::Buffer;
    case GL_TEXTURE_BINDING_1D: case GL_TEXTURE_BINDING_2D: case GL_TEXTURE_BINDING_3D:
    case GL_TEXTURE_BINDING_CUBE_MAP: case GL_TEXTURE_BINDING_RECTANGLE:
    case GL_TEXTURE_BINDING_1D_ARRAY: case GL_TEXTURE_BINDING_2D_ARRAY:
    case GL_TEXTURE_BINDING_BUFFER: case GL_TEXTURE_BINDING_2D_MULTISAMPLE:
    case GL_TEXTURE_BINDING_2D_MULTISAMPLE_ARRAY:
      return Ns::Texture;
    case GL_DRAW_FRAMEBUFFER_BINDING: case GL_READ_FRAMEBUFFER_BINDING:
      return Ns::Framebuffer;
    case GL_RENDERBUFFER_BINDING: return Ns::Renderbuffer;
    case GL_VERTEX_ARRAY_BINDING: return Ns::VertexArray;
    case GL_CURRENT_PROGRAM: return Ns::Program;
    case GL_SAMPLER_BINDING: return Ns::Sampler;
    default: return Ns::None;
  }
}

void recordBufferWrite(GLenum target, const Mapping& m) {
  Recorder* r = recorder();
  if (!r || !m.pointer || m.length <= 0) return;
  Entry& e = r->begin(Cmd::BufferSubData, 4);
  e.a[0] = encode(target);
  e.a[1] = encode(m.offset);
  e.a[2] = encode(m.length);
  e.a[3] = r->copy(e, m.pointer, static_cast<std::size_t>(m.length));
  r->setKey(e, Group::BufferSubData, {encode(m.offset), encode(m.length)}, Unit::None, false);
  r->onNamedObject(e, Ns::Buffer, m.buffer);
  e.mode = ObjMode::Bound;
  e.bindTarget = target;
  r->commit(e);
}

}  // namespace

extern "C" {

VMCKPT_GL_EXPORT void glShaderSource(GLuint shader, GLsizei count, const GLchar* const* string,
                                     const GLint* length) {
  REAL(ShaderSource);
  real.ShaderSource(names().toReal(Ns::Program, shader), count, string, length);
  Recorder* r = recorder();
  if (!r || !string) return;
  Entry& e = r->begin(Cmd::ShaderSource, 2);
  e.a[0] = shader;
  for (GLsizei i = 0; i < count; ++i) {
    if (!string[i]) continue;
    const std::size_t n = (length && length[i] >= 0) ? static_cast<std::size_t>(length[i])
                                                     : std::strlen(string[i]);
    r->copy(e, string[i], n);
  }
  r->setKey(e, Group::ShaderSource, {}, Unit::None, false);
  r->onNamedObject(e, Ns::Program, shader);
  r->commit(e);
}

VMCKPT_GL_EXPORT void glLinkProgram(GLuint program) {
  REAL(LinkProgram);
  real.LinkProgram(names().toReal(Ns::Program, program));
  Recorder* r = recorder();
  if (!r) return;
  // Linking resets the program's uniforms: those set before it are no longer state.
  r->clearGroup(Ns::Program, program, Group::Uniform);
  Entry& e = r->begin(Cmd::LinkProgram, 1);
  e.a[0] = program;
  r->setKey(e, Group::LinkProgram, {}, Unit::None, false);
  r->onNamedObject(e, Ns::Program, program);
  r->commit(e);
}

VMCKPT_GL_EXPORT GLint glGetUniformLocation(GLuint program, const GLchar* name) {
  REAL(GetUniformLocation);
  const GLint realLoc = real.GetUniformLocation(names().toReal(Ns::Program, program), name);
  if (!t_recordedCurrent || realLoc < 0 || !name) return realLoc;
  Names& n = names();
  GLint virt = realLoc;
  if (n.remapped()) {
    // After a restart the application's locations are the first context's: hand out the
    // one it had for this name, or a fresh one that cannot collide.
    virt = n.locationOf(program, name);
    if (virt < 0) {
      virt = 4096;
      while (n.locationName(program, virt)) ++virt;
    }
    n.setRealLocation(program, virt, realLoc);
  }
  n.noteLocation(program, virt, name);
  return virt;
}

VMCKPT_GL_EXPORT void glGetIntegerv(GLenum pname, GLint* data) {
  REAL(GetIntegerv);
  real.GetIntegerv(pname, data);
  if (!t_recordedCurrent || !data) return;
  const Ns ns = bindingNamespace(pname);
  if (ns != Ns::None) data[0] = static_cast<GLint>(names().toVirtual(ns, static_cast<GLuint>(data[0])));
}

VMCKPT_GL_EXPORT void glBindBuffer(GLenum target, GLuint buffer) {
  REAL(BindBuffer);
  real.BindBuffer(target, toRealBind(Ns::Buffer, target, buffer));
  bindCommon(Cmd::BindBuffer, Ns::Buffer, target, buffer);
}

VMCKPT_GL_EXPORT void glBindTexture(GLenum target, GLuint texture) {
  REAL(BindTexture);
  real.BindTexture(target, toRealBind(Ns::Texture, target, texture));
  bindCommon(Cmd::BindTexture, Ns::Texture, target, texture);
}

VMCKPT_GL_EXPORT void glBindFramebuffer(GLenum target, GLuint framebuffer) {
  REAL(BindFramebuffer);
  real.BindFramebuffer(target, toRealBind(Ns::Framebuffer, target, framebuffer));
  bindCommon(Cmd::BindFramebuffer, Ns::Framebuffer, target, framebuffer);
}

VMCKPT_GL_EXPORT void glBindBufferBase(GLenum target, GLuint index, GLuint buffer) {
  REAL(BindBufferBase);
  real.BindBufferBase(target, index, toRealBind(Ns::Buffer, target, buffer));
  if (Recorder* r = recorder()) r->bound(Cmd::BindBufferBase, Ns::Buffer, target, buffer, {index});
}

VMCKPT_GL_EXPORT void glBindBufferRange(GLenum target, GLuint index, GLuint buffer,
                                        GLintptr offset, GLsizeiptr size) {
  REAL(BindBufferRange);
  real.BindBufferRange(target, index, toRealBind(Ns::Buffer, target, buffer), offset, size);
  if (Recorder* r = recorder())
    r->bound(Cmd::BindBufferRange, Ns::Buffer, target, buffer,
             {index, encode(offset), encode(size)});
}

VMCKPT_GL_EXPORT void glActiveTexture(GLenum texture) {
  REAL(ActiveTexture);
  real.ActiveTexture(texture);
  if (t_recordedCurrent) state().rec.setActiveUnit(texture - GL_TEXTURE0);
}

VMCKPT_GL_EXPORT void glClientActiveTexture(GLenum texture) {
  REAL(ClientActiveTexture);
  real.ClientActiveTexture(texture);
  if (t_recordedCurrent) state().rec.setClientUnit(texture - GL_TEXTURE0);
}

VMCKPT_GL_EXPORT void* glMapBufferRange(GLenum target, GLintptr offset, GLsizeiptr length,
                                        GLbitfield access) {
  REAL(MapBufferRange);
  void* p = real.MapBufferRange(target, offset, length, access);
  if (recorder() && p && (access & GL_MAP_WRITE_BIT))
    mappings()[target] = Mapping{state().rec.binding(Ns::Buffer, target), offset, length, p};
  return p;
}

VMCKPT_GL_EXPORT void* glMapBuffer(GLenum target, GLenum access) {
  REAL(MapBuffer);
  REAL(GetBufferParameteriv);
  void* p = real.MapBuffer(target, access);
  if (recorder() && p && access != GL_READ_ONLY) {
    GLint size = 0;
    real.GetBufferParameteriv(target, GL_BUFFER_SIZE, &size);
    mappings()[target] = Mapping{state().rec.binding(Ns::Buffer, target), 0, size, p};
  }
  return p;
}

VMCKPT_GL_EXPORT void glFlushMappedBufferRange(GLenum target, GLintptr offset, GLsizeiptr length) {
  REAL(FlushMappedBufferRange);
  real.FlushMappedBufferRange(target, offset, length);
}

VMCKPT_GL_EXPORT GLboolean glUnmapBuffer(GLenum target) {
  REAL(UnmapBuffer);
  auto it = mappings().find(target);
  if (it != mappings().end()) {
    recordBufferWrite(target, it->second);  // read while the mapping is still valid
    mappings().erase(it);
  }
  return real.UnmapBuffer(target);
}

VMCKPT_GL_EXPORT GLsync glFenceSync(GLenum condition, GLbitfield flags) {
  REAL(FenceSync);
  GLsync s = real.FenceSync(condition, flags);
  if (s) liveSyncs().insert(s);
  return s;
}

VMCKPT_GL_EXPORT void glDeleteSync(GLsync sync) {
  REAL(DeleteSync);
  if (staleSync(sync)) return;
  liveSyncs().erase(sync);
  real.DeleteSync(sync);
}

VMCKPT_GL_EXPORT GLboolean glIsSync(GLsync sync) {
  REAL(IsSync);
  if (staleSync(sync)) return GL_TRUE;
  return real.IsSync(sync);
}

VMCKPT_GL_EXPORT GLenum glClientWaitSync(GLsync sync, GLbitfield flags, GLuint64 timeout) {
  REAL(ClientWaitSync);
  if (staleSync(sync)) return GL_ALREADY_SIGNALED;
  return real.ClientWaitSync(sync, flags, timeout);
}

VMCKPT_GL_EXPORT void glWaitSync(GLsync sync, GLbitfield flags, GLuint64 timeout) {
  REAL(WaitSync);
  if (staleSync(sync)) return;
  real.WaitSync(sync, flags, timeout);
}

VMCKPT_GL_EXPORT void glGetSynciv(GLsync sync, GLenum pname, GLsizei count, GLsizei* length,
                                  GLint* values) {
  REAL(GetSynciv);
  if (staleSync(sync)) {
    if (length) *length = count > 0 ? 1 : 0;
    if (values && count > 0) {
      switch (pname) {
        case GL_OBJECT_TYPE: values[0] = GL_SYNC_FENCE; break;
        case GL_SYNC_STATUS: values[0] = GL_SIGNALED; break;
        case GL_SYNC_CONDITION: values[0] = GL_SYNC_GPU_COMMANDS_COMPLETE; break;
        default: values[0] = 0; break;
      }
    }
    return;
  }
  real.GetSynciv(sync, pname, count, length, values);
}

VMCKPT_GL_EXPORT void glTransformFeedbackVaryings(GLuint program, GLsizei count,
                                                  const GLchar* const* varyings,
                                                  GLenum bufferMode) {
  REAL(TransformFeedbackVaryings);
  real.TransformFeedbackVaryings(names().toReal(Ns::Program, program), count, varyings, bufferMode);
  onUnsupported("glTransformFeedbackVaryings");
}

}  // extern "C"

namespace vmckpt::gl {

// Syncs from before a restart are stale; called by the restart.
void forgetSyncs() { liveSyncs().clear(); }

std::size_t pnameCount(GLenum pname) {
  switch (pname) {
    case GL_AMBIENT: case GL_DIFFUSE: case GL_SPECULAR: case GL_EMISSION: case GL_POSITION:
    case GL_AMBIENT_AND_DIFFUSE: case GL_TEXTURE_ENV_COLOR: case GL_FOG_COLOR:
    case GL_LIGHT_MODEL_AMBIENT: case GL_TEXTURE_BORDER_COLOR: case GL_OBJECT_PLANE:
    case GL_EYE_PLANE: case GL_TEXTURE_SWIZZLE_RGBA:
      return 4;
    case GL_SPOT_DIRECTION: case GL_POINT_DISTANCE_ATTENUATION: case GL_COLOR_INDEXES:
      return 3;
    default:
      return 1;
  }
}

}  // namespace vmckpt::gl
