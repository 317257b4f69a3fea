#include "names.hpp"

namespace vmckpt::gl {

GLuint Names::addGenerated(Ns ns, GLuint driverName, std::uint64_t seq, GLenum shaderType) {
  const GLuint real_ = driverName;
  const int i = static_cast<int>(ns);
  auto& v = objects_[i];
  GLuint virt = real_;
  if (virt == 0 || (virt < v.size() && (v[virt].live || v[virt].zombie))) {
    virt = std::max<GLuint>(nextFree_[i], 1);
    while (virt < v.size() && (v[virt].live || v[virt].zombie)) ++virt;
    nextFree_[i] = virt + 1;
  }
  if (virt >= v.size()) v.resize(static_cast<std::size_t>(virt) + 1);
  v[virt] = Object{real_, true, false, seq, shaderType, 0};
  realToVirtual_[i][real_] = virt;
  return virt;
}

GLuint Names::adoptImplicit(Ns ns, GLuint name, std::uint64_t seq) {
  const int i = static_cast<int>(ns);
  auto& v = objects_[i];
  if (name >= v.size()) v.resize(static_cast<std::size_t>(name) + 1);
  v[name] = Object{name, true, false, seq, 0, 0};
  realToVirtual_[i][name] = name;
  return name;
}

void Names::remove(Ns ns, GLuint virt) {
  const int i = static_cast<int>(ns);
  auto& v = objects_[i];
  if (virt == 0 || virt >= v.size()) return;
  auto it = realToVirtual_[i].find(v[virt].real);
  if (it != realToVirtual_[i].end() && it->second == virt) realToVirtual_[i].erase(it);
  v[virt] = Object{};
  if (virt < nextFree_[i]) nextFree_[i] = virt;
  if (ns == Ns::Program) forgetLocations(virt);
}

GLuint Names::toVirtual(Ns ns, GLuint driverName) const {
  if (driverName == 0) return 0;
  const auto& m = realToVirtual_[static_cast<int>(ns)];
  auto it = m.find(driverName);
  return it == m.end() ? driverName : it->second;
}

void Names::toVirtualArray(Ns ns, GLuint* names, GLsizei n) const {
  for (GLsizei k = 0; names && k < n; ++k) names[k] = toVirtual(ns, names[k]);
}

Names::Object* Names::find(Ns ns, GLuint virt) {
  auto& v = objects_[static_cast<int>(ns)];
  if (virt == 0 || virt >= v.size() || !(v[virt].live || v[virt].zombie)) return nullptr;
  return &v[virt];
}

void Names::rebind(Ns ns, GLuint virt, GLuint driverName) {
  const int i = static_cast<int>(ns);
  auto& o = objects_[i][virt];
  auto it = realToVirtual_[i].find(o.real);
  if (it != realToVirtual_[i].end() && it->second == virt) realToVirtual_[i].erase(it);
  o.real = driverName;
  realToVirtual_[i][driverName] = virt;
}

std::size_t Names::liveCount() const {
  std::size_t n = 0;
  for (const auto& v : objects_)
    for (const auto& o : v) n += (o.live || o.zombie) ? 1 : 0;
  return n;
}

void Names::noteLocation(GLuint program, GLint location, const char* name) {
  if (location < 0 || !name) return;
  locationNames_[{program, location}] = name;
}

const std::string* Names::locationName(GLuint program, GLint location) const {
  auto it = locationNames_.find({program, location});
  return it == locationNames_.end() ? nullptr : &it->second;
}

GLint Names::locationOf(GLuint program, const char* name) const {
  for (auto it = locationNames_.lower_bound({program, INT32_MIN});
       it != locationNames_.end() && it->first.first == program; ++it)
    if (it->second == name) return it->first.second;
  return -1;
}

std::vector<std::pair<GLint, std::string>> Names::locations(GLuint program) const {
  std::vector<std::pair<GLint, std::string>> out;
  for (auto it = locationNames_.lower_bound({program, INT32_MIN});
       it != locationNames_.end() && it->first.first == program; ++it)
    out.emplace_back(it->first.second, it->second);
  return out;
}

GLint Names::locationToReal(GLuint program, GLint location) const {
  if (!remapped_ || location < 0) return location;
  auto it = realLocations_.find({program, location});
  return it == realLocations_.end() ? location : it->second;
}

void Names::forgetLocations(GLuint program) {
  locationNames_.erase(locationNames_.lower_bound({program, INT32_MIN}),
                       locationNames_.upper_bound({program, INT32_MAX}));
  realLocations_.erase(realLocations_.lower_bound({program, INT32_MIN}),
                       realLocations_.upper_bound({program, INT32_MAX}));
}

NameArray::NameArray(const Names& names, Ns ns, GLsizei n, const GLuint* virt) {
  if (!virt || n <= 0) {
    ptr_ = virt;
    return;
  }
  GLuint* out = small_.data();
  if (static_cast<std::size_t>(n) > small_.size()) {
    big_.resize(static_cast<std::size_t>(n));
    out = big_.data();
  }
  for (GLsizei k = 0; k < n; ++k) out[k] = names.toReal(ns, virt[k]);
  ptr_ = out;
}

}  // namespace vmckpt::gl
