// A fresh directory under /tmp, removed with everything in it (for tests).
#pragma once

#include <stdlib.h>

#include <string>

#include "common/fs.hpp"

namespace vmckpt {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "vmckpt-test") {
    std::string t = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(t.data())) path_ = t;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (!path_.empty()) (void)fs::removeTree(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace vmckpt
