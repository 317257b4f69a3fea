// vmckpt create NAME --memory SIZE [--vcpus N] [--ram file|anon] (--kernel K [--initrd I] [--append A] | --disk F)...
//   [--passthrough DRIVER,id=ID[,KEY=VALUE...]]...
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addCreate(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, memory = "1G", kernel, initrd, append, accel = "auto", net = "none", machine = "q35", cpu;
    std::string storeMode = "auto", ram = "file";
    unsigned vcpus = 1;
    std::vector<std::string> disks, extra, passthrough;
    bool noAgent = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("create", "Define a new VM (copies kernel, initrd and disks into the store)");
  sub->add_option("name", o->name, "VM name ([A-Za-z0-9_.-], up to 64)")->required();
  sub->add_option("--memory,-m", o->memory, "Guest RAM, e.g. 512M, 2G")->capture_default_str();
  sub->add_option("--vcpus", o->vcpus, "Virtual CPUs")->capture_default_str();
  sub->add_option("--kernel", o->kernel, "Kernel image for direct kernel boot");
  sub->add_option("--initrd", o->initrd, "Initramfs for kernel boot");
  sub->add_option("--append", o->append, "Kernel command line");
  sub->add_option("--disk", o->disks, "Disk image PATH[,format=raw|qcow2] (repeatable; copied into the store)");
  sub->add_option("--accel", o->accel, "auto (KVM where it really works, else TCG), kvm, tcg")->capture_default_str();
  sub->add_option("--net", o->net,
                  "none | user | socket-udp,local=HOST:PORT,remote=HOST:PORT[,mac=MAC] | socket-mcast,group=ADDR:PORT[,mac=MAC]")->capture_default_str();
  sub->add_option("--machine", o->machine, "QEMU machine type")->capture_default_str();
  sub->add_option("--cpu", o->cpu, "QEMU CPU model (default: max)");
  sub->add_option("--qemu-arg", o->extra, "Extra QEMU argument, appended verbatim (repeatable)")->allow_extra_args(false);
  sub->add_option("--passthrough", o->passthrough,
                  "DRIVER,id=ID[,KEY=VALUE...]: a hot-pluggable PCI device in a slot of its own (repeatable; q35), "
                  "e.g. vfio-pci,id=gpu0,host=0000:65:00.0. Unplugged for every snapshot and plugged back after it "
                  "and after a restore (restore --map pci_ID=DDDD:BB:DD.F plugs another host device)")
      ->allow_extra_args(false);
  sub->add_flag("--no-agent", o->noAgent, "Do not add the guest agent's virtio-serial channel");
  sub->add_option("--ram", o->ram,
                  "file (a shared file in the store: millisecond snapshots) | anon (QEMU's anonymous RAM: "
                  "snapshots only with --live, which write all of RAM)")
      ->capture_default_str();
  sub->add_option("--store-mode", o->storeMode,
                  "auto | btrfs (live/ becomes a subvolume) | reflink | copy")->capture_default_str();
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      vmm::CreateRequest req;
      auto& s = req.spec;
      s.name = o->name;
      auto mem = parseSize(o->memory);
      if (!mem.ok) return fail(Errc::invalidArgument, cat("--memory: ", mem.error));
      s.memoryBytes = mem.bytes;
      s.vcpus = o->vcpus;
      auto accel = vmm::parseAccel(o->accel);
      if (!accel) return fail(accel.error());
      s.accel = *accel;
      auto net = vmm::parseNet(o->net);
      if (!net) return fail(net.error());
      s.net = *net;
      s.machine = o->machine;
      s.cpu = o->cpu;
      s.append = o->append;
      s.agent = !o->noAgent;
      s.extraArgs = o->extra;
      for (const auto& pt : o->passthrough) {
        auto d = vfio::parsePassthrough(pt);
        if (!d) return fail(d.error());
        s.passthrough.push_back(std::move(*d));
      }
      auto ram = vmm::parseRamBackend(o->ram);
      if (!ram) return fail(ram.error().context("--ram"));
      s.ram = *ram;
      if (!o->append.empty() && o->kernel.empty()) return fail(Errc::invalidArgument, "--append needs --kernel");
      if (o->storeMode != "auto") {
        auto m = vmm::store::parseStoreMode(o->storeMode);
        if (!m) return fail(m.error());
        req.storeMode = *m;
      }
      req.kernel = o->kernel;
      req.initrd = o->initrd;
      for (const auto& d : o->disks) {
        auto arg = vmm::parseDiskArg(d);
        if (!arg) return fail(arg.error());
        req.disks.push_back(*arg);
      }
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->create(req);
      if (!st) return fail(st.error().context(cat("create ", o->name)));
      ctx.emit(st->toJson(), cat("created VM ", st->name, " (", formatSize(s.memoryBytes), ", ", s.vcpus, " vCPU",
                                 s.vcpus == 1 ? "" : "s", ", accel ", vmm::accelName(s.accel),
                                 s.ram == vmm::RamBackend::anon ? ", anonymous RAM" : "", ") in ", st->dir));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
