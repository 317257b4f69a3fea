#include "common/child_process.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <csignal>

using namespace vmckpt;
using namespace std::chrono_literals;

namespace {
bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }
}  // namespace

TEST(ChildProcess, CapturesOutputAndExitCode) {
  auto r = runCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, Deadline::in(5s));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->status.code, 3);
  EXPECT_FALSE(r->status.success());
}

TEST(ChildProcess, FeedsStdin) {
  auto r = runCommand({"cat"}, Deadline::in(5s), std::nullopt, "hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "hello");
}

TEST(ChildProcess, MissingProgramIsNotFound) {
  auto r = ChildProcess::spawn({.argv = {"vmckpt-no-such-program"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::notFound);
  EXPECT_NE(r.error().message().find("not found in PATH"), std::string::npos);
}

TEST(ChildProcess, TimeoutKillsTheCommand) {
  auto start = std::chrono::steady_clock::now();
  auto r = runCommand({"sleep", "30"}, Deadline::in(200ms));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ChildProcess, DroppingARunningChildKillsAndReapsIt) {
  pid_t pid;
  {
    auto c = ChildProcess::spawn({.argv = {"sleep", "30"}});
    ASSERT_TRUE(c);
    pid = c->pid();
    EXPECT_TRUE(c->running());
  }
  EXPECT_FALSE(alive(pid));  // killed and reaped: no zombie either
}

TEST(ChildProcess, WaitReportsSignal) {
  auto c = ChildProcess::spawn({.argv = {"sleep", "30"}});
  ASSERT_TRUE(c);
  c->signal(SIGTERM);
  auto st = c->wait(Deadline::in(5s));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->signal, SIGTERM);
  EXPECT_EQ(st->describe(), "killed by SIGTERM");
}

TEST(ChildProcess, WaitTimesOut) {
  auto c = ChildProcess::spawn({.argv = {"sleep", "30"}});
  ASSERT_TRUE(c);
  auto st = c->wait(Deadline::in(100ms));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::timeout);
}
