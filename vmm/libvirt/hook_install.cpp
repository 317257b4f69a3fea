#include "vmm/libvirt/hook_install.hpp"

#include <limits.h>
#include <unistd.h>

#include <cerrno>

#include "common/fs.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm::libvirt {

namespace {

Status checkScriptPath(const std::string& what, const std::string& path) {
  if (path.empty() || path[0] != '/') return fail(Errc::invalidArgument, cat(what, " '", path, "' is not an absolute path"));
  for (char c : path)
    if (c == '\n' || c == '\r' || c == '\0')
      return fail(Errc::invalidArgument, cat(what, " '", path, "' contains a line break"));
  return {};
}

}  // namespace

Result<std::string> hookScript(const std::string& vmckptBinary, const std::string& home) {
  VMCKPT_TRY(checkScriptPath("vmckpt binary", vmckptBinary));
  VMCKPT_TRY(checkScriptPath("store", home));
  // shellQuote single-quotes anything but plain path characters: valid sh.
  return cat("#!/bin/sh\n", kHookMarker, "\n",
             "# libvirt runs this for every qemu domain event; see 'vmckpt libvirt-hook --help'.\n",
             "VMCKPT_HOME=", shellQuote(home), "\n", "export VMCKPT_HOME\n",
             "exec ", shellQuote(vmckptBinary), " libvirt-hook run -- \"$@\"\n");
}

Result<std::string> installHook(const std::string& hooksDir, const std::string& vmckptBinary, const std::string& home) {
  auto text = hookScript(vmckptBinary, home);
  if (!text) return fail(text.error());
  VMCKPT_TRY(fs::makeDirs(hooksDir, 0755));
  std::string path = cat(hooksDir, "/", kHookScriptName);
  auto w = fs::writeFileAtomic(path, *text, 0755);
  if (!w) return fail(w.error().context("install libvirt hook"));
  return path;
}

Result<std::string> uninstallHook(const std::string& hooksDir) {
  std::string path = cat(hooksDir, "/", kHookScriptName);
  if (!fs::exists(path)) return fail(Errc::notFound, cat("uninstall libvirt hook: ", path, " does not exist"));
  auto text = fs::readFile(path, 64 << 10);
  if (!text) return fail(text.error().context("uninstall libvirt hook"));
  if (text->find(cat("\n", kHookMarker, "\n")) == std::string::npos)
    return fail(Errc::wrongState, cat("uninstall libvirt hook: ", path, " was not installed by vmckpt; left alone"));
  VMCKPT_TRY(fs::removeFile(path));
  return path;
}

Result<std::string> selfExecutable() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return failErrno("readlink /proc/self/exe", errno);
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace vmckpt::vmm::libvirt
