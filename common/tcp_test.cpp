#include "common/tcp.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>
#include <thread>

using namespace vmckpt;
using namespace std::chrono_literals;

TEST(TcpEndpoint, ParsesHostPortBracketedV6AndBarePorts) {
  auto a = tcp::parseEndpoint("127.0.0.1:4444", false);
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 4444);
  auto v6 = tcp::parseEndpoint("[::1]:80", false);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->display(), "[::1]:80");
  auto bare = tcp::parseEndpoint("5000", false, "0.0.0.0");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->display(), "0.0.0.0:5000");
  EXPECT_TRUE(tcp::parseEndpoint("localhost:0", true));
  for (const char* bad : {"", "host", ":80", "host:", "host:0", "host:65536", "host:8x", "::1:80", "[::1:80", "a b:80"})
    EXPECT_FALSE(tcp::parseEndpoint(bad, false)) << bad;
}

TEST(TcpConnection, ExactReadsAndWritesAndAClosedPeer) {
  auto l = tcp::Listener::open({"127.0.0.1", 0});
  ASSERT_TRUE(l) << l.error().message();
  auto at = tcp::parseEndpoint(l->address(), false);
  ASSERT_TRUE(at) << l->address();
  EXPECT_NE(at->port, 0);
  auto client = tcp::connect(*at, Deadline::in(5s));
  ASSERT_TRUE(client) << client.error().message();
  std::string peer;
  auto server = l->acceptOne(Deadline::in(5s), {}, peer);
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ(peer.rfind("127.0.0.1:", 0), 0u) << peer;

  std::string big(3 << 20, 'x');
  std::thread writer([&] { EXPECT_TRUE(tcp::sendAll(client->get(), big.data(), big.size(), Deadline::in(10s))); });
  std::string got(big.size(), '\0');
  EXPECT_TRUE(tcp::readExact(server->get(), got.data(), got.size(), Deadline::in(10s)));
  writer.join();
  EXPECT_EQ(got, big);

  char c = 0;
  auto slow = tcp::readExact(server->get(), &c, 1, Deadline::in(100ms));
  ASSERT_FALSE(slow);
  EXPECT_EQ(slow.error().code(), Errc::timeout);
  auto stop = tcp::readExact(server->get(), &c, 1, Deadline::in(5s), [] { return Status(fail(Errc::processFailed, "stop")); });
  ASSERT_FALSE(stop);
  EXPECT_EQ(stop.error().message(), "stop");
  client->reset();
  auto closed = tcp::readExact(server->get(), &c, 1, Deadline::in(5s));
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().code(), Errc::protocol);
}

TEST(TcpConnection, RefusedConnectNamesTheAddress) {
  std::string address;
  {
    auto l = tcp::Listener::open({"127.0.0.1", 0});
    ASSERT_TRUE(l);
    address = l->address();
  }  // nothing listens there any more
  auto at = tcp::parseEndpoint(address, false);
  ASSERT_TRUE(at);
  auto c = tcp::connect(*at, Deadline::in(5s));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().sysErrno(), ECONNREFUSED);
  EXPECT_NE(c.error().message().find(at->display()), std::string::npos) << c.error().message();
}
