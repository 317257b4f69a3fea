#include "vmm/libvirt/domain_inspect.hpp"

#include <gtest/gtest.h>

#include <string>

#include "vmm/libvirt/domain_xml.hpp"

namespace vmckpt::vmm::libvirt {
namespace {

// As `virsh dumpxml` writes a running domain (trimmed).
const char* kLiveDomain = R"(<domain type='kvm' id='7'>
  <name>job1</name>
  <uuid>6a1c3e2e-3f1b-4d0b-9a55-0e0c1c1f7c11</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>2</vcpu>
  <cpu mode='host-passthrough'/>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/job1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/scratch'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
      <shareable/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/image'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk>
      <source file='/images/plain.img'/>
      <target dev='vdd'/>
    </disk>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-job1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-job1/org.vmckpt.agent.0'/>
      <target type='virtio' name='org.vmckpt.agent.0' state='connected'/>
    </channel>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='usb'/>
  </devices>
</domain>
)";

DomainInfo inspect(std::string_view xml) {
  auto r = inspectDomainXml(xml);
  EXPECT_TRUE(r) << r.error().message();
  return r ? *r : DomainInfo{};
}

TEST(DomainInspectXml, ReadsWhatVmckptNeedsFromALiveDomain) {
  DomainInfo d = inspect(kLiveDomain);
  EXPECT_EQ(d.name, "job1");
  EXPECT_EQ(d.uuid, "6a1c3e2e-3f1b-4d0b-9a55-0e0c1c1f7c11");
  EXPECT_EQ(d.type, "kvm");
  EXPECT_TRUE(d.memoryFileShared);
  EXPECT_EQ(d.memorySource, "file");
  EXPECT_FALSE(d.hugepages);
  EXPECT_FALSE(d.numa);
  EXPECT_TRUE(d.agentChannel);
  EXPECT_EQ(d.agentSocket, "/var/lib/libvirt/qemu/channel/target/domain-7-job1/org.vmckpt.agent.0");
  EXPECT_EQ(d.hostdevs, 2);
  ASSERT_EQ(d.disks.size(), 5u);
  const DomainDisk& a = d.disks[0];
  EXPECT_EQ(a.device, "disk");
  EXPECT_EQ(a.type, "file");
  EXPECT_EQ(a.source, "/var/lib/libvirt/images/job1.qcow2");
  EXPECT_EQ(a.format, "qcow2");
  EXPECT_EQ(a.target, "vda");
  EXPECT_FALSE(a.readonly);
  EXPECT_FALSE(a.shareable);
  const DomainDisk& b = d.disks[1];
  EXPECT_EQ(b.type, "block");
  EXPECT_EQ(b.source, "/dev/vg0/scratch");
  EXPECT_EQ(b.format, "raw");
  EXPECT_TRUE(b.readonly);
  EXPECT_TRUE(b.shareable);
  const DomainDisk& cd = d.disks[2];
  EXPECT_EQ(cd.device, "cdrom");
  EXPECT_EQ(cd.source, "") << "an empty drive";
  EXPECT_TRUE(cd.readonly) << "a cdrom is read-only without <readonly/>";
  const DomainDisk& net = d.disks[3];
  EXPECT_EQ(net.type, "network");
  EXPECT_EQ(net.source, "") << "a network source has no path";
  EXPECT_EQ(net.target, "vdc");
  const DomainDisk& plain = d.disks[4];
  EXPECT_EQ(plain.device, "disk") << "libvirt's defaults";
  EXPECT_EQ(plain.type, "file");
  EXPECT_EQ(plain.source, "/images/plain.img");
  EXPECT_EQ(plain.format, "");
}

TEST(DomainInspectXml, MemoryBackingVariants) {
  auto backing = [](std::string_view inner) {
    return inspect(std::string("<domain type='qemu'><name>x</name><memoryBacking>") + std::string(inner) +
                   "</memoryBacking></domain>");
  };
  DomainInfo memfd = backing("<source type='memfd'/><access mode='shared'/>");
  EXPECT_EQ(memfd.memorySource, "memfd");
  EXPECT_FALSE(memfd.memoryFileShared);
  DomainInfo priv = backing("<source type='file'/><access mode='private'/>");
  EXPECT_FALSE(priv.memoryFileShared);
  DomainInfo noAccess = backing("<source type='file'/>");
  EXPECT_FALSE(noAccess.memoryFileShared);
  DomainInfo huge = backing("<hugepages/><source type='file'/><access mode='shared'/>");
  EXPECT_TRUE(huge.hugepages);
  EXPECT_TRUE(huge.memoryFileShared);

  DomainInfo none = inspect("<domain type='qemu'><name>x</name></domain>");
  EXPECT_EQ(none.memorySource, "");
  EXPECT_FALSE(none.memoryFileShared);
  EXPECT_EQ(none.type, "qemu");
  EXPECT_TRUE(none.disks.empty());
  EXPECT_EQ(none.hostdevs, 0);

  DomainInfo numa = inspect(
      "<domain><cpu><numa><cell id='0' cpus='0' memory='1' unit='GiB'/><cell id='1' cpus='1' memory='1' "
      "unit='GiB'/></numa></cpu></domain>");
  EXPECT_TRUE(numa.numa);
}

TEST(DomainInspectXml, AgentChannelNeedsAUnixVirtioChannelWithItsName) {
  auto channel = [](std::string_view c) {
    return inspect(std::string("<domain><devices>") + std::string(c) + "</devices></domain>");
  };
  DomainInfo pty = channel("<channel type='pty'><target type='virtio' name='org.vmckpt.agent.0'/></channel>");
  EXPECT_FALSE(pty.agentChannel);
  DomainInfo other = channel("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>");
  EXPECT_FALSE(other.agentChannel);
  DomainInfo xen = channel("<channel type='unix'><target type='xen' name='org.vmckpt.agent.0'/></channel>");
  EXPECT_FALSE(xen.agentChannel);
  DomainInfo inactive =
      channel("<channel type='unix'><source mode='bind'/><target type='virtio' name='org.vmckpt.agent.0'/></channel>");
  EXPECT_TRUE(inactive.agentChannel);
  EXPECT_EQ(inactive.agentSocket, "") << "libvirt fills the path in only when the domain runs";
  DomainInfo connect = channel(
      "<channel type='unix'><source mode='connect' path='/tmp/s'/><target type='virtio' name='org.vmckpt.agent.0'/></channel>");
  EXPECT_TRUE(connect.agentChannel);
  EXPECT_EQ(connect.agentSocket, "") << "QEMU connects to that socket: not one vmckpt can use";
}

TEST(DomainInspectXml, ElementsInOtherNamespacesAreNotLibvirts) {
  DomainInfo d = inspect(R"(<domain xmlns:x='urn:x'><x:name>evil</x:name><name>good</name><devices>
    <x:disk type='file'><source file='/etc/shadow'/></x:disk><x:hostdev/>
    <channel type='unix'><x:target type='virtio' name='org.vmckpt.agent.0'/></channel>
  </devices></domain>)");
  EXPECT_EQ(d.name, "good");
  EXPECT_TRUE(d.disks.empty());
  EXPECT_EQ(d.hostdevs, 0);
  EXPECT_FALSE(d.agentChannel);
}

TEST(DomainInspectXml, UntrustedInputIsRefusedInOneLine) {
  for (std::string_view bad :
       {"", "<domain>", "<notdomain/>", "<domain><name>x</domain>", "<x:domain xmlns:x='urn:x'/>",
        "<domain><name>&undefined;</name></domain>",
        R"(<!DOCTYPE domain [<!ENTITY a "aaaaaaaa">]><domain><name>&a;</name></domain>)",
        R"(<!DOCTYPE domain SYSTEM "http://127.0.0.1:1/x.dtd"><domain/>)"}) {
    auto r = inspectDomainXml(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::invalidArgument) << bad;
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
  }
  std::string deep = "<domain>";
  for (int i = 0; i < 5000; ++i) deep += "<a>";
  for (int i = 0; i < 5000; ++i) deep += "</a>";
  auto tooDeep = inspectDomainXml(deep + "</domain>");
  EXPECT_FALSE(tooDeep) << "nesting stays within libxml2's default limit";
  auto big = inspectDomainXml("<domain>" + std::string(kMaxDomainXmlBytes, ' ') + "</domain>");
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("allowed"), std::string::npos);
}

TEST(IncomingDeferXml, AddsQemuCommandlineLaidOutLikeLibvirt) {
  auto r = withIncomingDefer(R"(<domain type='kvm'>
  <name>job1</name>
  <memory unit='KiB'>1048576</memory>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
</domain>
)");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>job1</name>
  <memory unit='KiB'>1048576</memory>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-incoming'/>
    <qemu:arg value='defer'/>
  </qemu:commandline>
</domain>
)");
  auto again = withIncomingDefer(*r);
  ASSERT_FALSE(again) << "a second -incoming would make QEMU fail to start";
  EXPECT_EQ(again.error().code(), Errc::invalidArgument);
}

TEST(IncomingDeferXml, CompactXmlStaysCompact) {
  auto r = withIncomingDefer("<domain type='kvm'><name>a</name></domain>");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r,
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>a</name><qemu:commandline>"
            "<qemu:arg value='-incoming'/><qemu:arg value='defer'/></qemu:commandline></domain>\n");
}

TEST(IncomingDeferXml, ReusesTheExistingPrefixAndCommandline) {
  auto r = withIncomingDefer(R"(<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>job1</name>
  <q:commandline>
    <q:arg value='-S'/>
  </q:commandline>
</domain>)");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, R"(<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>job1</name>
  <q:commandline>
    <q:arg value='-S'/>
    <q:arg value='-incoming'/>
    <q:arg value='defer'/>
  </q:commandline>
</domain>
)");
}

TEST(IncomingDeferXml, PrefixBoundToAnotherNamespaceIsNotReused) {
  auto r = withIncomingDefer(
      "<domain xmlns:qemu='urn:not-qemu' xmlns:qemu1='urn:other'><qemu:commandline><qemu:arg value='-incoming'/>"
      "</qemu:commandline></domain>");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r,
            "<domain xmlns:qemu='urn:not-qemu' xmlns:qemu1='urn:other' "
            "xmlns:qemu2='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:commandline><qemu:arg value='-incoming'/>"
            "</qemu:commandline><qemu2:commandline><qemu2:arg value='-incoming'/><qemu2:arg value='defer'/>"
            "</qemu2:commandline></domain>\n");
}

TEST(IncomingDeferXml, RefusesAnyExistingIncoming) {
  for (std::string_view value : {"-incoming", "--incoming"}) {
    std::string xml = "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:commandline>"
                      "<qemu:arg value='-S'/></qemu:commandline><qemu:commandline><qemu:arg value='" +
                      std::string(value) + "'/><qemu:arg value='tcp:0:4444'/></qemu:commandline></domain>";
    auto r = withIncomingDefer(xml);
    ASSERT_FALSE(r) << value;
    EXPECT_NE(r.error().message().find("-incoming"), std::string::npos);
  }
  EXPECT_FALSE(withIncomingDefer("<domain><devices></domain>"));
}

TEST(IncomingDeferXml, KeepsCommentsEscapesAndOtherContent) {
  const std::string in =
      "<domain type='kvm'><!-- made by hand --><name>a&amp;b</name><description>x &lt; y &apos;q&apos; \"d\""
      "</description><metadata><app:data xmlns:app='urn:app' k='1&#10;2'><![CDATA[<raw>]]></app:data></metadata>"
      "<?pi data?></domain>";
  auto r = withIncomingDefer(in);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r,
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><!-- made by hand -->"
            "<name>a&amp;b</name><description>x &lt; y &apos;q&apos; &quot;d&quot;</description><metadata>"
            "<app:data k='1&#10;2' xmlns:app='urn:app'><![CDATA[<raw>]]></app:data></metadata><?pi data?>"
            "<qemu:commandline><qemu:arg value='-incoming'/><qemu:arg value='defer'/></qemu:commandline></domain>\n");
  auto info = inspectDomainXml(*r);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->name, "a&b");
}

}  // namespace
}  // namespace vmckpt::vmm::libvirt
