// The CONNECT half of the rebuild with no device open: what a member published (through
// the host, from another guest: untrusted) is checked before any table changes, and a
// well-formed table set is what the data path then translates with.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ids.hpp"
#include "rebuild.hpp"

using vmckpt::ib::connectPeers;
using vmckpt::ib::translation;
using Json = nlohmann::json;

namespace {

// ::ffff:10.77.0.<last>, the GIDs the application holds.
ibv_gid gidOf(uint8_t last) {
  ibv_gid g{};
  g.raw[10] = 0xff;
  g.raw[11] = 0xff;
  g.raw[12] = 10;
  g.raw[13] = 77;
  g.raw[15] = last;
  return g;
}

const char* kV = "00000000000000000000ffff0a4d0002";  // ::ffff:10.77.0.2
const char* kR = "00000000000000000000ffff0a4e0002";  // ::ffff:10.78.0.2

}  // namespace

TEST(IbRebuild, MalformedPublishedIdsAreRefusedWithAReason) {
  const Json bad[] = {
      Json::object(),                                              // not an array
      Json::array({1}),                                            // a member that is not an object
      Json::array({{{"gids", "x"}}}),                              // not an array of pairs
      Json::array({{{"gids", Json::array({Json::array({kV})})}}}),  // not a pair
      Json::array({{{"gids", Json::array({Json::array({kV, "zz"})})}}}),               // not hex
      Json::array({{{"gids", Json::array({Json::array({kV, "00ff"})})}}}),             // too short
      Json::array({{{"qpns", Json::array({Json::array({17, 0x1000000})})}}}),          // QPN over 24 bits
      Json::array({{{"qpns", Json::array({Json::array({17, -1})})}}}),                 // negative
      Json::array({{{"rkeys", Json::array({Json::array({1, 1.5})})}}}),               // not an integer
      Json::array({{{"rkeys", Json::array({Json::array({1, 0x100000000ull})})}}}),    // over 32 bits
  };
  for (const Json& j : bad) {
    std::string why = connectPeers(j);
    EXPECT_FALSE(why.empty()) << j.dump();
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  }
  Json many = Json::array();
  for (int i = 0; i < 70; ++i) many.push_back(Json::array({kV, kR}));
  EXPECT_NE(connectPeers(Json::array({{{"gids", many}}})), "") << "more GIDs than a process can have";
  // Nothing of the refused input reached the tables.
  EXPECT_TRUE(translation().gid.empty());
  EXPECT_TRUE(translation().peer_qpn.empty());
}

TEST(IbRebuild, PublishedIdsFillThePeerTablesByGid) {
  // Two members: QP 17 and rkey 0x100 on each, told apart by their GIDs.
  Json peers = Json::array({
      {{"gids", Json::array({Json::array({kV, kR})})},
       {"qpns", Json::array({Json::array({17, 19})})},
       {"rkeys", Json::array({Json::array({0x100, 0x2a01})})}},
      {{"gids", Json::array({Json::array({"00000000000000000000ffff0a4d0001", "00000000000000000000ffff0a4e0001"})})},
       {"qpns", Json::array({Json::array({17, 23})})},
       {"rkeys", Json::array({Json::array({0x100, 0x7701})})}},
  });
  ASSERT_EQ(connectPeers(peers), "");
  const auto& t = translation();
  EXPECT_EQ(t.gid.toReal(gidOf(2)).raw[13], 0x4e);
  EXPECT_EQ(t.peerQpnToReal(gidOf(2), 17), 19u);
  EXPECT_EQ(t.peerQpnToReal(gidOf(1), 17), 23u);
  EXPECT_EQ(t.peerRkeyToReal(gidOf(2), 0x100), 0x2a01u);
  EXPECT_EQ(t.peerRkeyToReal(gidOf(1), 0x100), 0x7701u);
  EXPECT_EQ(t.peerQpnToReal(gidOf(3), 17), 17u) << "an unknown peer is not translated";
  // query_qp's way back: the real pair to the virtual one.
  EXPECT_EQ(t.peer_qpn.toVirtual({t.gid.toReal(gidOf(1)), 23}).id, 17u);
}
