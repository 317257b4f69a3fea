// The unplug/replug state machine against a fake QEMU on a socketpair: a small model of
// QEMU's peripherals that answers qom-get, device_del (DEVICE_DELETED once "the guest"
// releases the device, or never) and device_add (or refuses it), and logs the order.
#include "host-plugins/vfio/hotplug.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace vmckpt;
using namespace std::chrono_literals;
using vfio::Json;
using vfio::PassthroughDevice;

namespace {

class FakeQemu {
 public:
  explicit FakeQemu(std::set<std::string> present) : present_(std::move(present)) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_.reset(sv[0]);
    server_.reset(sv[1]);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeQemu() {
    ::shutdown(server_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    for (auto& t : late_) t.join();
  }

  qmp::Client connect() {
    auto c = qmp::Client::handshake(std::move(client_), Deadline::in(2s));
    EXPECT_TRUE(c.has_value());
    return std::move(*c);
  }
  // The guest ignores the unplug request for this id (no DEVICE_DELETED, stays present).
  void neverRelease(const std::string& id) {
    std::lock_guard l(m_);
    stuck_.insert(id);
  }
  void refuseAdd(const std::string& id) {
    std::lock_guard l(m_);
    refuseAdd_.insert(id);
  }
  // The guest releases this id only after `delay` (e.g. past the caller's timeout).
  void releaseAfter(const std::string& id, std::chrono::milliseconds delay) {
    std::lock_guard l(m_);
    delay_[id] = delay;
  }
  std::vector<std::string> log() {
    std::lock_guard l(m_);
    return log_;
  }
  std::set<std::string> present() {
    std::lock_guard l(m_);
    return present_;
  }
  Json lastAddArguments() {
    std::lock_guard l(m_);
    return lastAdd_;
  }

 private:
  void send(const Json& j) {
    std::string s = j.dump() + "\r\n";
    (void)!::write(server_.get(), s.data(), s.size());
  }
  void deleted(const std::string& dev) {  // with m_ held
    present_.erase(dev);
    log_.push_back("DEVICE_DELETED " + dev);
    send({{"event", "DEVICE_DELETED"},
          {"data", {{"device", dev}, {"path", "/machine/peripheral/" + dev}}},
          {"timestamp", {{"seconds", 1}, {"microseconds", 0}}}});
  }
  bool readLine(std::string& line) {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return true;
      }
      char b[4096];
      ssize_t n = ::read(server_.get(), b, sizeof b);
      if (n <= 0) return false;
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  void serve() {
    send(Json::parse(
        R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}})"));
    std::string line;
    while (readLine(line)) {
      Json req = Json::parse(line, nullptr, false);
      const std::string cmd = req.value("execute", ""), id = req.value("id", "");
      const Json args = req.value("arguments", Json::object());
      std::lock_guard l(m_);
      auto reply = [&](Json ret) { send({{"return", ret}, {"id", id}}); };
      auto error = [&](const std::string& cls, const std::string& desc) {
        send({{"error", {{"class", cls}, {"desc", desc}}}, {"id", id}});
      };
      if (cmd == "qmp_capabilities") {
        reply(Json::object());
      } else if (cmd == "qom-get") {
        std::string dev = args.value("path", "").substr(std::string("/machine/peripheral/").size());
        if (present_.count(dev))
          reply(true);
        else
          error("DeviceNotFound", "Device '" + args.value("path", "") + "' not found");
      } else if (cmd == "device_del") {
        std::string dev = args.value("id", "");
        log_.push_back("device_del " + dev);
        if (!present_.count(dev)) {
          error("DeviceNotFound", "Device '" + dev + "' not found");
          continue;
        }
        reply(Json::object());
        if (stuck_.count(dev)) continue;
        if (auto late = delay_.find(dev); late != delay_.end()) {
          late_.emplace_back([this, dev, delay = late->second] {
            std::this_thread::sleep_for(delay);
            std::lock_guard lk(m_);
            deleted(dev);
          });
          continue;
        }
        deleted(dev);
      } else if (cmd == "device_add") {
        std::string dev = args.value("id", "");
        log_.push_back("device_add " + dev);
        lastAdd_ = args;
        if (refuseAdd_.count(dev))
          error("GenericError", "vfio " + args.value("host", "?") + ": no such host device");
        else if (present_.count(dev))
          error("GenericError", "Duplicate device ID '" + dev + "'");
        else {
          present_.insert(dev);
          reply(Json::object());
        }
      } else {
        error("CommandNotFound", "The command " + cmd + " has not been found");
      }
    }
  }

  UniqueFd client_, server_;
  std::thread thread_;
  std::string buf_;
  std::mutex m_;
  std::set<std::string> present_, stuck_, refuseAdd_;
  std::map<std::string, std::chrono::milliseconds> delay_;
  std::vector<std::thread> late_;
  std::vector<std::string> log_;
  Json lastAdd_;
};

std::vector<PassthroughDevice> devices() {
  return {{"vfio-pci", "gpu0", {{"host", "0000:65:00.0"}}},
          {"vfio-pci", "gpu1", {{"host", "0000:66:00.0"}}},
          {"e1000e", "nic9", {}}};
}

vfio::HotplugOptions fast() {
  vfio::HotplugOptions o;
  o.unplugTimeout = 200ms;
  o.lateReleaseGrace = 100ms;
  o.commandTimeout = 2s;
  return o;
}

}  // namespace

TEST(VfioHotplug, UnplugsInOrderEachConfirmedByItsEventThenReplugsInOrder) {
  FakeQemu q({"gpu0", "gpu1", "nic9"});
  auto c = q.connect();
  ASSERT_TRUE(vfio::unplugAll(c, devices(), fast()));
  EXPECT_TRUE(q.present().empty());
  ASSERT_TRUE(vfio::plugAll(c, devices(), fast()));
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "gpu1", "nic9"}));
  EXPECT_EQ(q.log(), (std::vector<std::string>{"device_del gpu0", "DEVICE_DELETED gpu0", "device_del gpu1",
                                               "DEVICE_DELETED gpu1", "device_del nic9", "DEVICE_DELETED nic9",
                                               "device_add gpu0", "device_add gpu1", "device_add nic9"}));
  // Into its own slot, with its properties as given.
  EXPECT_EQ(q.lastAddArguments(), (Json{{"driver", "e1000e"}, {"id", "nic9"}, {"bus", "vmckpt-slot-nic9"}}));
}

TEST(VfioHotplug, ADeviceTheGuestNeverReleasesTimesOutAndTheOnesRemovedComeBack) {
  FakeQemu q({"gpu0", "gpu1", "nic9"});
  q.neverRelease("gpu1");
  auto c = q.connect();
  auto t0 = std::chrono::steady_clock::now();
  auto r = vfio::unplugAll(c, devices(), fast());
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::timeout);
  EXPECT_NE(r.error().message().find("device_del gpu1: the guest did not release it within 200 ms"), std::string::npos)
      << r.error().message();
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
  // gpu0 was put back, gpu1 stayed, nic9 was never touched.
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "gpu1", "nic9"}));
  EXPECT_EQ(q.log(),
            (std::vector<std::string>{"device_del gpu0", "DEVICE_DELETED gpu0", "device_del gpu1", "device_add gpu0"}));
}

TEST(VfioHotplug, ADeviceReleasedJustAfterTheTimeoutIsPluggedBackWithTheOthers) {
  FakeQemu q({"gpu0", "gpu1", "nic9"});
  q.releaseAfter("gpu1", 250ms);  // past the 200 ms timeout, within the 100 ms grace
  auto c = q.connect();
  auto r = vfio::unplugAll(c, devices(), fast());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::timeout);
  EXPECT_NE(r.error().message().find("it did later, and was plugged back"), std::string::npos) << r.error().message();
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "gpu1", "nic9"}));
  EXPECT_EQ(q.log(), (std::vector<std::string>{"device_del gpu0", "DEVICE_DELETED gpu0", "device_del gpu1",
                                               "DEVICE_DELETED gpu1", "device_add gpu1", "device_add gpu0"}));
}

TEST(VfioHotplug, AFailureAfterAnUnplugPutsBackEveryRemovedDeviceLastFirst) {
  FakeQemu q({"gpu0", "gpu1", "nic9"});
  auto c = q.connect();
  auto o = fast();
  o.afterEachUnplug = [](const PassthroughDevice& d) -> Status {
    if (d.id == "gpu1") return fail(Errc::io, "injected");
    return {};
  };
  auto r = vfio::unplugAll(c, devices(), o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "injected");
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "gpu1", "nic9"}));
  EXPECT_EQ(q.log(), (std::vector<std::string>{"device_del gpu0", "DEVICE_DELETED gpu0", "device_del gpu1",
                                               "DEVICE_DELETED gpu1", "device_add gpu1", "device_add gpu0"}));
}

TEST(VfioHotplug, AnAbsentDeviceFailsTheUnplugBeforeAnythingIsRemoved) {
  FakeQemu q({"gpu1", "nic9"});
  auto c = q.connect();
  auto r = vfio::unplugAll(c, devices(), fast());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "device_del gpu0: the device is not plugged in");
  EXPECT_TRUE(q.log().empty());
}

TEST(VfioHotplug, DeviceAddFailureIsReportedAndTheOtherDevicesAreStillPlugged) {
  FakeQemu q({});
  q.refuseAdd("gpu1");
  auto c = q.connect();
  auto r = vfio::plugAll(c, devices(), fast());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::qmp);
  EXPECT_NE(r.error().message().find("device_add gpu1: qmp device_add: vfio 0000:66:00.0: no such host device"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "nic9"}));
}

TEST(VfioHotplug, AReAddThatFailsDuringTheRollbackIsNamedInTheError) {
  FakeQemu q({"gpu0", "gpu1", "nic9"});
  q.neverRelease("gpu1");
  q.refuseAdd("gpu0");
  auto c = q.connect();
  auto r = vfio::unplugAll(c, devices(), fast());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("; putting gpu0 back failed too: device_add gpu0"), std::string::npos)
      << r.error().message();
}

TEST(VfioHotplug, PlugMissingAddsOnlyWhatIsAbsent) {
  FakeQemu q({"gpu1"});
  auto c = q.connect();
  ASSERT_TRUE(vfio::plugMissing(c, devices(), fast()));
  EXPECT_EQ(q.present(), (std::set<std::string>{"gpu0", "gpu1", "nic9"}));
  EXPECT_EQ(q.log(), (std::vector<std::string>{"device_add gpu0", "device_add nic9"}));
}
