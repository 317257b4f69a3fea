#include "vmm/migrate_wire.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <string>

#include "common/strings.hpp"
#include "common/unique_fd.hpp"

using namespace vmckpt;
using namespace vmckpt::vmm;
using namespace std::chrono_literals;

namespace {

wire::Offer sampleOffer() {
  wire::Offer o;
  o.sourceVm = "vm1";
  o.spec.name = "vm1";
  o.spec.memoryBytes = 256ull << 20;
  o.spec.kernelBoot = true;
  o.spec.hasInitrd = true;
  o.machine = "pc-q35-7.2";
  o.qemuVersion = "7.2.22";
  o.files = {{"kernel", 1000, std::string(64, 'a')}, {"initrd", 2000, std::string(64, 'b')}};
  return o;
}

// The offer as JSON, changed by `edit`, read back.
Result<wire::Offer> reread(const std::function<void(Json&)>& edit) {
  Json j = sampleOffer().toJson();
  edit(j);
  return wire::Offer::fromJson(j);
}

struct SocketPair {
  UniqueFd a, b;
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
};

}  // namespace

TEST(MigrateWire, OfferRoundTrips) {
  auto o = reread([](Json&) {});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->machine, "pc-q35-7.2");
  ASSERT_EQ(o->files.size(), 2u);
  EXPECT_EQ(o->files[1].name, "initrd");
  EXPECT_FALSE(o->postcopy);
  EXPECT_EQ(o->accel, "") << "an offer without accel (unknown) stays without";
  auto kvm = reread([](Json& j) { j["accel"] = "kvm"; });
  ASSERT_TRUE(kvm) << kvm.error().message();
  EXPECT_EQ(kvm->accel, "kvm");
}

TEST(MigrateWire, UntrustedOffersAreRefusedWithTheReason) {
  struct Case {
    const char* why;
    std::function<void(Json&)> edit;
  };
  const Case cases[] = {
      {"protocol", [](Json& j) { j["protocol"] = 99; }},
      {"spec", [](Json& j) { j.erase("spec"); }},
      {"not acceptable", [](Json& j) { j["spec"]["vcpus"] = "many"; }},
      {"extra QEMU arguments", [](Json& j) { j["spec"]["extra_args"] = {"-chardev", "file,path=/etc/x"}; }},
      {"machine type", [](Json& j) { j["machine"] = "pc,dumpdtb=/tmp/x"; }},
      {"CPU model", [](Json& j) { j["spec"]["cpu"] = "max -snapshot"; }},
      {"disks with their sizes", [](Json& j) { j["spec"]["disks"] = Json::array({{{"file", "disk0.raw"}, {"format", "raw"}}}); }},
      {"boot files", [](Json& j) { j["files"].erase(1); }},
      {"must be kernel", [](Json& j) { j["files"][0]["name"] = "../../etc/passwd"; }},
      {"size must be", [](Json& j) { j["files"][0]["size"] = 1ull << 40; }},
      {"size must be", [](Json& j) { j["files"][1]["size"] = -5; }},
      {"sha256", [](Json& j) { j["files"][0]["sha256"] = "ABC"; }},
      {"postcopy", [](Json& j) { j["postcopy"] = "yes"; }},
      {"accelerator", [](Json& j) { j["accel"] = "auto"; }},
      {"accelerator", [](Json& j) { j["accel"] = "kvm,kernel-irqchip=off"; }},
      {"accelerator", [](Json& j) { j["accel"] = 1; }},
  };
  for (const auto& c : cases) {
    auto o = reread(c.edit);
    ASSERT_FALSE(o) << c.why;
    EXPECT_EQ(o.error().code(), Errc::protocol) << c.why;
    EXPECT_NE(o.error().message().find(c.why), std::string::npos) << o.error().message();
  }
}

// sampleOffer() with a raw and a qcow2 disk.
Json offerWithDisks() {
  wire::Offer o = sampleOffer();
  o.spec.disks = {{"disk0.raw", DiskFormat::raw, "/home/me/raw.img"}, {"disk1.qcow2", DiskFormat::qcow2, ""}};
  o.disks = {{"disk0.raw", DiskFormat::raw, 8ull << 20}, {"disk1.qcow2", DiskFormat::qcow2, 16ull << 30}};
  return o.toJson();
}

TEST(MigrateWire, OfferCarriesEachDiskWithItsVirtualSize) {
  auto o = wire::Offer::fromJson(offerWithDisks());
  ASSERT_TRUE(o) << o.error().message();
  ASSERT_EQ(o->disks.size(), 2u);
  EXPECT_EQ(o->disks[0].file, "disk0.raw");
  EXPECT_EQ(o->disks[0].format, DiskFormat::raw);
  EXPECT_EQ(o->disks[0].virtualSize, 8ull << 20);
  EXPECT_EQ(o->disks[1].file, "disk1.qcow2");
  EXPECT_EQ(o->disks[1].format, DiskFormat::qcow2);
  EXPECT_EQ(o->disks[1].virtualSize, 16ull << 30);
  EXPECT_EQ(o->spec.disks[0].source, "") << "a path on the source host is not kept";
  EXPECT_TRUE(reread([](Json& j) { j.erase("disks"); })) << "a VM without disks may omit the list";
}

TEST(MigrateWire, UntrustedDiskListsAreRefusedWithTheReason) {
  struct Case {
    const char* why;
    std::function<void(Json&)> edit;
  };
  const Case cases[] = {
      {"with their sizes", [](Json& j) { j.erase("disks"); }},
      {"with their sizes", [](Json& j) { j["disks"] = "all"; }},
      {"with their sizes", [](Json& j) { j["disks"].erase(1); }},
      {"must be disk0.raw", [](Json& j) { j["disks"][0]["file"] = "mem"; }},
      {"must be disk0.raw", [](Json& j) { j["spec"]["disks"][0]["file"] = "kernel"; j["disks"][0]["file"] = "kernel"; }},
      {"must be disk1.qcow2", [](Json& j) { j["disks"][1]["format"] = "raw"; }},
      {"must be disk1.qcow2", [](Json& j) { j["disks"][1]["file"] = 7; }},
      {"virtual size", [](Json& j) { j["disks"][0]["virtual_size"] = 0; }},
      {"virtual size", [](Json& j) { j["disks"][0]["virtual_size"] = -512; }},
      {"virtual size", [](Json& j) { j["disks"][0]["virtual_size"] = 1000; }},
      {"virtual size", [](Json& j) { j["disks"][1]["virtual_size"] = wire::kMaxDiskBytes + 512; }},
      {"virtual size", [](Json& j) { j["disks"][1]["virtual_size"] = "16G"; }},
      {"virtual size", [](Json& j) { j["disks"][1].erase("virtual_size"); }},
      {"at most 16", [](Json& j) {
         for (int i = 2; i < 17; ++i) {
           j["spec"]["disks"].push_back({{"file", cat("disk", i, ".raw")}, {"format", "raw"}});
           j["disks"].push_back({{"file", cat("disk", i, ".raw")}, {"format", "raw"}, {"virtual_size", 512}});
         }
       }},
  };
  for (const auto& c : cases) {
    Json j = offerWithDisks();
    c.edit(j);
    auto o = wire::Offer::fromJson(j);
    ASSERT_FALSE(o) << c.why;
    EXPECT_EQ(o.error().code(), Errc::protocol) << c.why;
    EXPECT_NE(o.error().message().find(c.why), std::string::npos) << o.error().message();
  }
}

TEST(MigrateWire, ReadyCarriesAValidNbdPort) {
  auto p = wire::nbdPort({{"type", "ready"}, {"nbd_port", 40000}});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(*p, 40000);
  for (const Json& bad : {Json{{"type", "ready"}}, Json{{"nbd_port", 0}}, Json{{"nbd_port", 65536}},
                          Json{{"nbd_port", "40000"}}, Json{{"nbd_port", -1}}}) {
    auto r = wire::nbdPort(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code(), Errc::protocol);
  }
}

TEST(MigrateWire, FramesCarryExactlyOneMessage) {
  SocketPair s;
  ASSERT_TRUE(wire::sendFrame(s.a.get(), {{"type", "go"}, {"quiesced", true}}, Deadline::in(1s)));
  const std::string after = "QEVM";  // what follows (QEMU's stream) stays unread
  ASSERT_EQ(::write(s.a.get(), after.data(), after.size()), 4);
  auto m = wire::readFrame(s.b.get(), {"go", "abort"}, Deadline::in(1s));
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_TRUE(wire::peerFlag(*m, "quiesced"));
  char rest[4];
  ASSERT_EQ(::read(s.b.get(), rest, 4), 4);
  EXPECT_EQ(std::string(rest, 4), after);

  ASSERT_TRUE(wire::sendFrame(s.a.get(), {{"type", "running"}}, Deadline::in(1s)));
  auto wrong = wire::readFrame(s.b.get(), {"ready", "refused"}, Deadline::in(1s));
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("'running' where ready or refused"), std::string::npos) << wrong.error().message();
}

TEST(MigrateWire, ForeignOrOversizedFramesAreRefused) {
  {
    SocketPair s;
    const char qemu[] = "QEVM\0\0\0\3rest of a stream";
    ASSERT_GT(::write(s.a.get(), qemu, sizeof qemu - 1), 0);
    auto m = wire::readFrame(s.b.get(), {"offer"}, Deadline::in(1s));
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message().find("does not speak"), std::string::npos);
  }
  {
    SocketPair s;
    const char huge[] = {'V', 'M', 'C', 'K', 'M', 'I', 'G', '1', 0x7f, 0, 0, 0};
    ASSERT_EQ(::write(s.a.get(), huge, sizeof huge), static_cast<ssize_t>(sizeof huge));
    auto m = wire::readFrame(s.b.get(), {"offer"}, Deadline::in(1s));
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message().find("at most"), std::string::npos);
  }
}

TEST(MigrateWire, PeerTextIsOneSafeLine) {
  Json j = {{"error", std::string("line1\nline2\x1b[31m") + std::string(1000, 'x')}};
  std::string t = wire::peerText(j, "error");
  EXPECT_EQ(t.find('\n'), std::string::npos);
  EXPECT_EQ(t.find('\x1b'), std::string::npos);
  EXPECT_LE(t.size(), wire::kMaxPeerText + 3);
  EXPECT_EQ(wire::peerText(Json::object(), "error"), "(no reason given)");
  EXPECT_EQ(wire::peerText({{"error", 5}}, "error"), "(no reason given)");
}
