// Types shared by the generated wrappers and the hand-written parts of libvmckpt-gl.
#pragma once

#include <GL/gl.h>
#include <GL/glext.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define VMCKPT_GL_EXPORT __attribute__((visibility("default")))

namespace vmckpt::gl {

// Object namespaces. Shaders and programs share one, as in GL.
enum class Ns : std::uint8_t {
  None,
  Buffer,
  Texture,
  Framebuffer,
  Renderbuffer,
  VertexArray,
  Program,
  Sampler,
  Query,
  Count
};
inline constexpr int kNsCount = static_cast<int>(Ns::Count);

// Which texture unit a call depends on, if any.
enum class Unit : std::uint8_t { None, Active, Client };

// Arguments are kept as 64-bit words: integers sign- or zero-extended, floats by their
// bits, pointers by their address.
template <typename T>
std::uint64_t encode(T v) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<std::uintptr_t>(v);
  } else if constexpr (std::is_same_v<T, float>) {
    return std::bit_cast<std::uint32_t>(v);
  } else if constexpr (std::is_same_v<T, double>) {
    return std::bit_cast<std::uint64_t>(v);
  } else {
    return static_cast<std::uint64_t>(v);
  }
}

template <typename T>
T decode(std::uint64_t w) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<T>(static_cast<std::uintptr_t>(w));
  } else if constexpr (std::is_same_v<T, float>) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(w));
  } else if constexpr (std::is_same_v<T, double>) {
    return std::bit_cast<double>(w);
  } else {
    return static_cast<T>(w);
  }
}

// FNV-1a of a NUL-terminated string (selectors that are names, e.g. attribute names).
inline std::uint64_t hashString(const char* s) {
  std::uint64_t h = 1469598103934665603ull;
  for (; s && *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

// Values a `pname` takes in the *v setters (glLightfv, glTexParameteriv, ...).
std::size_t pnameCount(GLenum pname);

// The driver's entry point for a GL function: the next definition after this library,
// else the real eglGetProcAddress / glXGetProcAddressARB. Never one of our wrappers.
void* resolveDriver(const char* name);

}  // namespace vmckpt::gl
