// The QMP client against a real QEMU started by vmckpt.
#include <fcntl.h>
#include <unistd.h>

#include "common/unique_fd.hpp"
#include "harness.hpp"
#include "qmp/qmp_client.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::Json;

class QmpRealQemu : public vmckpt::test::VmckptTest {};

TEST_F(QmpRealQemu, CommandsEventsErrorsAndFdPassing) {
  createGuest("q1", "idle");
  ASSERT_EQ(vmckpt({"start", "q1"}).code, 0);
  auto c = qmp::Client::connect(home_ + "/vms/q1/run/qmp.sock", Deadline::in(5s));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_GE(c->greeting().major, 7);

  auto st = c->execute("query-status");
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ((*st)["status"], "running");

  ASSERT_TRUE(c->execute("stop"));
  auto stop = c->waitEvent("STOP", Deadline::in(5s));
  ASSERT_TRUE(stop) << stop.error().message();
  EXPECT_GT(stop->timestampUs, 0);
  EXPECT_EQ((*c->execute("query-status"))["status"], "paused");
  ASSERT_TRUE(c->execute("cont"));
  ASSERT_TRUE(c->waitEvent("RESUME", Deadline::in(5s)));

  auto bad = c->execute("no-such-command");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::qmp);
  EXPECT_EQ(bad.error().qmpClass(), "CommandNotFound");
  auto badArg = c->execute("query-status", {{"bogus", 1}});
  ASSERT_FALSE(badArg);
  EXPECT_EQ(badArg.error().qmpClass(), "GenericError");

  // getfd: QEMU takes the fd that rides on the command; closefd gives it back.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  int fd = w.get();
  auto got = c->execute("getfd", {{"fdname", "vmckpt-test"}}, Deadline::in(5s), std::span<const int>(&fd, 1));
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_TRUE(c->execute("closefd", {{"fdname", "vmckpt-test"}}));
  auto twice = c->execute("closefd", {{"fdname", "vmckpt-test"}});
  EXPECT_FALSE(twice);  // it really was registered once

  // No event -> the wait ends at its deadline.
  auto none = c->waitEvent("SHUTDOWN", Deadline::in(300ms));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), Errc::timeout);

  // QEMU going away mid-session: a clear error, not a hang.
  ASSERT_TRUE(c->execute("quit"));
  auto after = c->execute("query-status", Json::object(), Deadline::in(5s));
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code(), Errc::protocol);
}
