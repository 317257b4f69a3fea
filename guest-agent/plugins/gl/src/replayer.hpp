// Replays the pruned log into a fresh context: objects first (each call under the
// bindings it was made with), then context state, then what was read back at the
// checkpoint. Object names are remapped, the application keeps its own.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "gl_types.hpp"
#include "recorder.hpp"

namespace vmckpt::gl {

// State read back from the driver at a checkpoint rather than recorded: matrix stacks
// and current vertex attributes of the compatibility profile.
struct Captured {
  bool valid = false;
  GLint matrixMode = GL_MODELVIEW;
  GLint activeUnit = 0;
  struct Stack {
    GLenum mode = 0;
    GLint unit = 0;
    std::vector<std::array<GLfloat, 16>> levels;  // bottom first
  };
  std::vector<Stack> stacks;
  std::array<GLfloat, 4> color{1, 1, 1, 1};
  std::array<GLfloat, 3> normal{0, 0, 1};
  GLfloat fogCoord = 0;
  std::vector<std::array<GLfloat, 4>> texCoords;  // per unit
};

// Reads back the matrix stacks and current attributes (compatibility contexts only).
Captured captureQueried(bool compat);

class Replayer {
 public:
  Replayer(Recorder& rec, Names& names) : rec_(rec), names_(names) {}

  // Replays everything into the current context. Returns false with `error` set when
  // the driver reported an error (the replay still ran to the end).
  bool run(const Captured& captured, std::string& error);

  // --- used by the generated replayCall ------------------------------------------------
  GLuint toReal(Ns ns, GLuint virt) const { return names_.toReal(ns, virt); }
  GLint location(const Entry& e, GLint loc) const { return names_.locationToReal(e.obj, loc); }
  template <typename T>
  T pointer(const Entry& e, std::uint64_t v) const {
    if (v == kNullPointer) return nullptr;
    if (v & (1ull << 62)) return reinterpret_cast<T>(static_cast<std::uintptr_t>(v & ~(1ull << 62)));
    return reinterpret_cast<T>(e.data.data() + v);
  }
  void notReplayable(const Entry& e);

 private:
  void createObjects();
  void bindObject(Ns ns, GLenum target, GLuint virt, GLuint unit = 0);
  void prepare(const Entry& e);
  void replayObjectEntry(const Entry& e);
  void replayGlobalEntry(const Entry& e);
  void relocate(GLuint program);
  void setUnpack(const Unpack& u);
  void resetTouched();
  void restoreCaptured(const Captured& c);
  void deleteZombies();
  void checkError(const char* where);
  void trace(const char* what, Ns ns, GLuint obj, GLenum target);

  Recorder& rec_;
  Names& names_;
  std::vector<std::pair<Ns, GLenum>> touched_;
  Unpack unpack_;
  std::string error_;
  bool debug_ = false;
};

}  // namespace vmckpt::gl
