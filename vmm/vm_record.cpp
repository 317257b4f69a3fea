#include "vmm/vm_record.hpp"

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/fs.hpp"

namespace vmckpt::vmm {

namespace {
constexpr int kRecordFormat = 1;
}

std::string nowIso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

VmRecord loadRecord(const VmPaths& p) {
  VmRecord r;
  auto text = fs::readFile(p.lifecycle, 64 << 10);
  if (!text) return r;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object()) return r;
  r.startedAt = j.value("started_at", "");
  r.stoppedAt = j.value("stopped_at", "");
  r.stopKind = j.value("stop_kind", "");
  r.accel = j.value("accel", "");
  r.accelReason = j.value("accel_reason", "");
  r.machine = j.value("machine", "");
  r.head = j.value("head", "");
  r.pendingRestored = j.value("pending_restored", false);
  return r;
}

Status saveRecord(const VmPaths& p, const VmRecord& r) {
  nlohmann::json j = {{"format", kRecordFormat}, {"started_at", r.startedAt}, {"stopped_at", r.stoppedAt},
                      {"stop_kind", r.stopKind}, {"accel", r.accel},           {"accel_reason", r.accelReason},
                      {"machine", r.machine},    {"head", r.head},           {"pending_restored", r.pendingRestored}};
  return fs::writeFileAtomic(p.lifecycle, j.dump(2) + "\n");
}

}  // namespace vmckpt::vmm
