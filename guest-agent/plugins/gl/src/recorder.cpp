#include "recorder.hpp"

#include <algorithm>
#include <cstdio>

#include "state.hpp"

namespace vmckpt::gl {

namespace {

std::uint64_t bindingKey(Ns ns, GLenum target, GLuint unit) {
  return (static_cast<std::uint64_t>(ns) << 56) | (static_cast<std::uint64_t>(unit) << 32) | target;
}

bool isProxy(GLenum target) {
  switch (target) {
    case GL_PROXY_TEXTURE_1D: case GL_PROXY_TEXTURE_2D: case GL_PROXY_TEXTURE_3D:
    case GL_PROXY_TEXTURE_CUBE_MAP: case GL_PROXY_TEXTURE_1D_ARRAY:
    case GL_PROXY_TEXTURE_2D_ARRAY: case GL_PROXY_TEXTURE_RECTANGLE:
    case GL_PROXY_TEXTURE_2D_MULTISAMPLE: case GL_PROXY_TEXTURE_2D_MULTISAMPLE_ARRAY:
      return true;
    default:
      return false;
  }
}

int formatComponents(GLenum format) {
  switch (format) {
    case GL_RG: case GL_RG_INTEGER: case GL_LUMINANCE_ALPHA: case GL_DEPTH_STENCIL:
      return 2;
    case GL_RGB: case GL_BGR: case GL_RGB_INTEGER: case GL_BGR_INTEGER:
      return 3;
    case GL_RGBA: case GL_BGRA: case GL_RGBA_INTEGER: case GL_BGRA_INTEGER:
      return 4;
    default:
      return 1;
  }
}

// Bytes of one component, or (negated) of one whole pixel for packed types.
int typeSize(GLenum type) {
  switch (type) {
    case GL_UNSIGNED_BYTE: case GL_BYTE: return 1;
    case GL_UNSIGNED_SHORT: case GL_SHORT: case GL_HALF_FLOAT: return 2;
    case GL_UNSIGNED_INT: case GL_INT: case GL_FLOAT: return 4;
    case GL_UNSIGNED_BYTE_3_3_2: case GL_UNSIGNED_BYTE_2_3_3_REV: return -1;
    case GL_UNSIGNED_SHORT_5_6_5: case GL_UNSIGNED_SHORT_5_6_5_REV:
    case GL_UNSIGNED_SHORT_4_4_4_4: case GL_UNSIGNED_SHORT_4_4_4_4_REV:
    case GL_UNSIGNED_SHORT_5_5_5_1: case GL_UNSIGNED_SHORT_1_5_5_5_REV: return -2;
    case GL_FLOAT_32_UNSIGNED_INT_24_8_REV: return -8;
    default: return -4;  // the 32-bit packed types
  }
}

}  // namespace

Entry& Recorder::begin(Cmd cmd, int nargs) {
  Entry& e = scratch_;
  std::vector<std::byte> keep = std::move(e.data);
  e = Entry{};
  e.data = std::move(keep);
  e.data.clear();
  e.cmd = cmd;
  e.nargs = static_cast<std::uint8_t>(nargs);
  nclears_ = 0;
  return e;
}

std::uint64_t Recorder::copy(Entry& e, const void* p, std::size_t bytes) {
  if (!p) return kNullPointer;
  const std::size_t off = e.data.size();
  e.data.resize(off + bytes);
  if (bytes) std::memcpy(e.data.data() + off, p, bytes);
  return off;
}

std::uint64_t Recorder::upload(Entry& e, const void* p, std::size_t bytes) {
  const GLuint pbo = binding(Ns::Buffer, GL_PIXEL_UNPACK_BUFFER);
  if (pbo != 0) {
    addDep(e, Ns::Buffer, GL_PIXEL_UNPACK_BUFFER);
    e.hasUnpack = true;
    e.unpack = unpack_;
    return encode(p) | (1ull << 62);  // an offset into the buffer, replayed as is
  }
  e.hasUnpack = true;
  e.unpack = unpack_;
  return copy(e, p, bytes);
}

std::size_t Recorder::pixelBytes(GLenum format, GLenum type, GLsizei w, GLsizei h, GLsizei d) const {
  if (w <= 0 || h <= 0 || d <= 0) return 0;
  const int ts = typeSize(type);
  const std::size_t n = ts < 0 ? 1 : static_cast<std::size_t>(formatComponents(format));
  const std::size_t s = static_cast<std::size_t>(ts < 0 ? -ts : ts);
  const std::size_t a = static_cast<std::size_t>(std::max(unpack_.alignment, 1));
  const std::size_t l = static_cast<std::size_t>(unpack_.rowLength > 0 ? unpack_.rowLength : w);
  const std::size_t row = s >= a ? n * l * s : a * ((s * n * l + a - 1) / a);
  const std::size_t rows = static_cast<std::size_t>(unpack_.imageHeight > 0 ? unpack_.imageHeight : h);
  const std::size_t image = row * rows;
  return static_cast<std::size_t>(unpack_.skipImages + d - 1) * image +
         static_cast<std::size_t>(unpack_.skipRows + h - 1) * row +
         static_cast<std::size_t>(unpack_.skipPixels + w) * n * s;
}

void Recorder::setKey(Entry& e, Group group, std::initializer_list<std::uint64_t> sel, Unit unit,
                      bool eye) {
  e.key.group = group;
  e.key.n = 0;
  for (std::uint64_t v : sel) e.key.sel[e.key.n++] = v;
  if (unit != Unit::None) {
    e.unitKind = unit;
    e.unit = unit == Unit::Active ? activeUnit_ : clientUnit_;
    e.key.sel[e.key.n++] = e.unit;
  }
  if (eye && compat_) {
    e.eye = true;
    real.GetFloatv(GL_MODELVIEW_MATRIX, e.eyeMatrix.data());
  }
}

GLenum Recorder::textureBindingTarget(GLenum target) const {
  if (target >= GL_TEXTURE_CUBE_MAP_POSITIVE_X && target <= GL_TEXTURE_CUBE_MAP_NEGATIVE_Z)
    return GL_TEXTURE_CUBE_MAP;
  return target;
}

void Recorder::onBoundObject(Entry& e, Ns ns, GLenum target) {
  e.ns = ns;
  e.mode = target == 0 ? ObjMode::Current : ObjMode::Bound;
  if (ns == Ns::Texture) {
    if (isProxy(target)) e.mode = ObjMode::None;  // queries, not objects: not recorded
    target = textureBindingTarget(target);
  } else if (ns == Ns::Framebuffer && target == GL_FRAMEBUFFER) {
    target = GL_DRAW_FRAMEBUFFER;
  }
  e.bindTarget = target;
  e.obj = binding(ns, target);
  e.key.ns = ns;
  e.key.obj = e.obj;
}

void Recorder::onNamedObject(Entry& e, Ns ns, GLuint virt) {
  e.ns = ns;
  e.mode = ObjMode::Named;
  e.obj = virt;
  e.key.ns = ns;
  e.key.obj = virt;
}

void Recorder::addDep(Entry& e, Ns ns, GLenum target) {
  if (e.ndeps < e.deps.size()) e.deps[e.ndeps++] = Dep{ns, target, binding(ns, target)};
}

void Recorder::addRef(Entry& e, Ns ns, GLuint virt) {
  if (virt != 0 && e.nrefs < e.refs.size()) e.refs[e.nrefs++] = Ref{ns, virt};
}

void Recorder::addClear(Entry&, Group group, int n) {
  if (nclears_ < static_cast<int>(clears_.size())) clears_[nclears_++] = {group, n};
}

void Recorder::setPixelStore(GLenum pname, GLint v) {
  switch (pname) {
    case GL_UNPACK_ALIGNMENT: unpack_.alignment = v; break;
    case GL_UNPACK_ROW_LENGTH: unpack_.rowLength = v; break;
    case GL_UNPACK_IMAGE_HEIGHT: unpack_.imageHeight = v; break;
    case GL_UNPACK_SKIP_PIXELS: unpack_.skipPixels = v; break;
    case GL_UNPACK_SKIP_ROWS: unpack_.skipRows = v; break;
    case GL_UNPACK_SKIP_IMAGES: unpack_.skipImages = v; break;
    case GL_UNPACK_SWAP_BYTES: unpack_.swapBytes = v; break;
    case GL_UNPACK_LSB_FIRST: unpack_.lsbFirst = v; break;
    default: break;
  }
}

void Recorder::commit(Entry& e) {
  if (e.cmd == Cmd::PixelStorei) setPixelStore(decode<GLenum>(e.a[0]), decode<GLint>(e.a[1]));
  if (e.cmd == Cmd::PixelStoref)
    setPixelStore(decode<GLenum>(e.a[0]), static_cast<GLint>(decode<GLfloat>(e.a[1])));
  // Calls that change no object: the default buffer/renderbuffer/program (a GL error),
  // the default VAO of a core context (an error too), proxy texture queries.
  if (e.key.ns != Ns::None) {
    if (e.mode == ObjMode::None) return;
    if (e.obj == 0 && (e.ns == Ns::Buffer || e.ns == Ns::Renderbuffer || e.ns == Ns::Program ||
                       e.ns == Ns::Sampler || (e.ns == Ns::VertexArray && !compat_)))
      return;
  }
  e.seq = ++seq_;
  const Key key = e.key;
  auto it = log_.find(key);
  Entry* slot;
  if (it != log_.end()) {
    releaseRefs(it->second);
    std::vector<std::byte> keep = std::move(it->second.data);
    it->second = std::move(e);
    e.data = std::move(keep);
    slot = &it->second;
  } else {
    slot = &log_.emplace(key, std::move(e)).first->second;
    e.data = {};
    if (key.ns != Ns::None) byObject_[objId(key.ns, key.obj)].insert(key);
  }
  addRefs(*slot);
  for (int c = 0; c < nclears_; ++c) {
    auto obj = byObject_.find(objId(key.ns, key.obj));
    if (obj == byObject_.end()) break;
    std::vector<Key> doomed;
    for (const Key& k : obj->second) {
      if (k.group != clears_[c].first || k == key) continue;
      bool match = true;
      for (int i = 0; i < clears_[c].second && match; ++i) match = k.sel[i] == key.sel[i];
      if (match) doomed.push_back(k);
    }
    for (const Key& k : doomed) erase(k);
  }
  nclears_ = 0;
}

void Recorder::erase(const Key& k) {
  auto it = log_.find(k);
  if (it == log_.end()) return;
  Entry gone = std::move(it->second);
  log_.erase(it);
  if (k.ns != Ns::None) {
    auto obj = byObject_.find(objId(k.ns, k.obj));
    if (obj != byObject_.end()) obj->second.erase(k);
  }
  releaseRefs(gone);
}

void Recorder::addRefs(const Entry& e) {
  for (int i = 0; i < e.ndeps; ++i)
    if (e.deps[i].obj) ++refCount_[objId(e.deps[i].ns, e.deps[i].obj)];
  for (int i = 0; i < e.nrefs; ++i) ++refCount_[objId(e.refs[i].ns, e.refs[i].obj)];
}

void Recorder::releaseRefs(const Entry& e) {
  for (int i = 0; i < e.ndeps; ++i)
    if (e.deps[i].obj) release(e.deps[i].ns, e.deps[i].obj);
  for (int i = 0; i < e.nrefs; ++i) release(e.refs[i].ns, e.refs[i].obj);
}

void Recorder::release(Ns ns, GLuint obj) {
  auto it = refCount_.find(objId(ns, obj));
  if (it == refCount_.end()) return;
  if (--it->second > 0) return;
  refCount_.erase(it);
  if (zombies_.count(objId(ns, obj))) dropObject(ns, obj);
}

void Recorder::dropObject(Ns ns, GLuint obj) {
  const std::uint64_t id = objId(ns, obj);
  zombies_.erase(id);
  auto it = byObject_.find(id);
  if (it != byObject_.end()) {
    std::vector<Key> keys(it->second.begin(), it->second.end());
    for (const Key& k : keys) erase(k);
    byObject_.erase(id);
  }
  names_.remove(ns, obj);
}

void Recorder::deleted(Ns ns, GLuint virt) {
  if (virt == 0) return;
  // GL unbinds a deleted object from the context's binding points; except a program,
  // which stays in use until another one is (its binding entry holds a reference).
  std::vector<Key> unbound;
  for (auto& [bk, v] : bindings_) {
    if (ns == Ns::Program) break;
    if (v != virt || static_cast<Ns>(bk >> 56) != ns) continue;
    v = 0;
  }
  for (auto& [k, e] : log_)
    if (ns != Ns::Program && k.ns == Ns::None &&
        (k.group == Group::Bind || k.group == Group::BindIndexed) &&
        static_cast<Ns>(e.key.sel[0]) == ns && decode<GLuint>(e.a[1]) == virt)
      unbound.push_back(k);
  for (const Key& k : unbound) erase(k);
  if (refCount_.count(objId(ns, virt))) {
    zombies_.insert(objId(ns, virt));
    if (Names::Object* o = names_.find(ns, virt)) {
      o->live = false;
      o->zombie = true;
    }
    return;
  }
  dropObject(ns, virt);
}

GLuint Recorder::currentProgram() const { return binding(Ns::Program, 0); }

void Recorder::bound(Cmd cmd, Ns ns, GLenum target, GLuint virt,
                     std::initializer_list<std::uint64_t> extra) {
  const bool element = ns == Ns::Buffer && target == GL_ELEMENT_ARRAY_BUFFER;
  const GLuint unit = (ns == Ns::Texture) ? activeUnit_ : 0;
  Entry& e = begin(cmd, 2 + static_cast<int>(extra.size()));
  e.a[0] = target;
  e.a[1] = virt;
  int i = 2;
  for (std::uint64_t x : extra) e.a[i++] = x;
  e.unit = unit;
  e.unitKind = ns == Ns::Texture ? Unit::Active : Unit::None;
  if (element) {
    // The element-array binding belongs to the vertex array object.
    const GLuint vao = binding(Ns::VertexArray, 0);
    elementOf_[vao] = virt;
    e.key.group = Group::Bind;
    e.key.n = 2;
    e.key.sel = {static_cast<std::uint64_t>(ns), target};
    onBoundObject(e, Ns::VertexArray, 0);
    addRef(e, Ns::Buffer, virt);
    commit(e);
    return;
  }
  bindings_[bindingKey(ns, target, unit)] = virt;
  if (ns == Ns::Framebuffer && target == GL_FRAMEBUFFER) {
    bindings_[bindingKey(ns, GL_DRAW_FRAMEBUFFER, 0)] = virt;
    bindings_[bindingKey(ns, GL_READ_FRAMEBUFFER, 0)] = virt;
  }
  e.key.group = extra.size() > 0 ? Group::BindIndexed : Group::Bind;
  e.key.n = 0;
  e.key.sel[e.key.n++] = static_cast<std::uint64_t>(ns);
  e.key.sel[e.key.n++] = target;
  if (extra.size() > 0) e.key.sel[e.key.n++] = *extra.begin();  // the index
  e.key.sel[e.key.n++] = unit;
  if (ns == Ns::Program) addRef(e, Ns::Program, virt);
  commit(e);
}

GLuint Recorder::binding(Ns ns, GLenum target) const {
  if (ns == Ns::Buffer && target == GL_ELEMENT_ARRAY_BUFFER) {
    auto it = elementOf_.find(binding(Ns::VertexArray, 0));
    return it == elementOf_.end() ? 0 : it->second;
  }
  if (ns == Ns::Framebuffer && target == GL_FRAMEBUFFER) target = GL_DRAW_FRAMEBUFFER;
  const GLuint unit = ns == Ns::Texture ? activeUnit_ : 0;
  auto it = bindings_.find(bindingKey(ns, target, unit));
  return it == bindings_.end() ? 0 : it->second;
}

void Recorder::clearGroup(Ns ns, GLuint obj, Group group) {
  auto it = byObject_.find(objId(ns, obj));
  if (it == byObject_.end()) return;
  std::vector<Key> doomed;
  for (const Key& k : it->second)
    if (k.group == group) doomed.push_back(k);
  for (const Key& k : doomed) erase(k);
}

std::vector<const Entry*> Recorder::entriesInOrder() const {
  std::vector<const Entry*> out;
  out.reserve(log_.size());
  for (const auto& [k, e] : log_) out.push_back(&e);
  std::sort(out.begin(), out.end(), [](const Entry* x, const Entry* y) { return x->seq < y->seq; });
  return out;
}

std::size_t Recorder::bytes() const {
  std::size_t n = 0;
  for (const auto& [k, e] : log_) n += e.bytes();
  return n;
}

bool Recorder::isZombie(Ns ns, GLuint obj) const { return zombies_.count(objId(ns, obj)) > 0; }

// --- glue for the generated wrappers ----------------------------------------------------

thread_local bool t_recordedCurrent = false;

State& state() {
  static State* s = new State;  // never destroyed: wrappers may run during exit
  return *s;
}

Recorder* recorder() {
  if (!t_recordedCurrent) return nullptr;
  State& s = state();
  return s.replaying ? nullptr : &s.rec;
}

Names& names() { return state().names; }

void onGen(Ns ns, GLsizei n, GLuint* out) {
  State& s = state();
  if (!t_recordedCurrent || !out) return;
  for (GLsizei k = 0; k < n; ++k) out[k] = s.names.addGenerated(ns, out[k], s.rec.nextSeq());
}

void onDelete(Ns ns, GLsizei n, const GLuint* virt) {
  State& s = state();
  if (!t_recordedCurrent || !virt) return;
  for (GLsizei k = 0; k < n; ++k) s.rec.deleted(ns, virt[k]);
}

GLuint onCreate(Cmd cmd, GLuint driverName, GLenum shaderType) {
  State& s = state();
  if (!t_recordedCurrent || driverName == 0) return driverName;
  return s.names.addGenerated(Ns::Program, driverName, s.rec.nextSeq(),
                              cmd == Cmd::CreateShader ? shaderType : 0);
}

void onBind(Cmd cmd, Ns ns, GLenum target, GLuint virt) {
  State& s = state();
  if (!t_recordedCurrent) return;
  if (ns == Ns::Program) s.names.setCurrentProgram(virt);
  if (!s.replaying) s.rec.bound(cmd, ns, target, virt);
}

GLuint toRealBind(Ns ns, GLenum target, GLuint virt) {
  if (virt == 0) return 0;
  State& s = state();
  if (!t_recordedCurrent) return virt;
  if (Names::Object* o = s.names.find(ns, virt)) {
    if (o->firstTarget == 0) o->firstTarget = target;
    return o->real;
  }
  if (s.rec.compat() && ns != Ns::Program) {
    s.names.adoptImplicit(ns, virt, s.rec.nextSeq());
    if (Names::Object* o = s.names.find(ns, virt)) o->firstTarget = target;
  }
  return virt;
}

void onUnsupported(const char* name) {
  State& s = state();
  if (!t_recordedCurrent) return;
  if (s.unsupportedCalls.fetch_add(1) == 0) {
    s.firstUnsupported = name;
    std::fprintf(stderr,
                 "vmckpt-gl: %s changes state this plugin does not record; a restart will "
                 "replay without it\n",
                 name);
  }
}

}  // namespace vmckpt::gl
