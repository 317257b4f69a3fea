// Virtual object names: the application keeps the names it was given, whatever names
// the driver hands out after a restart. Also uniform locations, per program.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "gl_generated.hpp"
#include "gl_types.hpp"

namespace vmckpt::gl {

class Names {
 public:
  struct Object {
    GLuint real = 0;
    bool live = false;
    bool zombie = false;      // deleted by the application, still referenced (see Recorder)
    std::uint64_t seq = 0;    // creation order
    GLenum shaderType = 0;    // Ns::Program: the shader type, 0 for a program
    GLenum firstTarget = 0;   // the target it was first bound to (fixes its type)
  };

  // Registers a driver name just generated; returns the application's name for it: the
  // same number when that is free, so that nothing changes until a restart.
  GLuint addGenerated(Ns ns, GLuint driverName, std::uint64_t seq, GLenum shaderType = 0);
  // A name the application binds without generating it (compatibility profile).
  GLuint adoptImplicit(Ns ns, GLuint name, std::uint64_t seq);
  void remove(Ns ns, GLuint virt);

  GLuint toReal(Ns ns, GLuint virt) const {
    if (virt == 0) return 0;
    const auto& v = objects_[static_cast<int>(ns)];
    return virt < v.size() && (v[virt].live || v[virt].zombie) ? v[virt].real : virt;
  }
  GLuint toVirtual(Ns ns, GLuint driverName) const;
  void toVirtualArray(Ns ns, GLuint* names, GLsizei n) const;

  Object* find(Ns ns, GLuint virt);
  const std::vector<Object>& all(Ns ns) const { return objects_[static_cast<int>(ns)]; }
  // After a restart: the object's name in the new context.
  void rebind(Ns ns, GLuint virt, GLuint driverName);
  std::size_t liveCount() const;

  // Uniform locations. The application's location is the one the driver gave before the
  // first restart; afterwards it is looked up by the uniform's name.
  void noteLocation(GLuint program, GLint location, const char* name);
  const std::string* locationName(GLuint program, GLint location) const;
  // The application's location for a uniform name of a program, or -1.
  GLint locationOf(GLuint program, const char* name) const;
  // The (location, name) pairs noted for a program.
  std::vector<std::pair<GLint, std::string>> locations(GLuint program) const;
  void setRealLocation(GLuint program, GLint location, GLint driverLocation) {
    realLocations_[{program, location}] = driverLocation;
  }
  GLint locationToReal(GLint location) const {
    if (!remapped_) return location;
    return locationToReal(currentProgram_, location);
  }
  GLint locationToReal(GLuint program, GLint location) const;
  void forgetLocations(GLuint program);
  void setCurrentProgram(GLuint program) { currentProgram_ = program; }
  void setRemapped() { remapped_ = true; }
  bool remapped() const { return remapped_; }

 private:
  std::array<std::vector<Object>, kNsCount> objects_;
  std::array<std::unordered_map<GLuint, GLuint>, kNsCount> realToVirtual_;
  std::array<GLuint, kNsCount> nextFree_{};
  std::map<std::pair<GLuint, GLint>, std::string> locationNames_;
  std::map<std::pair<GLuint, GLint>, GLint> realLocations_;
  GLuint currentProgram_ = 0;
  bool remapped_ = false;
};

// Translates an array of application names for one call (glDeleteTextures, ...).
class NameArray {
 public:
  NameArray(const Names& names, Ns ns, GLsizei n, const GLuint* virt);
  const GLuint* data() const { return ptr_; }

 private:
  std::array<GLuint, 16> small_{};
  std::vector<GLuint> big_;
  const GLuint* ptr_ = nullptr;
};

}  // namespace vmckpt::gl
