#include "vmm/store/manifest.hpp"

#include <gtest/gtest.h>

using namespace vmckpt;
using namespace vmckpt::vmm;

namespace {

store::Manifest liveManifest() {
  store::Manifest m;
  m.id = "20261122-000000-abcd";
  m.vm = "vm1";
  m.spec.name = "vm1";
  m.spec.memoryBytes = 256ull << 20;
  m.spec.ram = RamBackend::anon;
  m.spec.kernelBoot = true;
  m.ram = store::SnapshotRam::stream;
  m.files = {{store::kStateStreamFile, 200ull << 20, ""}};
  m.timings.streamMs = 640;
  return m;
}

}  // namespace

TEST(Manifest, LiveSnapshotRoundTripsWithItsStream) {
  auto m = store::Manifest::fromJson(liveManifest().toJson());
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->ram, store::SnapshotRam::stream);
  EXPECT_EQ(m->spec.ram, RamBackend::anon);
  EXPECT_DOUBLE_EQ(m->timings.streamMs, 640);
  EXPECT_STREQ(store::streamFileName(m->ram), "state");
  EXPECT_STREQ(store::streamFileName(store::SnapshotRam::file), "devstate");
}

TEST(Manifest, FormatOneZeroWithoutRamKeepsItInTheRamFile) {
  Json j = liveManifest().toJson();
  j.erase("ram");
  j["format"]["minor"] = 0;
  auto m = store::Manifest::fromJson(j);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->ram, store::SnapshotRam::file);
}

TEST(Manifest, UnknownRamKindsAndNewerFormatsAreRefused) {
  Json j = liveManifest().toJson();
  j["ram"] = "compressed";
  auto unknown = store::Manifest::fromJson(j);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), Errc::corrupt);
  EXPECT_NE(unknown.error().message().find("'compressed'"), std::string::npos) << unknown.error().message();
  j["ram"] = 1;
  EXPECT_FALSE(store::Manifest::fromJson(j));
  j = liveManifest().toJson();
  j["format"]["minor"] = store::Manifest::kFormatMinor + 1;
  auto newer = store::Manifest::fromJson(j);
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("newer than this vmckpt understands"), std::string::npos);
}

TEST(Manifest, GroupRoundTripsAndOnlyItNeedsFormatOneTwo) {
  store::Manifest plain = liveManifest();
  EXPECT_EQ(plain.toJson()["format"]["minor"], 1) << "a snapshot without a group stays readable by 1.1 readers";
  EXPECT_FALSE(plain.toJson().contains("group"));

  store::Manifest grouped = liveManifest();
  grouped.group = store::SnapshotGroup{"job1", "20261122-000001-beef", {"vm1", "vm2"}};
  Json j = grouped.toJson();
  EXPECT_EQ(j["format"]["minor"], 2);
  auto m = store::Manifest::fromJson(j);
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_TRUE(m->group);
  EXPECT_EQ(m->group->name, "job1");
  EXPECT_EQ(m->group->id, "20261122-000001-beef");
  EXPECT_EQ(m->group->vms, (std::vector<std::string>{"vm1", "vm2"}));

  for (Json bad : {Json("job1"), Json({{"name", "job1"}, {"id", "../x"}, {"vms", {"vm1"}}}),
                   Json({{"name", "job1"}, {"id", "g"}, {"vms", Json::array()}}), Json({{"name", "job1"}})}) {
    Json k = j;
    k["group"] = bad;
    auto r = store::Manifest::fromJson(k);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code(), Errc::corrupt) << bad.dump();
  }
}

// A plugin that closed its devices before the capture says so in its quiesce answer's
// data; only a well-formed {"released": true} counts (the guest wrote it), and it
// survives the manifest's round trip.
TEST(Manifest, DevicesReleasedOnlyWhenAPluginSaidSo) {
  store::Manifest m = liveManifest();
  EXPECT_FALSE(m.devicesReleased());
  m.agentPlugins = Json::array({Json({{"name", "ib"}, {"result", "done"}})});
  EXPECT_FALSE(m.devicesReleased());
  for (Json bad :
       {Json("released"), Json({{"released", "true"}}), Json({{"released", 1}}), Json({{"released", false}})}) {
    m.agentPlugins = Json::array({Json({{"name", "ib"}, {"data", bad}})});
    EXPECT_FALSE(m.devicesReleased()) << bad.dump();
  }
  m.agentPlugins =
      Json::array({Json(7), Json({{"name", "gl"}}), Json({{"name", "ib"}, {"data", {{"released", true}}}})});
  EXPECT_TRUE(m.devicesReleased());
  auto back = store::Manifest::fromJson(m.toJson());
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_TRUE(back->devicesReleased());
}

// Found by the manifest fuzzer: a number that does not fit (here a float far beyond int)
// used to be converted with undefined behaviour. Every integer member is checked now.
TEST(Manifest, NumbersThatAreNotIntegersInRangeAreCorrupt) {
  for (const char* bad : {"8.9e77", "1.5", "99999999999999999999"}) {
    Json j = liveManifest().toJson();
    j["format"]["minor"] = Json::parse(bad);
    auto m = store::Manifest::fromJson(j);
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(m.error().code(), Errc::corrupt) << bad;
  }
  Json j = liveManifest().toJson();
  j["devstate_bytes"] = -5;
  EXPECT_FALSE(store::Manifest::fromJson(j));
  j = liveManifest().toJson();
  j["spec"]["vcpus"] = 1e30;
  EXPECT_FALSE(store::Manifest::fromJson(j));
  j = liveManifest().toJson();
  j["files"][0]["size"] = 2.5;
  EXPECT_FALSE(store::Manifest::fromJson(j));
}

TEST(Manifest, UnpluggedPassthroughDevicesRoundTripAsFormatOneThree) {
  store::Manifest m = liveManifest();
  m.spec.passthrough = {*vfio::parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0")};
  EXPECT_EQ(m.toJson()["format"]["minor"], 1);
  m.unplugged = {"gpu0"};
  Json j = m.toJson();
  EXPECT_EQ(j["format"]["minor"], 3);
  EXPECT_EQ(j["passthrough"], (Json{{"unplugged", {"gpu0"}}}));
  auto back = store::Manifest::fromJson(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->unplugged, (std::vector<std::string>{"gpu0"}));
  j["passthrough"]["unplugged"] = {"gpu9"};  // a device its spec does not have
  EXPECT_FALSE(store::Manifest::fromJson(j));
}
