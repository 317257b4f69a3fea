#include "common/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::fs {
namespace {

std::string parentDir(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

Status fsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return failErrno(cat("open ", dir), errno);
  if (::fsync(fd.get()) != 0) return failErrno(cat("fsync ", dir), errno);
  return {};
}

Status writeAll(int fd, const char* data, size_t len, const std::string& path) {
  while (len > 0) {
    ssize_t w = ::write(fd, data, len);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return failErrno(cat("write ", path), errno);
    data += w;
    len -= static_cast<size_t>(w);
  }
  return {};
}

// Copies bytes through a buffer: a real physical copy, whatever the filesystem.
Status copyRangeByBuffer(int in, int out, off_t start, off_t end, const std::string& src, const std::string& dst) {
  std::vector<char> buf(1 << 20);
  off_t off = start;
  while (off < end) {
    ssize_t r = ::pread(in, buf.data(), static_cast<size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), end - off)), off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failErrno(cat("read ", src), errno);
    if (r == 0) break;
    ssize_t done = 0;
    while (done < r) {
      ssize_t w = ::pwrite(out, buf.data() + done, static_cast<size_t>(r - done), off + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return failErrno(cat("write ", dst), errno);
      done += w;
    }
    off += r;
  }
  return {};
}

// copy_file_range: in-kernel copy, which Btrfs and XFS turn into a reflink where they can.
Status copyRangeInKernel(int in, int out, off_t start, off_t end, const std::string& src, const std::string& dst) {
  off_t inOff = start, outOff = start;
  while (inOff < end) {
    ssize_t n = ::copy_file_range(in, &inOff, out, &outOff, static_cast<size_t>(end - inOff), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL))
      return copyRangeByBuffer(in, out, inOff, end, src, dst);
    if (n < 0) return failErrno(cat("copy_file_range ", src, " -> ", dst), errno);
    if (n == 0) break;
  }
  return {};
}

}  // namespace

bool exists(const std::string& path) {
  struct stat st{};
  return ::lstat(path.c_str(), &st) == 0;
}

bool isDirectory(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<std::string> readFile(const std::string& path, size_t maxBytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return fail(Errc::notFound, cat(path, ": no such file"), err);
    return failErrno(cat("open ", path), err);
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failErrno(cat("read ", path), errno);
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > maxBytes)
      return fail(Errc::corrupt, cat(path, ": larger than ", maxBytes, " bytes"));
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status writeFileAtomic(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = cat(path, ".tmp.", ::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return failErrno(cat("open ", tmp), errno);
  auto cleanup = [&] { ::unlink(tmp.c_str()); };
  if (auto s = writeAll(fd.get(), content.data(), content.size(), tmp); !s) {
    cleanup();
    return s;
  }
  if (::fchmod(fd.get(), mode) != 0 || ::fsync(fd.get()) != 0) {
    int err = errno;
    cleanup();
    return failErrno(cat("fsync ", tmp), err);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    cleanup();
    return failErrno(cat("rename ", tmp, " -> ", path), err);
  }
  return fsyncDir(parentDir(path));
}

std::vector<std::string> entriesWithPrefix(const std::string& dir, std::string_view prefix) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string_view(e->d_name).starts_with(prefix)) out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

Status makeDirs(const std::string& path, mode_t mode) {
  std::filesystem::path p(path);
  std::string cur;
  for (const auto& part : p) {
    if (part == "/") {
      cur = "/";
      continue;
    }
    if (!cur.empty() && cur.back() != '/') cur += '/';
    cur += part.string();
    if (::mkdir(cur.c_str(), mode) == 0) continue;
    if (errno == EEXIST && isDirectory(cur)) continue;
    return failErrno(cat("mkdir ", cur), errno);
  }
  if (::chmod(path.c_str(), mode) != 0) return failErrno(cat("chmod ", path), errno);
  return {};
}

Status removeTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return fail(Errc::io, cat("remove ", path, ": ", ec.message()), ec.value());
  return {};
}

Status removeFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return failErrno(cat("unlink ", path), errno);
  return {};
}

Status copyFile(const std::string& src, const std::string& dst, CopyMethod method, mode_t mode, Sync sync) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) {
    int err = errno;
    if (err == ENOENT) return fail(Errc::notFound, cat(src, ": no such file"), err);
    return failErrno(cat("open ", src), err);
  }
  struct stat st{};
  if (::fstat(in.get(), &st) != 0) return failErrno(cat("stat ", src), errno);
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalidArgument, cat(src, ": not a regular file"));

  std::string tmp = cat(dst, ".tmp.", ::getpid());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!out) return failErrno(cat("open ", tmp), errno);
  bool ok = false;
  struct Unlink {
    const std::string& p;
    bool& ok;
    ~Unlink() {
      if (!ok) ::unlink(p.c_str());
    }
  } guard{tmp, ok};

  bool cloned = false;
  if (method != CopyMethod::copyOnly) {
    cloned = ::ioctl(out.get(), FICLONE, in.get()) == 0;
    if (!cloned && method == CopyMethod::reflinkOnly)
      return fail(Errc::unsupported, cat("reflink ", src, ": ", std::strerror(errno)), errno);
  }
  // copyOnly promises a physical copy, so not copy_file_range (which may reflink).
  auto copy = method == CopyMethod::copyOnly ? copyRangeByBuffer : copyRangeInKernel;
  if (!cloned) {
    // No reflink here: sparse-aware copy of each data extent.
    if (::ftruncate(out.get(), st.st_size) != 0) return failErrno(cat("ftruncate ", tmp), errno);
    off_t pos = 0;
    while (pos < st.st_size) {
      off_t data = ::lseek(in.get(), pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // only a hole remains
      if (data < 0) {
        data = pos;  // SEEK_DATA unsupported: copy everything
        if (auto s = copy(in.get(), out.get(), data, st.st_size, src, tmp); !s) return s;
        break;
      }
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) hole = st.st_size;
      if (auto s = copy(in.get(), out.get(), data, hole, src, tmp); !s) return s;
      pos = hole;
    }
  }
  if (sync == Sync::now && ::fsync(out.get()) != 0) return failErrno(cat("fsync ", tmp), errno);
  out.reset();
  if (::rename(tmp.c_str(), dst.c_str()) != 0) return failErrno(cat("rename ", tmp, " -> ", dst), errno);
  ok = true;
  return sync == Sync::now ? fsyncDir(parentDir(dst)) : Status{};
}

Status syncFilesystem(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failErrno(cat("open ", path), errno);
  if (::syncfs(fd.get()) != 0) return failErrno(cat("syncfs ", path), errno);
  return {};
}

Status syncFilesIn(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return failErrno(cat("opendir ", dir), errno);
  std::vector<std::string> files;
  while (dirent* e = ::readdir(d))
    if (e->d_type == DT_REG || e->d_type == DT_UNKNOWN) files.push_back(dir + "/" + e->d_name);
  ::closedir(d);
  for (const auto& f : files) {
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
      if (errno == ELOOP || errno == EISDIR) continue;  // not a regular file after all
      return failErrno(cat("open ", f), errno);
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::fsync(fd.get()) != 0) return failErrno(cat("fsync ", f), errno);
  }
  return fsyncDir(dir);
}

std::string absolute(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::absolute(path, ec);
  if (ec) return path;
  return p.lexically_normal().string();
}

Result<std::string> filesystemType(const std::string& path) {
  struct statfs sfs{};
  if (::statfs(path.c_str(), &sfs) != 0) return failErrno(cat("statfs ", path), errno);
  switch (static_cast<unsigned long>(sfs.f_type)) {
    case BTRFS_SUPER_MAGIC: return std::string("btrfs");
    case XFS_SUPER_MAGIC: return std::string("xfs");
    case EXT4_SUPER_MAGIC: return std::string("ext4");
    case TMPFS_MAGIC: return std::string("tmpfs");
    case OVERLAYFS_SUPER_MAGIC: return std::string("overlayfs");
    case NFS_SUPER_MAGIC: return std::string("nfs");
    default: return cat("unknown(0x", std::hex, static_cast<unsigned long>(sfs.f_type), ")");
  }
}

}  // namespace vmckpt::fs
