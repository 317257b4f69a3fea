#include "vmm/libvirt/domain_xml.hpp"

#include <gtest/gtest.h>

namespace vmckpt::vmm::libvirt {
namespace {

const char* kDomain = R"(<domain type='kvm'>
  <name>job1</name>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/>
      <source network='default'/>
      <model type='e1000'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br0'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='usb'>
      <source><vendor id='0x1234'/><product id='0x5678'/></source>
    </hostdev>
    <disk type='file' device='disk'><source file='/x.qcow2'/><target dev='vda'/></disk>
  </devices>
</domain>
)";

Result<DomainRewrite> apply(const DeviceMap& m, std::string_view xml = kDomain) { return applyDeviceMap(xml, m); }

TEST(DomainXml, NetUserReplacesEveryInterfaceKeepingItsMac) {
  auto r = apply({{"net", "user"}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_NE(r->xml.find("<interface type=\"user\"><mac address=\"52:54:00:00:00:01\"/><model type=\"e1000\"/></interface>"),
            std::string::npos) << "the guest-visible mac and model stay: " << r->xml;
  EXPECT_NE(r->xml.find("<interface type=\"user\"><model type=\"virtio\"/></interface>"), std::string::npos) << r->xml;
  EXPECT_EQ(r->xml.find("network="), std::string::npos);
  EXPECT_EQ(r->xml.find("br0"), std::string::npos);
  EXPECT_NE(r->xml.find("type=\"pci\""), std::string::npos) << "hostdevs are not net's business";
  ASSERT_EQ(r->changes.size(), 2u);
  EXPECT_EQ(r->changes[0], "interface network 52:54:00:00:00:01 -> user (net=user)");
}

TEST(DomainXml, GpuNoneRemovesPciHostdevsOnly) {
  auto r = apply({{"gpu", "none"}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->xml.find("type=\"pci\""), std::string::npos) << r->xml;
  EXPECT_NE(r->xml.find("type=\"usb\""), std::string::npos);
  EXPECT_NE(r->xml.find("network=\"default\""), std::string::npos);
  ASSERT_EQ(r->changes.size(), 1u);
  EXPECT_EQ(r->changes[0], "removed hostdev pci 0x0000:0x3b:0x00.0x0 (gpu=none)");
  EXPECT_EQ(r->xml.find("\n    \n"), std::string::npos) << "indentation of a removed node is left: " << r->xml;
}

TEST(DomainXml, IbRemovesPciHostdevsAndOtherKeysChangeNothing) {
  auto r = apply({{"ib", "rxe:eth0"}, {"cuda", "none"}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->xml.find("type=\"pci\""), std::string::npos);
  ASSERT_EQ(r->changes.size(), 1u);
  EXPECT_NE(r->changes[0].find("(ib=rxe:eth0)"), std::string::npos);
  auto none = apply({{"cuda", "none"}});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->changes.empty());
  EXPECT_NE(none->xml.find("<name>job1</name>"), std::string::npos);
}

TEST(DomainXml, NetNoneRemovesInterfaces) {
  auto r = apply({{"net", "none"}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->xml.find("<interface"), std::string::npos) << r->xml;
  EXPECT_EQ(r->changes.size(), 2u);
}

TEST(DomainXml, ValuesItCannotApplyAreRefused) {
  auto gpu = apply({{"gpu", "a100"}});
  ASSERT_FALSE(gpu);
  EXPECT_EQ(gpu.error().code(), Errc::unsupported);
  EXPECT_NE(gpu.error().message().find("gpu=a100"), std::string::npos);
  auto net = apply({{"net", "socket-udp"}});
  ASSERT_FALSE(net);
  EXPECT_EQ(net.error().code(), Errc::unsupported);
}

TEST(DomainXml, UntrustedInputIsRefusedInOneLine) {
  for (std::string_view bad : {"", "<domain>", "<notdomain/>", "<domain><name>x</domain>"}) {
    auto r = apply({{"net", "user"}}, bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::invalidArgument) << bad;
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
  }
  // Entities: a DTD is refused outright (no expansion, no external fetch).
  auto laughs = apply({}, R"(<!DOCTYPE domain [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><domain><name>&b;</name></domain>)");
  ASSERT_FALSE(laughs);
  EXPECT_NE(laughs.error().message().find("DOCTYPE"), std::string::npos);
  auto external = apply({}, R"(<!DOCTYPE domain SYSTEM "http://127.0.0.1:1/x.dtd"><domain/>)");
  ASSERT_FALSE(external);
  std::string huge = "<domain>" + std::string(kMaxDomainXmlBytes, ' ') + "</domain>";
  auto big = apply({}, huge);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("allowed"), std::string::npos);
}

}  // namespace
}  // namespace vmckpt::vmm::libvirt
