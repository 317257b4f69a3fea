// The pruned log: every recorded call lives under a key, and a later call with the same
// key replaces it, so the log holds live state only, not history. Objects own their
// entries; deleting an object drops them (unless another object still uses it).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gl_generated.hpp"
#include "gl_types.hpp"
#include "names.hpp"

namespace vmckpt::gl {

inline constexpr int kMaxArgs = 12;
inline constexpr int kMaxSel = 10;
inline constexpr std::uint64_t kNullPointer = ~0ull;

struct Key {
  Ns ns = Ns::None;
  GLuint obj = 0;
  Group group{};
  std::uint8_t n = 0;
  std::array<std::uint64_t, kMaxSel> sel{};
  bool operator==(const Key& o) const {
    if (ns != o.ns || obj != o.obj || group != o.group || n != o.n) return false;
    for (int i = 0; i < n; ++i)
      if (sel[i] != o.sel[i]) return false;
    return true;
  }
};

struct KeyHash {
  std::size_t operator()(const Key& k) const {
    std::uint64_t h = (static_cast<std::uint64_t>(k.ns) << 56) ^ (static_cast<std::uint64_t>(k.obj) << 20) ^
                      static_cast<std::uint64_t>(k.group) ^ (static_cast<std::uint64_t>(k.n) << 16);
    for (int i = 0; i < k.n; ++i) h = (h ^ k.sel[i]) * 0x100000001b3ull + (h >> 29);
    return static_cast<std::size_t>(h);
  }
};

// Pixel-unpack state that an upload was made with.
struct Unpack {
  GLint alignment = 4, rowLength = 0, imageHeight = 0, skipPixels = 0, skipRows = 0,
        skipImages = 0, swapBytes = 0, lsbFirst = 0;
};

// How a recorded call finds the object it changes.
enum class ObjMode : std::uint8_t { None, Bound, Current, Named };

struct Dep {
  Ns ns = Ns::None;
  GLenum target = 0;
  GLuint obj = 0;
};
struct Ref {
  Ns ns = Ns::None;
  GLuint obj = 0;
};

struct Entry {
  std::uint64_t seq = 0;
  Cmd cmd{};
  std::uint8_t nargs = 0;
  Key key;
  ObjMode mode = ObjMode::None;
  Ns ns = Ns::None;
  GLuint obj = 0;
  GLenum bindTarget = 0;  // ObjMode::Bound: the target the object was bound to
  GLuint unit = 0;        // the texture unit (key has Unit::Active / Unit::Client)
  Unit unitKind = Unit::None;
  bool eye = false;       // replay under eyeMatrix as the modelview matrix
  bool hasUnpack = false; // an upload from client memory, made under `unpack`
  std::uint8_t ndeps = 0, nrefs = 0;
  std::array<Dep, 2> deps{};
  std::array<Ref, 3> refs{};
  std::array<float, 16> eyeMatrix{};
  Unpack unpack;
  std::array<std::uint64_t, kMaxArgs> a{};
  std::vector<std::byte> data;  // copied pointer arguments; a[i] holds the offset

  std::size_t bytes() const { return sizeof(Entry) + data.size(); }
};

class Recorder {
 public:
  explicit Recorder(Names& names) : names_(names) {}

  // --- used by the generated wrappers --------------------------------------------------
  Entry& begin(Cmd cmd, int nargs);
  std::uint64_t copy(Entry& e, const void* p, std::size_t bytes);
  // An image upload: copied from client memory, or an offset into the bound
  // pixel-unpack buffer (which then becomes a dependency of the entry).
  std::uint64_t upload(Entry& e, const void* p, std::size_t bytes);
  std::size_t pixelBytes(GLenum format, GLenum type, GLsizei w, GLsizei h, GLsizei d) const;
  void setKey(Entry& e, Group group, std::initializer_list<std::uint64_t> sel, Unit unit, bool eye);
  void onBoundObject(Entry& e, Ns ns, GLenum target);
  void onNamedObject(Entry& e, Ns ns, GLuint virt);
  void addDep(Entry& e, Ns ns, GLenum target);
  void addRef(Entry& e, Ns ns, GLuint virt);
  void addClear(Entry& e, Group group, int n);
  void commit(Entry& e);

  // --- used by the hand-written wrappers --------------------------------------------------
  void deleted(Ns ns, GLuint virt);
  // A binding changed: records it (key per target, and per unit for textures/samplers).
  void bound(Cmd cmd, Ns ns, GLenum target, GLuint virt, std::initializer_list<std::uint64_t> extra = {});
  GLuint binding(Ns ns, GLenum target) const;
  GLuint activeUnit() const { return activeUnit_; }
  GLuint clientUnit() const { return clientUnit_; }
  void setActiveUnit(GLuint u) { activeUnit_ = u; }
  void setClientUnit(GLuint u) { clientUnit_ = u; }
  void setPixelStore(GLenum pname, GLint v);
  // Removes the entries of `obj` in `group` (e.g. the uniforms of a relinked program).
  void clearGroup(Ns ns, GLuint obj, Group group);
  void setCompat(bool compat) { compat_ = compat; }
  bool compat() const { return compat_; }

  // --- for the replay and the API --------------------------------------------------
  std::vector<const Entry*> entriesInOrder() const;
  std::size_t bytes() const;
  std::size_t size() const { return log_.size(); }
  // Deleted objects still referenced by live entries.
  bool isZombie(Ns ns, GLuint obj) const;
  GLuint currentProgram() const;
  std::uint64_t nextSeq() { return ++seq_; }

 private:
  static std::uint64_t objId(Ns ns, GLuint obj) {
    return (static_cast<std::uint64_t>(ns) << 32) | obj;
  }
  void erase(const Key& k);
  void addRefs(const Entry& e);
  void releaseRefs(const Entry& e);
  void release(Ns ns, GLuint obj);
  void dropObject(Ns ns, GLuint obj);
  GLenum textureBindingTarget(GLenum target) const;

  Names& names_;
  std::unordered_map<Key, Entry, KeyHash> log_;
  std::unordered_map<std::uint64_t, std::unordered_set<Key, KeyHash>> byObject_;
  std::unordered_map<std::uint64_t, int> refCount_;
  std::unordered_set<std::uint64_t> zombies_;
  // Current bindings: (ns, target, unit) -> application name.
  std::unordered_map<std::uint64_t, GLuint> bindings_;
  std::unordered_map<GLuint, GLuint> elementOf_;  // VAO -> its element-array buffer
  Entry scratch_;
  std::array<std::pair<Group, int>, 2> clears_{};
  int nclears_ = 0;
  std::uint64_t seq_ = 0;
  GLuint activeUnit_ = 0, clientUnit_ = 0;
  Unpack unpack_;
  bool compat_ = false;
};

// Wrapper glue (recorder.cpp): the process-wide recorder, when the calling thread has the
// recorded context current and no replay is running; nullptr otherwise.
Recorder* recorder();
Names& names();
void onGen(Ns ns, GLsizei n, GLuint* names);
void onDelete(Ns ns, GLsizei n, const GLuint* names);
GLuint onCreate(Cmd cmd, GLuint real, GLenum shaderType);
void onBind(Cmd cmd, Ns ns, GLenum target, GLuint virt);
void onUnsupported(const char* name);

}  // namespace vmckpt::gl
