// vmckpt doctor [--reprobe-kvm]
#include <cstdio>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "vmm/host_report.hpp"

namespace vmckpt::cli {

void addDoctor(CLI::App& app, Context& ctx) {
  auto reprobe = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("doctor", "Check what this host can do: QEMU, KVM, store filesystem, reflink, btrfs");
  sub->add_flag("--reprobe-kvm", *reprobe, "Boot the KVM test again instead of using the cached result");
  sub->callback([&ctx, reprobe] {
    ctx.action = [&ctx, reprobe]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      std::uint64_t guestRam = 0;
      if (auto vms = mgr->list())
        for (const auto& v : *vms) guestRam += v.spec.memoryBytes;
      vmm::HostReport r = vmm::inspectHost(mgr->root().home(), *reprobe, guestRam);
      Json checks = Json::array();
      std::string human;
      for (const auto& c : r.checks) {
        checks.push_back({{"name", c.name}, {"ok", c.ok}, {"required", c.required}, {"detail", c.detail}});
        char row[64];
        std::snprintf(row, sizeof row, "%-17s %-5s ", c.name.c_str(), c.ok ? "ok" : (c.required ? "FAIL" : "no"));
        human += cat(row, c.detail, "\n");
      }
      std::string accel = r.kvm.bootsLinux ? "kvm" : "tcg";
      human += cat("accel auto        -> ", accel, "\n");
      const std::string& mode = r.storeMode;
      human += cat("store mode        -> ", mode, mode == "copy" ? " (snapshots copy RAM while paused: slow; use btrfs or XFS)" : "", "\n");
      Json j = {{"healthy", r.healthy()},
                {"checks", checks},
                {"qemu", {{"binary", r.qemuBinary}, {"version", r.qemuVersion}}},
                {"kvm",
                 {{"device_opens", r.kvm.deviceOpens},
                  {"boots_linux", r.kvm.bootsLinux},
                  {"verified", r.kvm.verified},
                  {"reason", r.kvm.reason}}},
                {"accel_auto", accel},
                {"store", {{"home", mgr->root().home()}, {"filesystem", r.storeFs}, {"reflink", r.reflink},
                           {"btrfs_subvolumes", r.btrfsSubvolumes}, {"mode", mode}}}};
      ctx.emit(j, human);
      if (!r.healthy()) return fail(Errc::unsupported, "this host is missing something vmckpt needs (see FAIL above)");
      return {};
    };
  });
}

}  // namespace vmckpt::cli
