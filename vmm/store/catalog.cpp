#include "vmm/store/catalog.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <random>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/sha256.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm::store {

std::string Catalog::newId() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y%m%d-%H%M%S", &tm);
  std::random_device rd;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%04x", when, rd() & 0xffff);
  return buf;
}

Result<std::vector<SnapshotEntry>> Catalog::list() const {
  std::vector<SnapshotEntry> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return failErrno(cat("opendir ", dir_), errno);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names) {
    std::string sdir = dir_ + "/" + n;
    auto m = readManifest(sdir + "/manifest.json");
    if (!m) {
      log::warn("snapshot ", n, " skipped: ", m.error().message());
      continue;
    }
    if (m->id != n) {
      log::warn("snapshot ", n, " skipped: its manifest says id ", m->id);
      continue;
    }
    out.push_back({std::move(*m), sdir});
  }
  std::sort(out.begin(), out.end(), [](const SnapshotEntry& a, const SnapshotEntry& b) {
    return a.manifest.created != b.manifest.created ? a.manifest.created < b.manifest.created
                                                    : a.manifest.id < b.manifest.id;
  });
  return out;
}

Result<SnapshotEntry> Catalog::resolve(const std::string& ref) const {
  if (ref.empty()) return fail(Errc::invalidArgument, "empty snapshot reference");
  // An exact id is read directly, so that a damaged or newer manifest says so.
  if (ref.find('/') == std::string::npos && ref[0] != '.') {
    std::string sdir = dir_ + "/" + ref;
    if (fs::exists(sdir + "/manifest.json")) {
      auto m = readManifest(sdir + "/manifest.json");
      if (!m) return fail(m.error().context(cat("snapshot ", ref)));
      return SnapshotEntry{std::move(*m), sdir};
    }
  }
  auto all = list();
  if (!all) return fail(all.error());
  std::vector<const SnapshotEntry*> byPrefix, byTag;
  for (const auto& s : *all) {
    if (s.manifest.id == ref) return s;
    if (startsWith(s.manifest.id, ref)) byPrefix.push_back(&s);
    if (s.manifest.tag == ref) byTag.push_back(&s);
  }
  if (byTag.size() == 1) return *byTag[0];
  if (byTag.size() > 1) return fail(Errc::invalidArgument, cat("tag ", ref, " names ", byTag.size(), " snapshots; use an id"));
  if (byPrefix.size() == 1) return *byPrefix[0];
  if (byPrefix.size() > 1)
    return fail(Errc::invalidArgument, cat("snapshot id prefix ", ref, " is ambiguous (", byPrefix.size(), " match)"));
  return fail(Errc::notFound, cat("no snapshot ", ref));
}

VerifyReport verifySnapshot(const SnapshotEntry& s) {
  VerifyReport r;
  struct stat dst{};
  if (::lstat(s.dataDir().c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) {
    r.problems.push_back(S_ISLNK(dst.st_mode) ? "data: is a symbolic link, not the snapshot's directory"
                                              : "data: missing");
    return r;
  }
  for (const auto& f : s.manifest.files) {
    std::string path = s.dataDir() + "/" + f.name;
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) {
      r.problems.push_back(cat(f.name, ": missing"));
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      r.problems.push_back(cat(f.name, S_ISLNK(st.st_mode) ? ": is a symbolic link, not a file of the snapshot"
                                                           : ": is not a regular file"));
      continue;
    }
    if (static_cast<std::uint64_t>(st.st_size) != f.size) {
      r.problems.push_back(cat(f.name, ": size ", st.st_size, ", manifest says ", f.size));
      continue;
    }
    if (f.sha256.empty()) continue;
    auto sum = sha256File(path);
    if (!sum) {
      r.problems.push_back(cat(f.name, ": ", sum.error().message()));
      continue;
    }
    r.checkedBytes += f.size;
    if (*sum != f.sha256) r.problems.push_back(cat(f.name, ": sha256 mismatch (damaged or tampered with)"));
  }
  r.ok = r.problems.empty();
  return r;
}

}  // namespace vmckpt::vmm::store
