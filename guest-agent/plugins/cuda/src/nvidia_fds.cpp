#include "nvidia_fds.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace vmckpt::cuda {

namespace {

bool allDigits(const char* s) {
  if (*s == '\0') return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

std::string readComm(const std::string& dir) {
  std::ifstream f(dir + "/comm");
  std::string line;
  std::getline(f, line);
  return line;
}

std::vector<std::string> nvidiaFilesIn(const std::string& fdDir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(fdDir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (!allDigits(e->d_name)) continue;
    std::string link = fdDir + "/" + e->d_name;
    char target[512];
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    std::string t(target, static_cast<size_t>(n));
    if (t.starts_with("/dev/nvidia")) out.push_back(std::move(t));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

std::vector<std::string> nvidiaFilesOf(pid_t pid, const std::string& procRoot) {
  return nvidiaFilesIn(procRoot + "/" + std::to_string(pid) + "/fd");
}

std::vector<NvidiaHolder> findNvidiaHolders(const std::string& procRoot, pid_t exclude) {
  std::vector<NvidiaHolder> out;
  DIR* d = ::opendir(procRoot.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (!allDigits(e->d_name)) continue;
    pid_t pid = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
    if (pid <= 0 || pid == exclude) continue;
    std::string dir = procRoot + "/" + e->d_name;
    auto files = nvidiaFilesIn(dir + "/fd");
    if (files.empty()) continue;
    out.push_back({pid, readComm(dir), std::move(files)});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const NvidiaHolder& a, const NvidiaHolder& b) { return a.pid < b.pid; });
  return out;
}

std::string describeHolder(const NvidiaHolder& h) {
  std::string s = std::to_string(h.pid) + " (" + (h.comm.empty() ? "?" : h.comm) + ":";
  for (size_t i = 0; i < h.files.size(); ++i) s += (i ? ", " : " ") + h.files[i];
  return s + ")";
}

}  // namespace vmckpt::cuda
