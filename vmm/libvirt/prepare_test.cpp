#include "vmm/libvirt/prepare.hpp"

#include <gtest/gtest.h>

#include <string>

#include "vmm/libvirt/domain_inspect.hpp"
#include "vmm/libvirt/domain_xml.hpp"

namespace vmckpt::vmm::libvirt {
namespace {

// As `virsh dumpxml --inactive` writes a domain that vmckpt has not prepared (trimmed).
const char* kUnpreparedDomain = R"(<domain type='kvm'>
  <name>job1</name>
  <uuid>6a1c3e2e-3f1b-4d0b-9a55-0e0c1c1f7c11</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/job1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>
)";

const char* kPrepared = R"(<domain type='kvm'>
  <name>job1</name>
  <uuid>6a1c3e2e-3f1b-4d0b-9a55-0e0c1c1f7c11</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/job1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
</domain>
)";

PrepareResult prepare(std::string_view xml) {
  auto r = prepareDomainXml(xml);
  EXPECT_TRUE(r) << r.error().message();
  return r ? *r : PrepareResult{};
}

TEST(PrepareDomainXml, AddsMemoryBackingAndAgentChannelWhereLibvirtWritesThem) {
  PrepareResult p = prepare(kUnpreparedDomain);
  EXPECT_EQ(p.xml, kPrepared);
  EXPECT_EQ(p.changes, (std::vector<std::string>{"added <source type='file'/> to <memoryBacking>",
                                                 "added <access mode='shared'/> to <memoryBacking>",
                                                 "added <channel type='unix'> org.vmckpt.agent.0 for the vmckpt guest agent"}));
  EXPECT_TRUE(p.notes.empty());
  // Lines libvirt wrote come back as they were: the diff shows only the additions.
  EXPECT_EQ(unifiedDiff(kUnpreparedDomain, p.xml, "job1 (now)", "job1 (prepared)"), R"(--- job1 (now)
+++ job1 (prepared)
@@ -3,6 +3,10 @@
   <uuid>6a1c3e2e-3f1b-4d0b-9a55-0e0c1c1f7c11</uuid>
   <memory unit='KiB'>2097152</memory>
   <currentMemory unit='KiB'>2097152</currentMemory>
+  <memoryBacking>
+    <source type='file'/>
+    <access mode='shared'/>
+  </memoryBacking>
   <vcpu placement='static'>2</vcpu>
   <os>
     <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
@@ -18,5 +22,9 @@
     <channel type='unix'>
       <target type='virtio' name='org.qemu.guest_agent.0'/>
     </channel>
+    <channel type='unix'>
+      <source mode='bind'/>
+      <target type='virtio' name='org.vmckpt.agent.0'/>
+    </channel>
   </devices>
 </domain>
)");
}

TEST(PrepareDomainXml, SecondRunChangesNothingAndTheResultInspectsReady) {
  PrepareResult first = prepare(kUnpreparedDomain);
  PrepareResult second = prepare(first.xml);
  EXPECT_TRUE(second.changes.empty());
  EXPECT_EQ(second.xml, first.xml);
  auto info = inspectDomainXml(first.xml);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(info->memoryFileShared);
  EXPECT_TRUE(info->agentChannel);
  EXPECT_EQ(info->name, "job1");
  EXPECT_EQ(info->disks.size(), 1u);
}

TEST(PrepareDomainXml, ReadyDomainComesBackByteForByte) {
  // Double quotes and an XML declaration, which a rewrite would not keep: nothing to change, nothing rewritten.
  const std::string ready = R"(<?xml version="1.0"?>
<domain type="kvm"><memoryBacking><source type="file"/><access mode="shared"/></memoryBacking>
<devices><channel type="unix"><target type="virtio" name="org.vmckpt.agent.0"/></channel></devices></domain>)";
  PrepareResult p = prepare(ready);
  EXPECT_TRUE(p.changes.empty());
  EXPECT_TRUE(p.notes.empty());
  EXPECT_EQ(p.xml, ready);
  EXPECT_EQ(unifiedDiff(ready, p.xml, "a", "b"), "");
}

TEST(PrepareDomainXml, ReplacesMemfdAndPrivateAndKeepsOtherBackingSettings) {
  PrepareResult p = prepare(R"(<domain type='kvm'>
  <memory unit='KiB'>1048576</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='private'/>
    <locked/>
  </memoryBacking>
  <devices>
    <channel type='unix'>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
</domain>
)");
  EXPECT_EQ(p.xml, R"(<domain type='kvm'>
  <memory unit='KiB'>1048576</memory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
    <locked/>
  </memoryBacking>
  <devices>
    <channel type='unix'>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
</domain>
)");
  EXPECT_EQ(p.changes, (std::vector<std::string>{"<memoryBacking>: <source type='memfd'/> -> <source type='file'/>",
                                                 "<memoryBacking>: <access mode='private'/> -> <access mode='shared'/>"}));
}

TEST(PrepareDomainXml, CompletesAPartialMemoryBacking) {
  PrepareResult p = prepare(R"(<domain type='kvm'>
  <memory unit='KiB'>1048576</memory>
  <memoryBacking>
    <nosharepages/>
  </memoryBacking>
  <devices>
  </devices>
</domain>
)");
  EXPECT_EQ(p.xml, R"(<domain type='kvm'>
  <memory unit='KiB'>1048576</memory>
  <memoryBacking>
    <nosharepages/>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <devices>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
</domain>
)");
  PrepareResult empty =
      prepare("<domain>\n  <memoryBacking/>\n  <memoryBacking><source type='file'/></memoryBacking>\n</domain>\n");
  EXPECT_EQ(empty.xml, R"(<domain>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <memoryBacking><source type='file'/></memoryBacking>
  <devices>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
</domain>
)") << "the first <memoryBacking> is libvirt's";
}

TEST(PrepareDomainXml, HugepagesAndNumaAreLeftWithANote) {
  PrepareResult p = prepare(R"(<domain type='kvm'>
  <memoryBacking>
    <hugepages/>
  </memoryBacking>
  <cpu>
    <numa>
      <cell id='0' cpus='0-1' memory='1' unit='GiB'/>
    </numa>
  </cpu>
  <devices>
    <channel type='unix'><source mode='bind'/><target type='virtio' name='org.vmckpt.agent.0'/></channel>
  </devices>
</domain>
)");
  EXPECT_TRUE(p.changes.empty());
  ASSERT_EQ(p.notes.size(), 2u);
  EXPECT_NE(p.notes[0].find("hugepages"), std::string::npos) << p.notes[0];
  EXPECT_NE(p.notes[0].find("live (background) snapshots"), std::string::npos) << p.notes[0];
  EXPECT_NE(p.notes[1].find("numa"), std::string::npos) << p.notes[1];
  EXPECT_EQ(p.xml.find("<source type='file'/>"), std::string::npos);
}

TEST(PrepareDomainXml, AChannelWithTheAgentNameIsNeverAddedTwice) {
  PrepareResult p = prepare(
      "<domain><memoryBacking><source type='file'/><access mode='shared'/></memoryBacking><devices>"
      "<channel type='pty'><target type='virtio' name='org.vmckpt.agent.0'/></channel></devices></domain>");
  EXPECT_TRUE(p.changes.empty());
  ASSERT_EQ(p.notes.size(), 1u);
  EXPECT_NE(p.notes[0].find("not a unix virtio channel"), std::string::npos) << p.notes[0];
}

TEST(PrepareDomainXml, MissingDevicesAreCreatedInPlace) {
  PrepareResult compact = prepare("<domain type='qemu'><name>a</name><memory>1</memory></domain>");
  EXPECT_EQ(compact.xml,
            "<domain type='qemu'><name>a</name><memory>1</memory><memoryBacking><source type='file'/>"
            "<access mode='shared'/></memoryBacking><devices><channel type='unix'><source mode='bind'/>"
            "<target type='virtio' name='org.vmckpt.agent.0'/></channel></devices></domain>\n");

  PrepareResult indented = prepare(R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>a</name>
  <seclabel type='dynamic' model='selinux'/>
  <qemu:commandline>
    <qemu:arg value='-S'/>
  </qemu:commandline>
</domain>
)");
  EXPECT_EQ(indented.xml, R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>a</name>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <devices>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.vmckpt.agent.0'/>
    </channel>
  </devices>
  <seclabel type='dynamic' model='selinux'/>
  <qemu:commandline>
    <qemu:arg value='-S'/>
  </qemu:commandline>
</domain>
)");
  EXPECT_TRUE(prepare(indented.xml).changes.empty());
}

TEST(PrepareDomainXml, HostileValuesAreEscapedAndNotEchoedRaw) {
  PrepareResult p = prepare(
      "<domain><description>&lt;/domain&gt; &amp; &apos;</description><memoryBacking>"
      "<source type='&#10;]0;pwned&#127;&#x9b;[31m'/><access mode='shared'/></memoryBacking><devices>"
      "<channel type='unix'><target type='virtio' name='org.vmckpt.agent.0'/></channel></devices></domain>");
  ASSERT_EQ(p.changes.size(), 1u);
  EXPECT_EQ(p.changes[0], "<memoryBacking>: <source type='?]0;pwned??[31m'/> -> <source type='file'/>");
  EXPECT_NE(p.xml.find("<description>&lt;/domain&gt; &amp; &apos;</description>"), std::string::npos) << p.xml;
  auto info = inspectDomainXml(p.xml);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(info->memoryFileShared);
}

TEST(PrepareDomainXml, UntrustedInputIsRefusedInOneLine) {
  for (std::string_view bad : {"", "<domain>", "<notdomain/>", "<domain><name>x</domain>",
                               R"(<!DOCTYPE domain [<!ENTITY a "aaaaaaaa">]><domain><name>&a;</name></domain>)",
                               R"(<!DOCTYPE domain SYSTEM "http://127.0.0.1:1/x.dtd"><domain/>)"}) {
    auto r = prepareDomainXml(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::invalidArgument) << bad;
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << r.error().message();
  }
  auto big = prepareDomainXml("<domain>" + std::string(kMaxDomainXmlBytes, ' ') + "</domain>");
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("allowed"), std::string::npos);
}

// Expected outputs below are those of GNU `diff -u --label x --label y`.
std::string diff(std::string_view a, std::string_view b) { return unifiedDiff(a, b, "x", "y"); }

std::string numbers(int n, int changedA = 0, int changedB = 0) {
  std::string s;
  for (int i = 1; i <= n; ++i)
    s += (i == changedA || i == changedB ? "changed " : "") + std::to_string(i) + "\n";
  return s;
}

TEST(UnifiedDiff, EqualTextsGiveNothing) {
  EXPECT_EQ(diff("", ""), "");
  EXPECT_EQ(diff("a\nb\n", "a\nb\n"), "");
  EXPECT_EQ(diff("a\nb", "a\nb"), "");
}

TEST(UnifiedDiff, InsertionAtStartAndEnd) {
  EXPECT_EQ(diff("b\nc\nd\n", "a\nb\nc\nd\n"), "--- x\n+++ y\n@@ -1,3 +1,4 @@\n+a\n b\n c\n d\n");
  EXPECT_EQ(diff("a\nb\nc\nd\ne\n", "a\nb\nc\nd\ne\nf\n"), "--- x\n+++ y\n@@ -3,3 +3,4 @@\n c\n d\n e\n+f\n");
}

TEST(UnifiedDiff, EmptySides) {
  EXPECT_EQ(diff("", "a\n"), "--- x\n+++ y\n@@ -0,0 +1 @@\n+a\n");
  EXPECT_EQ(diff("a\nb\n", ""), "--- x\n+++ y\n@@ -1,2 +0,0 @@\n-a\n-b\n");
}

TEST(UnifiedDiff, NoTrailingNewline) {
  EXPECT_EQ(diff("a\nb", "a\nb\n"), "--- x\n+++ y\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
  EXPECT_EQ(diff("a\nb\n", "a\nc"), "--- x\n+++ y\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n");
}

TEST(UnifiedDiff, ReplacementShowsRemovedLinesFirst) {
  EXPECT_EQ(diff("a\nb\nc\n", "a\nB\nc\n"), "--- x\n+++ y\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
  EXPECT_EQ(diff("a\nb\nc\nd\n", "x\ny\n"), "--- x\n+++ y\n@@ -1,4 +1,2 @@\n-a\n-b\n-c\n-d\n+x\n+y\n");
}

TEST(UnifiedDiff, ChangesMoreThanSixLinesApartMakeTwoHunks) {
  EXPECT_EQ(diff(numbers(14), numbers(14, 3, 11)),
            "--- x\n+++ y\n"
            "@@ -1,6 +1,6 @@\n 1\n 2\n-3\n+changed 3\n 4\n 5\n 6\n"
            "@@ -8,7 +8,7 @@\n 8\n 9\n 10\n-11\n+changed 11\n 12\n 13\n 14\n");
  EXPECT_EQ(diff(numbers(20), numbers(20, 3, 10)),
            "--- x\n+++ y\n"
            "@@ -1,13 +1,13 @@\n 1\n 2\n-3\n+changed 3\n 4\n 5\n 6\n 7\n 8\n 9\n-10\n+changed 10\n 11\n 12\n 13\n");
}

TEST(UnifiedDiff, AnInsertedBlockEndsWhereItsLastLineIsNew) {
  // "</c>" closes both the old and the new block: the new block is the one shown added.
  EXPECT_EQ(diff("x\n</c>\n</d>\n", "x\n</c>\n<c>\ns\n</c>\n</d>\n"),
            "--- x\n+++ y\n@@ -1,3 +1,6 @@\n x\n </c>\n+<c>\n+s\n+</c>\n </d>\n");
  EXPECT_EQ(diff("p\n<t a/>\n</c>\nq\n", "p\n<t a/>\n</c>\n<c>\n<t b/>\n</c>\nq\n"),
            "--- x\n+++ y\n@@ -1,4 +1,7 @@\n p\n <t a/>\n </c>\n+<c>\n+<t b/>\n+</c>\n q\n");
}

TEST(UnifiedDiff, PastItsTableLimitTheChangedMiddleIsShownReplacedWhole) {
  std::string a = "head\n", b = "head\n";
  for (int i = 0; i < 5000; ++i) {
    a += "a" + std::to_string(i) + "\n";
    b += "b" + std::to_string(i) + "\n";
  }
  std::string d = diff(a + "tail\n", b + "tail\n");
  EXPECT_EQ(d.substr(0, d.find('\n', 20) + 1), "--- x\n+++ y\n@@ -1,5002 +1,5002 @@\n");
  EXPECT_NE(d.find("\n-a4999\n+b0\n"), std::string::npos);
  EXPECT_EQ(d.substr(d.size() - 14), "\n+b4999\n tail\n");
}

}  // namespace
}  // namespace vmckpt::vmm::libvirt
