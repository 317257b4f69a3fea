#include "vmm/vm_spec.hpp"

#include <gtest/gtest.h>

#include "vmm/disk_image.hpp"

using namespace vmckpt;
using namespace vmckpt::vmm;

namespace {
VmSpec sample() {
  VmSpec s;
  s.name = "vm1";
  s.vcpus = 2;
  s.memoryBytes = 1ull << 30;
  s.kernelBoot = true;
  s.hasInitrd = true;
  s.append = "console=ttyS0";
  s.net = *parseNet("socket-udp,local=127.0.0.1:5000,remote=127.0.0.1:5001");
  s.disks.push_back({"disk0.qcow2", DiskFormat::qcow2, "/src/d.qcow2"});
  s.extraArgs = {"-device", "virtio-rng-pci"};
  return s;
}
}  // namespace

TEST(VmSpec, RoundTripsThroughJson) {
  VmSpec s = sample();
  auto back = VmSpec::fromJson(s.toJson());
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->toJson(), s.toJson());
  EXPECT_EQ(back->net.local, "127.0.0.1:5000");
  EXPECT_EQ(back->disks[0].format, DiskFormat::qcow2);
}

TEST(VmSpec, ToleratesUnknownKeysAndRefusesNewerFormats) {
  Json j = sample().toJson();
  j["a_future_field"] = {{"x", 1}};
  EXPECT_TRUE(VmSpec::fromJson(j));
  j["format"]["minor"] = VmSpec::kFormatMinor + 1;
  auto r = VmSpec::fromJson(j);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::corrupt);
  EXPECT_NE(r.error().message().find("newer"), std::string::npos);
  j["format"] = {{"major", VmSpec::kFormatMajor + 1}, {"minor", 0}};
  EXPECT_FALSE(VmSpec::fromJson(j));
}

TEST(VmSpec, RejectsDamagedJson) {
  Json j = sample().toJson();
  j.erase("memory_bytes");
  EXPECT_FALSE(VmSpec::fromJson(j));
  j = sample().toJson();
  j["disks"][0]["file"] = "../../etc/passwd";  // never a path outside the VM directory
  EXPECT_FALSE(VmSpec::fromJson(j));
  EXPECT_FALSE(VmSpec::fromJson(Json::array()));
}

TEST(VmSpec, Validation) {
  VmSpec s = sample();
  EXPECT_TRUE(s.validate());
  s.vcpus = 0;
  EXPECT_FALSE(s.validate());
  s = sample();
  s.memoryBytes = 1 << 20;
  EXPECT_FALSE(s.validate());
  s = sample();
  s.kernelBoot = false;
  s.hasInitrd = false;
  s.disks.clear();
  EXPECT_NE(s.validate().error().message().find("nothing to boot"), std::string::npos);
  s = sample();
  s.extraArgs = {"-daemonize"};
  EXPECT_FALSE(s.validate());
}

TEST(VmSpec, Names) {
  EXPECT_TRUE(validateVmName("t1"));
  EXPECT_TRUE(validateVmName("web-01.prod_a"));
  for (const char* bad : {"", ".hidden", "-x", "a/b", "a b", "../x"}) EXPECT_FALSE(validateVmName(bad)) << bad;
  EXPECT_FALSE(validateVmName(std::string(65, 'a')));
}

TEST(VmSpec, NetParsing) {
  EXPECT_EQ(parseNet("user")->mode, NetMode::user);
  EXPECT_FALSE(parseNet("bridge"));
  EXPECT_FALSE(parseNet("user,local=1"));
  VmSpec s = sample();
  s.net = *parseNet("socket-udp,local=127.0.0.1:0,remote=127.0.0.1:5001");
  EXPECT_FALSE(s.validate());
  // A multicast LAN (several guests on one segment): the group must be multicast.
  s.net = *parseNet("socket-mcast,group=239.1.2.3:4567");
  EXPECT_TRUE(s.validate());
  auto back = VmSpec::fromJson(s.toJson());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->net.mode, NetMode::socketMcast);
  EXPECT_EQ(back->net.group, "239.1.2.3:4567");
  s.net = *parseNet("socket-mcast,group=10.0.0.1:4567");
  EXPECT_FALSE(s.validate());
  EXPECT_FALSE(parseNet("socket-mcast,remote=239.1.2.3:4567"));
}

TEST(VmSpec, MacIsStableAndLocal) {
  EXPECT_EQ(defaultMac("vm1"), defaultMac("vm1"));
  EXPECT_NE(defaultMac("vm1"), defaultMac("vm2"));
  EXPECT_EQ(defaultMac("vm1").substr(0, 9), "52:54:00:");
}

TEST(DiskArg, Parsing) {
  auto d = parseDiskArg("/x/y.img,format=raw");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->path, "/x/y.img");
  EXPECT_EQ(*d->format, DiskFormat::raw);
  EXPECT_FALSE(parseDiskArg("/x,format=vmdk"));
  EXPECT_FALSE(parseDiskArg("/x,cache=none"));
}

TEST(VmSpec, PassthroughDevicesAreFormat12AndOlderSpecsStillRead) {
  VmSpec s = sample();
  EXPECT_EQ(s.toJson()["format"]["minor"], 1);  // no passthrough: readable by a 1.1 vmckpt
  s.passthrough = {*vfio::parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0")};
  Json j = s.toJson();
  EXPECT_EQ(j["format"]["minor"], 2);
  auto back = VmSpec::fromJson(j);
  ASSERT_TRUE(back) << back.error().message();
  ASSERT_EQ(back->passthrough.size(), 1u);
  EXPECT_EQ(back->passthrough[0], s.passthrough[0]);
  // A 1.1 spec has no passthrough key.
  Json old = sample().toJson();
  old["format"]["minor"] = 1;
  auto o = VmSpec::fromJson(old);
  ASSERT_TRUE(o);
  EXPECT_TRUE(o->passthrough.empty());
  // Planted or damaged entries are refused like user input.
  j["passthrough"][0]["props"][0][1] = "0000:65:00.0,x-evil=1";
  EXPECT_FALSE(VmSpec::fromJson(j));
}

TEST(VmSpec, PassthroughNeedsQ35AndAMapThatApplies) {
  VmSpec s = sample();
  s.passthrough = {*vfio::parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0")};
  EXPECT_TRUE(s.validate());
  s.deviceMap["pci_gpu0"] = "0000:66:00.0";
  EXPECT_TRUE(s.validate());
  EXPECT_EQ(s.passthroughHere()[0].prop("host"), "0000:66:00.0");
  EXPECT_EQ(s.passthrough[0].prop("host"), "0000:65:00.0");  // the spec keeps what was created
  s.deviceMap["pci_gpu7"] = "0000:66:00.0";
  EXPECT_FALSE(s.validate());
  s.deviceMap.erase("pci_gpu7");
  s.machine = "pc";
  auto v = s.validate();
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().message(), "passthrough devices need the q35 machine (this VM's is pc)");
}
