// InfiniBand verbs over soft-RoCE between TCG guests, across a group snapshot, a crash of
// every guest and a restore. The InfiniBand test guest (images/test-guest-ib) runs the
// workload ibverbs: rdma_rxe on eth0, then vmckpt-ib-workload under libvmckpt-ib.so
// (RC SEND/RECV, RDMA WRITE with immediate, RDMA READ, UD SEND through address handles,
// every byte checked). The guests share one Ethernet segment (QEMU's multicast socket
// netdev on loopback). Mid-traffic, `vmckpt snapshot --group` quiesces both (the
// interposer gates posts and drains every send queue), stops both, captures both and
// resumes both; both QEMUs are then killed and both guests restored from their member
// snapshots: the workload must run to the end with every byte correct.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <regex>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace vmckpt;
using vmckpt::test::CliRun;
using vmckpt::test::Json;
using vmckpt::test::sinceRestore;
using vmckpt::test::tagged;

namespace {

using Clock = std::chrono::steady_clock;

std::string ibGuestDir() { return VMCKPT_TEST_GUEST_IB_DIR; }

// Highest "conn C iter K" the workload printed (0 if none).
int lastIter(const std::string& console) {
  static const std::regex re("^conn [0-9]+ iter ([0-9]+)$");
  int last = 0;
  for (const auto& l : tagged(console, "ibtest")) {
    std::smatch m;
    if (std::regex_match(l, m, re)) last = std::max(last, std::stoi(m[1].str()));
  }
  return last;
}

bool passed(const std::string& console) {
  for (const auto& l : tagged(console, "ibtest"))
    if (l == "PASS") return true;
  return false;
}

std::string failure(const std::string& console) {
  for (const auto& l : tagged(console, "ibtest"))
    if (startsWith(l, "FAIL")) return l;
  for (const auto& l : tagged(console, "ibverbs"))
    if (startsWith(l, "exit ") && l != "exit 0") return l;
  return "";
}

}  // namespace

class IbGuestTest : public vmckpt::test::VmckptTest {
 protected:
  template <typename Pred>
  bool waitFor(const std::string& name, Pred pred, std::chrono::seconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      std::string c = console(name);
      if (pred(c)) return true;
      if (!failure(c).empty()) return false;
      std::this_thread::sleep_for(250ms);
    }
    return pred(console(name));
  }

  void note(const std::string& what) {
    double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    std::printf("[ib-guest %6.1f s] %s\n", s, what.c_str());
    std::fflush(stdout);
  }

  // A guest of the job on the shared segment, 10.77.0.<host>/24, running the workload
  // under the interposer with `ibArgs` (commas for spaces).
  // Why the InfiniBand guest cannot run here ("" when it can: then it must be built).
  std::string ibGuestSkipReason() {
    const std::string dir = ibGuestDir();
    if (auto why = fs::readFile(dir + "/UNAVAILABLE", 4096))
      return "the InfiniBand test guest could not be built on this host: " + *why;
    EXPECT_TRUE(fs::exists(dir + "/kernel") && fs::exists(dir + "/initrd"))
        << "InfiniBand test guest not built in " << dir << " (make test-guest-ib-image)";
    return "";
  }

  // Kernel arguments for a second rxe link, rxe1, on a macvlan netdev of its own: another
  // MAC, IPv4 address (10.78.0.<host>) and GID, and MTU 1000, so rxe's active MTU is 512
  // instead of eth0's 1024. The job runs on rxe0 (--dev rxe0) and can be moved there.
  static std::string secondLink(int host) {
    return cat("vmckpt.ibnet=mv0@eth0/1000/10.78.0.", host, "/24 vmckpt.rxe=rxe0@eth0,rxe1@mv0");
  }

  // A multicast group of our own: tests may run beside other jobs.
  std::string ownGroup() {
    return cat("239.255.", rng_() % 250 + 1, ".", rng_() % 250 + 1, ":", 20000 + rng_() % 20000);
  }

  // `extra`: more kernel arguments (vmckpt.rxe=, vmckpt.ibnet=).
  void createIbGuest(const std::string& name, const std::string& group, int host, const std::string& ibArgs,
                     const std::string& extra = "") {
    const std::string dir = ibGuestDir();
    CliRun c = vmckpt({"create", name, "--memory", "512M", "--kernel", dir + "/kernel", "--initrd", dir + "/initrd",
                       "--accel", "tcg", "--net", "socket-mcast,group=" + group,
                       "--append",
                       cat("console=ttyS0 quiet no_timer_check vmckpt.workload=ibverbs vmckpt.ibpreload=1 vmckpt.ip=10.77.0.",
                           host, "/24 vmckpt.ib=", ibArgs, extra.empty() ? "" : " ", extra)});
    ASSERT_EQ(c.code, 0) << c.err;
  }

  // Each guest's failure line, if any: a guest fails when its peer did.
  std::string everyFailure(const std::vector<std::string>& vms) {
    std::string out;
    for (const auto& vm : vms) {
      const std::string f = failure(console(vm));
      if (!f.empty()) out += "\n" + vm + ": " + f;
      for (const auto& l : tagged(console(vm), "vmckpt-ib-workload")) out += "\n" + vm + ": " + l;
    }
    return out;
  }

  Clock::time_point t0_ = Clock::now();
  std::mt19937 rng_{std::random_device{}()};
};

// The console since the last restore (all of it before the first).
std::string current(const std::string& log) {
  std::string since = sinceRestore(log);
  return since.empty() ? log : since;
}

struct JobShape {
  int guests;
  int cycles;  // group snapshot, kill all, restore all: this many times, at random moments
};

class IbJobTest : public IbGuestTest, public ::testing::WithParamInterface<JobShape> {};

TEST_P(IbJobTest, WorkloadCompletesAcrossGroupSnapshotsKillsAndRestores) {
  if (auto why = ibGuestSkipReason(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_FALSE(HasFailure());
  const int n = GetParam().guests, cycles = GetParam().cycles;
  std::mt19937& rng = rng_;
  const std::string group = ownGroup();
  // Each guest serves the one before it and connects to the one after it (with two
  // guests: one connection each way); every connection runs every operation.
  const int iters = 200 + 60 * cycles;
  std::vector<std::string> vms;
  for (int i = 1; i <= n; ++i) {
    const std::string peer = cat("10.77.0.", i % n + 1, ":7000");
    std::string args = n == 2 ? (i == 1 ? std::string("--listen,7000") : "--connect," + peer)
                              : "--listen,7000,--connect," + peer;
    createIbGuest(cat("ib", i), group, i, args + cat(",--dev,rxe0,--iters,", iters, ",--report,5,--interval-ms,20"),
                  secondLink(i));
    vms.push_back(cat("ib", i));
  }
  for (const auto& vm : vms) ASSERT_EQ(vmckpt({"start", vm}).code, 0);
  for (const auto& vm : vms) ASSERT_TRUE(waitForConsole(vm, "vmckpt-test-guest: ready", 180s)) << console(vm);
  note(cat(n, " guests ready"));

  int last = 0;  // the lowest iteration all guests had reached at the previous snapshot
  for (int cycle = 1; cycle <= cycles; ++cycle) {
    // A random moment mid-traffic: 5-30 iterations after the previous snapshot.
    const int target = last + 5 + static_cast<int>(rng() % 26);
    for (const auto& vm : vms)
      ASSERT_TRUE(waitFor(vm, [&](const std::string& c) { return lastIter(current(c)) >= target; }, 300s))
          << vm << " (cycle " << cycle << "): " << current(console(vm)) << everyFailure(vms);
    // The workloads registered with their agents as the plugin "ib".
    if (cycle == 1) {
      for (const auto& vm : vms) {
        CliRun info = vmckpt({"agent", vm, "info", "--json", "--timeout", "10000"});
        ASSERT_EQ(info.code, 0) << info.err;
        Json j = info.json();
        bool registered = false;
        for (const auto& p : j["result"]["processes"]) registered |= p.value("plugin", "") == "ib";
        ASSERT_TRUE(registered) << vm << ": the interposer did not register with the agent: " << info.out;
      }
    }

    std::vector<std::string> args = {"snapshot"};
    args.insert(args.end(), vms.begin(), vms.end());
    args.insert(args.end(), {"--group", "job", "--agent", "required", "--json"});
    CliRun snap = vmckpt(args);
    ASSERT_EQ(snap.code, 0) << snap.err << current(console(vms[0]));
    Json g = snap.json();
    ASSERT_EQ(g["snapshots"].size(), vms.size()) << snap.out;
    std::map<std::string, std::string> ids;
    for (const auto& m : g["snapshots"]) {
      std::string ibResult;
      bool released = false;
      for (const auto& p : m["agent"]["plugins"]) {
        if (p.value("name", "") != "ib") continue;
        ibResult = p.value("result", "");
        released = p.contains("data") && p["data"].value("released", false);
      }
      EXPECT_EQ(ibResult, "done") << "the ib plugin did not drain: " << m["agent"].dump();
      // PRECHECKPOINT checked that no /dev/infiniband fd was left open.
      EXPECT_TRUE(released) << "the ib plugin did not release its device: " << m["agent"].dump();
      EXPECT_TRUE(m["agent"]["note"].is_null()) << "the group's reconnect after the snapshot: " << m.dump();
      ids[m["vm"].get<std::string>()] = m["id"].get<std::string>();
    }
    int low = iters, high = 0;
    for (const auto& vm : vms) {
      const std::string c = current(console(vm));
      bool drained = false;
      bool closed = false;
      for (const auto& l : tagged(c, "vmckpt-ib")) {
        drained |= startsWith(l, "drained in ");
        closed |= startsWith(l, "released '") && l.find("no /dev/infiniband fd open") != std::string::npos;
      }
      EXPECT_TRUE(closed) << vm << ": no 'vmckpt-ib: released ...' line: " << c;
      EXPECT_TRUE(drained) << vm << ": no 'vmckpt-ib: drained in' line: " << c;
      low = std::min(low, lastIter(c));
      high = std::max(high, lastIter(c));
    }
    ASSERT_LT(high, iters) << "the workload finished before snapshot " << cycle;
    note(cat("cycle ", cycle, ": group snapshot at iterations ", low, "-", high, ", pause ", g["pause_ms"].dump(),
             " ms"));
    last = low;

    // The originals go on for a moment, then every QEMU is killed behind vmckpt's back.
    for (const auto& vm : vms)
      ASSERT_TRUE(waitFor(vm, [&](const std::string& c) { return lastIter(current(c)) >= high + 3; }, 120s))
          << vm << ": " << current(console(vm));
    for (int pid : qemuPids()) ASSERT_EQ(::kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(qemuPids().empty());
    // The devices were released before the capture: a member alone is refused, before
    // anything is stopped or loaded.
    if (cycle == 1) {
      vmckpt::test::expectOneLineError(vmckpt({"restore", vms[0], ids[vms[0]]}), "restore the group together");
      std::vector<std::string> paused = {"restore"};
      paused.insert(paused.end(), vms.begin(), vms.end());
      paused.insert(paused.end(), {"--group", g["id"].get<std::string>(), "--paused"});
      vmckpt::test::expectOneLineError(vmckpt(paused), "restore the group without --paused");
      ASSERT_TRUE(qemuPids().empty()) << "a refused restore started a guest";
    }
    // Every cycle restores the group together (all loaded paused, all continued, then the
    // agent rounds: every process rebuilds and the ids go through the host). Odd cycles
    // move the job to the other rxe link each time (rxe0 -> rxe1 -> rxe0 ...); even ones
    // rebuild on the link the job is on (the map stays in each VM's spec).
    std::vector<std::string> rargs = {"restore"};
    rargs.insert(rargs.end(), vms.begin(), vms.end());
    rargs.insert(rargs.end(), {"--group", g["id"].get<std::string>(), "--json"});
    const std::string link = cycle % 4 == 1 ? "rxe1" : "rxe0";
    if (cycle % 2 == 1) rargs.insert(rargs.end(), {"--map", "ib=" + link});
    CliRun rest = vmckpt(rargs);
    ASSERT_EQ(rest.code, 0) << rest.err;
    Json r = rest.json();
    for (const auto& m : r["members"]) EXPECT_TRUE(m["agent_note"].is_null()) << rest.out;
    note(cat("cycle ", cycle, cycle % 2 == 1 ? ": moved to " + link : std::string(": rebuilt in place"),
             ", ids exchanged (", r["published_bytes"].dump(), " bytes) in ", r["exchange_ms"].dump(), " ms"));
  }

  for (const auto& vm : vms) {
    ASSERT_TRUE(waitFor(vm, [](const std::string& c) { return passed(current(c)); }, 300s))
        << vm << " did not finish after the last restore: " << failure(current(console(vm))) << "\n"
        << current(console(vm));
    const std::string after = current(console(vm));
    EXPECT_EQ(failure(after), "") << after;
    // The same process went on: it did not start over.
    int starts = 0;
    for (const auto& l : tagged(after, "ibtest")) starts += startsWith(l, "device ");
    EXPECT_EQ(starts, 0) << after;
    for (const auto& l : tagged(after, "ibtest"))
      if (startsWith(l, "conn ") && l.find(" done ") != std::string::npos) note(cat(vm, ": ", l));
  }
  note(cat("workload passed on all ", n, " guests after ", cycles, " snapshot/kill/restore cycles"));
}

// 2x10 and 4x3 run in `make test`; 4x10 (about 2 minutes more) with the slow label.
INSTANTIATE_TEST_SUITE_P(Jobs, IbJobTest, ::testing::Values(JobShape{2, 10}, JobShape{4, 3}, JobShape{4, 10}),
                         [](const ::testing::TestParamInfo<JobShape>& p) {
                           return cat(p.param.guests, "Guests", p.param.cycles, "Cycles");
                         });

// rxe treats retry_cnt 7 as infinite; below it, a peer that does not acknowledge for
// retry_cnt+1 timeouts fails the sender's work request with IBV_WC_RETRY_EXC_ERR. With
// retry_cnt 1 and timeout 14 (about 67 ms) the workload tolerates ~130 ms of silence: the
// group snapshot (drained, every guest stopped together) and the group restore (every
// guest running before any plugin's gate opens) must not show the application an outage.
TEST_F(IbGuestTest, ShortRetryCountSeesNoOutageAcrossGroupSnapshotAndRestore) {
  if (auto why = ibGuestSkipReason(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_FALSE(HasFailure());
  std::mt19937& rng = rng_;
  const std::string group = ownGroup();
  const std::string common = ",--iters,400,--report,5,--interval-ms,20,--retry-cnt,1,--timeout,14";
  createIbGuest("ib1", group, 1, "--listen,7000" + common);
  createIbGuest("ib2", group, 2, "--connect,10.77.0.1:7000" + common);
  const std::vector<std::string> vms = {"ib1", "ib2"};
  for (const auto& vm : vms) ASSERT_EQ(vmckpt({"start", vm}).code, 0);
  for (const auto& vm : vms) ASSERT_TRUE(waitForConsole(vm, "vmckpt-test-guest: ready", 180s)) << console(vm);

  // A group snapshot that fails after every member released its device (an injected
  // capture failure) leaves no snapshot, and its unwind reconnects the job through the
  // same rounds: the workload goes on (and shows no retry-exceeded error, checked last).
  {
    for (const auto& vm : vms)
      ASSERT_TRUE(waitFor(vm, [](const std::string& c) { return lastIter(current(c)) >= 10; }, 300s))
          << vm << ": " << failure(console(vm)) << "\n" << current(console(vm));
    const int before = lastIter(current(console("ib1")));
    vmckpt::test::expectOneLineError(vmckpt({"snapshot", "ib1", "ib2", "--group", "job", "--agent", "required"},
                                            {{"VMCKPT_FAULT", "after-capture:error"}}),
                                     "injected fault at after-capture");
    for (const auto& vm : vms) {
      EXPECT_EQ(vmckpt({"snapshots", vm, "--json"}).json()["snapshots"].size(), 0u) << vm;
      ASSERT_TRUE(waitFor(vm, [&](const std::string& c) { return lastIter(current(c)) >= before + 10; }, 120s))
          << vm << " did not go on after the failed snapshot: " << failure(console(vm)) << "\n" << console(vm);
      const std::string c = console(vm);
      EXPECT_NE(c.find("vmckpt-ib: released 'rxe0'"), std::string::npos) << c;
      EXPECT_NE(c.find("vmckpt-ib: connected to the peers' new ids"), std::string::npos) << c;
    }
    note("a failed group snapshot after the release: no snapshot, the job reconnected and goes on");
  }

  std::string id;
  for (int cycle = 1; cycle <= 3; ++cycle) {
    const int target = lastIter(current(console("ib1"))) + 10 + static_cast<int>(rng() % 20);
    for (const auto& vm : vms)
      ASSERT_TRUE(waitFor(vm, [&](const std::string& c) { return lastIter(current(c)) >= target; }, 300s))
          << vm << ": " << failure(console(vm)) << "\n" << current(console(vm));
    CliRun snap = vmckpt({"snapshot", "ib1", "ib2", "--group", "job", "--agent", "required", "--json"});
    ASSERT_EQ(snap.code, 0) << snap.err;
    id = snap.json()["id"].get<std::string>();
    note(cat("cycle ", cycle, ": group snapshot ", id, " at iteration ", lastIter(current(console("ib1")))));
    for (int pid : qemuPids()) ASSERT_EQ(::kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(qemuPids().empty());
    CliRun rest = vmckpt({"restore", "ib1", "ib2", "--group", "job", "--json"});
    ASSERT_EQ(rest.code, 0) << rest.err;
    Json r = rest.json();
    EXPECT_EQ(r["id"], id) << "--group by name must take the newest group snapshot";
    note(cat("restored together: members continued within ", r["resume_spread_ms"].dump(), " ms"));
  }
  // A device map naming a device the guests do not have: each process rebuilds on the
  // device it had (its peers wait for its ids), says so on the guest's console, and the
  // application goes on.
  {
    CliRun snap = vmckpt({"snapshot", "ib1", "ib2", "--group", "job", "--agent", "required", "--json"});
    ASSERT_EQ(snap.code, 0) << snap.err;
    for (int pid : qemuPids()) ASSERT_EQ(::kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
    CliRun rest = vmckpt({"restore", "ib1", "ib2", "--group", "job", "--map", "ib=rxe9", "--json"});
    ASSERT_EQ(rest.code, 0) << rest.err;
    for (const auto& m : rest.json()["members"]) EXPECT_TRUE(m["agent_note"].is_null()) << rest.out;
    for (const auto& vm : vms)
      EXPECT_TRUE(waitForConsole(vm, "no verbs device 'rxe9' in this guest; rebuilt on 'rxe0' instead", 60s))
          << vm << ": " << current(console(vm));
  }

  // A group is restored whole, from one group snapshot: a subset, or a group that does
  // not exist, is refused in one line before anything stops.
  vmckpt::test::expectOneLineError(vmckpt({"restore", "ib1", "--group", "job"}), "name exactly those");
  vmckpt::test::expectOneLineError(vmckpt({"restore", "ib1", "ib2", "--group", "nosuchjob"}), "no snapshot of group");
  for (const auto& vm : vms) {
    ASSERT_TRUE(waitFor(vm, [](const std::string& c) { return passed(current(c)); }, 300s))
        << vm << ": " << failure(current(console(vm))) << "\n" << current(console(vm));
    EXPECT_EQ(current(console(vm)).find("retry counter exceeded"), std::string::npos) << current(console(vm));
  }
}

// Restart on other hardware: each guest has a second rxe link, rxe1, on a macvlan netdev
// of its own (another MAC, IPv4 address, GID and MTU: 1000, so rxe's active MTU is 512
// instead of 1024). The job runs on rxe0; a group restore with --map ib=rxe1 moves it:
// every process closes rxe0, re-creates its objects on rxe1, publishes its new QP
// numbers, keys and GIDs through the host, connects to its peers' new ones, and posts
// its recorded receives again. A second cycle moves it back. The workload checks every
// byte of every operation (RC SEND/RECV, WRITE_WITH_IMM, READ, UD SEND) across both.
TEST_F(IbGuestTest, GroupRestoreMovesTheJobToAnotherLinkNetdevGidAndMtu) {
  if (auto why = ibGuestSkipReason(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_FALSE(HasFailure());
  std::mt19937& rng = rng_;
  const std::string group = ownGroup();
  const std::string common = ",--dev,rxe0,--iters,300,--report,5,--interval-ms,20";
  createIbGuest("ib1", group, 1, "--listen,7000" + common, secondLink(1));
  createIbGuest("ib2", group, 2, "--connect,10.77.0.1:7000" + common, secondLink(2));
  const std::vector<std::string> vms = {"ib1", "ib2"};
  for (const auto& vm : vms) ASSERT_EQ(vmckpt({"start", vm}).code, 0);
  for (const auto& vm : vms) ASSERT_TRUE(waitForConsole(vm, "vmckpt-test-guest: ready", 180s)) << console(vm);
  for (const auto& vm : vms)
    ASSERT_TRUE(waitForConsole(vm, "ibverbs: link rxe1 on mv0", 60s)) << console(vm);

  for (const std::string target : {"rxe1", "rxe0"}) {
    const int at = lastIter(current(console("ib1"))) + 10 + static_cast<int>(rng() % 20);
    for (const auto& vm : vms)
      ASSERT_TRUE(waitFor(vm, [&](const std::string& c) { return lastIter(current(c)) >= at; }, 300s))
          << vm << ": " << current(console(vm)) << everyFailure(vms);
    CliRun snap = vmckpt({"snapshot", "ib1", "ib2", "--group", "job", "--agent", "required", "--json"});
    ASSERT_EQ(snap.code, 0) << snap.err;
    for (int pid : qemuPids()) ASSERT_EQ(::kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(qemuPids().empty());
    CliRun rest = vmckpt({"restore", "ib1", "ib2", "--group", "job", "--map", "ib=" + target, "--json"});
    ASSERT_EQ(rest.code, 0) << rest.err;
    Json r = rest.json();
    for (const auto& m : r["members"]) EXPECT_TRUE(m["agent_note"].is_null()) << rest.out;
    EXPECT_GT(r["published_bytes"].get<int>(), 2) << rest.out;
    for (const auto& vm : vms) {
      bool rebuilt = false;
      for (const auto& l : tagged(current(console(vm)), "vmckpt-ib"))
        rebuilt |= startsWith(l, cat("rebuilt on '", target, "'"));
      EXPECT_TRUE(rebuilt) << vm << ": no 'vmckpt-ib: rebuilt on '" << target << "'' line: " << current(console(vm));
    }
    note(cat("moved to ", target, ": ids exchanged (", r["published_bytes"].dump(), " bytes) in ",
             r["exchange_ms"].dump(), " ms"));
  }
  for (const auto& vm : vms) {
    ASSERT_TRUE(waitFor(vm, [](const std::string& c) { return passed(current(c)); }, 300s))
        << vm << ": " << failure(current(console(vm))) << "\n" << current(console(vm)) << everyFailure(vms);
    EXPECT_EQ(failure(current(console(vm))), "") << current(console(vm));
  }
}
