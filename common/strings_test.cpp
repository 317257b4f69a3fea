#include "common/strings.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/scope_exit.hpp"

using namespace vmckpt;

TEST(ParseSize, AcceptsUnits) {
  EXPECT_EQ(parseSize("1G").bytes, 1ull << 30);
  EXPECT_EQ(parseSize("512M").bytes, 512ull << 20);
  EXPECT_EQ(parseSize("512MiB").bytes, 512ull << 20);
  EXPECT_EQ(parseSize("4gb").bytes, 4ull << 30);
  EXPECT_EQ(parseSize("4096").bytes, 4096ull);
  EXPECT_EQ(parseSize("64k").bytes, 64ull << 10);
}

TEST(ParseSize, RejectsBadInput) {
  for (const char* bad : {"0", "0G", "banana", "", "-1G", "1X", "G", "99999999999999999999", "20000000000T"}) {
    auto r = parseSize(bad);
    EXPECT_FALSE(r.ok) << bad;
    EXPECT_FALSE(r.error.empty()) << bad;
  }
  EXPECT_NE(parseSize("banana").error.find("not a number"), std::string::npos);
  EXPECT_NE(parseSize("0").error.find("greater than zero"), std::string::npos);
}

TEST(FormatSize, Readable) {
  EXPECT_EQ(formatSize(1ull << 30), "1 GiB");
  EXPECT_EQ(formatSize(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(formatSize(100), "100 B");
}

TEST(Split, KeepsEmptyParts) {
  auto p = split("a::b", ':');
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[1], "");
}

TEST(ShellQuote, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(shellQuote("plain-arg=1,x"), "plain-arg=1,x");
  EXPECT_EQ(shellQuote("two words"), "'two words'");
  EXPECT_EQ(shellQuote("it's"), "'it'\\''s'");
}

TEST(Error, ContextPrefixes) {
  Error e(Errc::timeout, "timeout after 5s");
  Error up = e.context("qmp stop").context("pause").context("snapshot vm1");
  EXPECT_EQ(up.message(), "snapshot vm1: pause: qmp stop: timeout after 5s");
  EXPECT_EQ(up.code(), Errc::timeout);
  EXPECT_EQ(Error::fromErrno("fsync /x", ENOSPC).message(), "fsync /x: No space left on device");
}

TEST(ScopeExit, RunsUnlessCancelled) {
  int runs = 0;
  {
    ScopeExit a([&] { ++runs; });
  }
  {
    ScopeExit b([&] { ++runs; });
    b.cancel();
  }
  EXPECT_EQ(runs, 1);
}
