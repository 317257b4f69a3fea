// Filesystem helpers that report errors as values and name the syscall and path.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::fs {

bool exists(const std::string& path);
bool isDirectory(const std::string& path);

// Reads a whole file; fails with Errc::corrupt if it is larger than maxBytes.
Result<std::string> readFile(const std::string& path, size_t maxBytes = 16 << 20);

// Writes to "<path>.tmp.<pid>", fsyncs, renames over path, fsyncs the directory.
Status writeFileAtomic(const std::string& path, const std::string& content, mode_t mode = 0600);

// mkdir -p; sets `mode` on every directory it creates (and on the last one always).
Status makeDirs(const std::string& path, mode_t mode = 0700);

// Names in `dir` that start with `prefix` (none when `dir` cannot be read).
std::vector<std::string> entriesWithPrefix(const std::string& dir, std::string_view prefix);

// rm -rf; succeeds when the path does not exist.
Status removeTree(const std::string& path);

Status removeFile(const std::string& path);  // succeeds when missing

enum class CopyMethod {
  reflinkOrCopy,  // FICLONE when the filesystem can, else a sparse copy
  reflinkOnly,    // FICLONE or fail (Errc::unsupported)
  copyOnly,       // always a sparse copy, even where FICLONE would work
};

// When a copy is made durable: at once, or later by the caller (syncFilesIn) so that the
// fsyncs run outside a critical section (the guest's pause).
enum class Sync { now, later };

// Copies a file by `method`; the sparse copy uses SEEK_DATA/SEEK_HOLE + copy_file_range.
// Writes dst via a temp name, fsyncs it (Sync::now) and renames it into place.
Status copyFile(const std::string& src, const std::string& dst, CopyMethod method, mode_t mode = 0600,
                Sync sync = Sync::now);

// syncfs(2) of the filesystem holding `path`.
Status syncFilesystem(const std::string& path);

// fsyncs every regular file directly inside `dir`, then `dir` itself.
Status syncFilesIn(const std::string& dir);

inline Status cloneOrCopyFile(const std::string& src, const std::string& dst, mode_t mode = 0600) {
  return copyFile(src, dst, CopyMethod::reflinkOrCopy, mode);
}

// Absolute, normalized form of a path (does not require it to exist).
std::string absolute(const std::string& path);

// Filesystem type name of the filesystem holding path ("btrfs", "xfs", "ext4", "tmpfs", ...).
Result<std::string> filesystemType(const std::string& path);

}  // namespace vmckpt::fs
