// Installs vmckpt as a libvirt qemu hook: one script, <hooks-dir>/50-vmckpt, that runs
// `<vmckpt> libvirt-hook run -- "$@"` with VMCKPT_HOME fixed to the installing store.
#pragma once

#include <string>

#include "common/error.hpp"

namespace vmckpt::vmm::libvirt {

inline constexpr const char* kDefaultHooksDir = "/etc/libvirt/hooks/qemu.d";
inline constexpr const char* kHookScriptName = "50-vmckpt";
// The script's second line; uninstall removes only a file that carries it.
inline constexpr const char* kHookMarker = "# vmckpt-libvirt-hook: installed by 'vmckpt libvirt-hook install'";

// The script's text; fails when a path cannot be written into it safely (newline, not absolute).
Result<std::string> hookScript(const std::string& vmckptBinary, const std::string& home);

// Writes <hooksDir>/50-vmckpt atomically with mode 0755 (creating hooksDir 0755). Returns its path.
Result<std::string> installHook(const std::string& hooksDir, const std::string& vmckptBinary, const std::string& home);

// Removes <hooksDir>/50-vmckpt if it carries kHookMarker; Errc::notFound when absent,
// Errc::wrongState when the file is someone else's. Returns its path.
Result<std::string> uninstallHook(const std::string& hooksDir);

// The absolute path of the running executable (/proc/self/exe).
Result<std::string> selfExecutable();

}  // namespace vmckpt::vmm::libvirt
