#include "vmm/qemu_command.hpp"

#include <gtest/gtest.h>

#include <algorithm>

using namespace vmckpt::vmm;

namespace {
VmSpec spec() {
  VmSpec s;
  s.name = "vm1";
  s.vcpus = 2;
  s.memoryBytes = 1ull << 30;
  s.kernelBoot = true;
  s.hasInitrd = true;
  s.append = "console=ttyS0 quiet";
  return s;
}

// The value following `flag` at its n-th occurrence.
std::string valueOf(const std::vector<std::string>& argv, const std::string& flag, int n = 0) {
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == flag && n-- == 0) return argv[i + 1];
  return "<missing>";
}

bool has(const std::vector<std::string>& argv, const std::string& s) {
  return std::find(argv.begin(), argv.end(), s) != argv.end();
}
}  // namespace

TEST(QemuCommand, RamIsASharedFileInTheLiveDirectory) {
  VmPaths p("/store/vms/vm1");
  auto argv = buildQemuCommand(spec(), p, {"/usr/bin/qemu-system-x86_64", Accel::tcg, true});
  EXPECT_EQ(argv[0], "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(valueOf(argv, "-object"),
            "memory-backend-file,id=ram0,size=1073741824,mem-path=/store/vms/vm1/live/mem,share=on");
  EXPECT_EQ(valueOf(argv, "-machine"), "q35,memory-backend=ram0");
  EXPECT_EQ(valueOf(argv, "-m"), "1024M");
  EXPECT_EQ(valueOf(argv, "-smp"), "2");
  EXPECT_EQ(valueOf(argv, "-accel"), "tcg");
  EXPECT_EQ(valueOf(argv, "-cpu"), "max");
}

TEST(QemuCommand, AnonymousRamWhenTheSpecSaysSo) {
  VmPaths p("/store/vms/vm1");
  VmSpec s = spec();
  s.ram = RamBackend::anon;
  auto argv = buildQemuCommand(s, p, {"qemu", Accel::tcg, true});
  EXPECT_EQ(valueOf(argv, "-object"), "memory-backend-ram,id=ram0,size=1073741824");
  EXPECT_EQ(valueOf(argv, "-machine"), "q35,memory-backend=ram0");
}

TEST(QemuCommand, DaemonizedWithRunFiles) {
  VmPaths p("/store/vms/vm1");
  auto argv = buildQemuCommand(spec(), p, {"qemu", Accel::kvm, true});
  EXPECT_TRUE(has(argv, "-daemonize"));
  EXPECT_EQ(valueOf(argv, "-pidfile"), "/store/vms/vm1/run/qemu.pid");
  EXPECT_EQ(valueOf(argv, "-chardev", 1), "socket,id=qmp0,path=/store/vms/vm1/run/qmp.sock,server=on,wait=off");
  EXPECT_EQ(valueOf(argv, "-chardev", 0),
            "socket,id=serial0,path=/store/vms/vm1/run/console.sock,server=on,wait=off,"
            "logfile=/store/vms/vm1/run/serial.log,logappend=on");
  EXPECT_EQ(valueOf(argv, "-accel"), "kvm");
  EXPECT_EQ(valueOf(argv, "-kernel"), "/store/vms/vm1/live/kernel");
  EXPECT_EQ(valueOf(argv, "-initrd"), "/store/vms/vm1/live/initrd");
  EXPECT_EQ(valueOf(argv, "-append"), "console=ttyS0 quiet");
  EXPECT_TRUE(has(argv, "virtserialport,bus=vser0.0,chardev=agent0,name=org.vmckpt.agent.0"));
}

TEST(QemuCommand, DisksNetAndExtras) {
  VmSpec s = spec();
  s.kernelBoot = false;
  s.hasInitrd = false;
  s.agent = false;
  s.disks = {{"disk0.qcow2", DiskFormat::qcow2, ""}, {"disk1.raw", DiskFormat::raw, ""}};
  s.net = *parseNet("socket-udp,local=127.0.0.1:4000,remote=127.0.0.1:4001,mac=52:54:00:12:34:56");
  s.extraArgs = {"-device", "virtio-rng-pci"};
  VmPaths p("/s,x/vms/vm1");  // commas in paths are doubled for QEMU
  auto argv = buildQemuCommand(s, p, {"qemu", Accel::tcg, false});
  EXPECT_FALSE(has(argv, "-daemonize"));
  EXPECT_FALSE(has(argv, "-kernel"));
  EXPECT_EQ(valueOf(argv, "-blockdev", 0), "driver=file,node-name=file0,filename=/s,,x/vms/vm1/live/disk0.qcow2,cache.direct=off");
  EXPECT_EQ(valueOf(argv, "-blockdev", 1), "driver=qcow2,node-name=disk0,file=file0");
  EXPECT_EQ(valueOf(argv, "-blockdev", 3), "driver=raw,node-name=disk1,file=file1");
  EXPECT_EQ(valueOf(argv, "-device", 0), "virtio-blk-pci,drive=disk0,id=vblk0,bootindex=0");
  EXPECT_EQ(valueOf(argv, "-netdev"), "socket,id=net0,udp=127.0.0.1:4001,localaddr=127.0.0.1:4000");
  EXPECT_TRUE(has(argv, "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"));
  EXPECT_FALSE(has(argv, "virtio-serial-pci,id=vser0"));
  EXPECT_EQ(argv.back(), "virtio-rng-pci");
}

TEST(QemuCommand, MulticastLanStaysOnLoopback) {
  VmSpec s = spec();
  s.net = *parseNet("socket-mcast,group=239.1.2.3:4567");
  auto argv = buildQemuCommand(s, VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, false});
  EXPECT_EQ(valueOf(argv, "-netdev"), "socket,id=net0,mcast=239.1.2.3:4567,localaddr=127.0.0.1");
}

TEST(QemuCommand, RestoreWaitsStoppedForTheDeviceState) {
  auto argv = buildQemuCommand(spec(), VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, true, true});
  EXPECT_EQ(valueOf(argv, "-incoming"), "defer");
  EXPECT_TRUE(has(argv, "-S"));  // a stream saved from a running guest must not start by itself
  auto boot = buildQemuCommand(spec(), VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, true, false});
  EXPECT_FALSE(has(boot, "-S"));
  EXPECT_FALSE(has(boot, "-incoming"));
}

TEST(QemuCommand, PassthroughDevicesSitInSlotsOfTheirOwnAndARestoreGetsTheEmptySlots) {
  VmSpec s = spec();
  s.passthrough = {*vmckpt::vfio::parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0"),
                   *vmckpt::vfio::parsePassthrough("e1000e,id=nic1")};
  s.deviceMap["pci_gpu0"] = "0000:66:00.0";  // a restore onto another GPU
  auto boot = buildQemuCommand(s, VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, true, false});
  EXPECT_EQ(valueOf(boot, "-global"), "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on");
  EXPECT_TRUE(has(boot, "pcie-root-port,id=vmckpt-slot-gpu0,chassis=64,slot=0"));
  EXPECT_TRUE(has(boot, "vfio-pci,id=gpu0,bus=vmckpt-slot-gpu0,host=0000:66:00.0"));
  EXPECT_TRUE(has(boot, "pcie-root-port,id=vmckpt-slot-nic1,chassis=65,slot=0"));
  EXPECT_TRUE(has(boot, "e1000e,id=nic1,bus=vmckpt-slot-nic1"));
  auto restore = buildQemuCommand(s, VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, true, true});
  EXPECT_TRUE(has(restore, "pcie-root-port,id=vmckpt-slot-gpu0,chassis=64,slot=0"));
  EXPECT_TRUE(has(restore, "pcie-root-port,id=vmckpt-slot-nic1,chassis=65,slot=0"));
  EXPECT_FALSE(has(restore, "vfio-pci,id=gpu0,bus=vmckpt-slot-gpu0,host=0000:66:00.0"));
  EXPECT_FALSE(has(restore, "e1000e,id=nic1,bus=vmckpt-slot-nic1"));
  // Without passthrough devices the command line is what it always was.
  EXPECT_FALSE(has(buildQemuCommand(spec(), VmPaths("/store/vms/vm1"), {"qemu", Accel::tcg, true}), "-global"));
}
