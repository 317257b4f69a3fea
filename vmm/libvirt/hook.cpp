#include "vmm/libvirt/hook.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/libvirt/domain_xml.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm::libvirt {

namespace {

constexpr int kRecordMajor = 1;
constexpr std::size_t kMaxRecordBytes = 1 << 20;

std::string libvirtDir(const std::string& home) { return home + "/libvirt"; }

// A domain's record, tolerating unknown keys; missing file: an empty object.
Result<Json> loadRecordJson(const std::string& path) {
  if (!fs::exists(path)) return Json::object();
  auto text = fs::readFile(path, kMaxRecordBytes);
  if (!text) return fail(text.error());
  Json j = Json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Errc::corrupt, cat(path, ": not a JSON object"));
  if (j.contains("format")) {
    const Json& f = j["format"];
    if (!f.is_string() || std::atoi(f.get<std::string>().c_str()) > kRecordMajor)
      return fail(Errc::corrupt, cat(path, ": format ", f.dump(), " is newer than this vmckpt knows (1.x)"));
  }
  return j;
}

Status saveRecordJson(const std::string& home, const std::string& path, Json j) {
  j["format"] = cat(kRecordMajor, ".0");
  VMCKPT_TRY(fs::makeDirs(libvirtDir(home) + "/domains", 0700));
  return fs::writeFileAtomic(path, j.dump(2) + "\n", 0600);
}

// One line per call; O_APPEND keeps concurrent hooks' lines whole (each is one write).
Status appendLog(const std::string& home, const Json& entry) {
  VMCKPT_TRY(fs::makeDirs(libvirtDir(home), 0700));
  std::string path = hookLogPath(home), line = entry.dump() + "\n";
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return failErrno(cat("open ", path), errno);
  ssize_t n = ::write(fd.get(), line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) return failErrno(cat("write ", path), n < 0 ? errno : EIO);
  return {};
}

Status recordEnd(const std::string& home, const std::string& domain, const std::string& when) {
  std::string path = domainRecordPath(home, domain);
  auto j = loadRecordJson(path);
  if (!j) return fail(j.error());
  (*j)["ended"] = when;
  return saveRecordJson(home, path, std::move(*j));
}

Result<std::optional<std::string>> rewrite(const std::string& home, const HookCall& call, const std::string& xml,
                                           Json& entry) {
  // A name that cannot be a path has no record, hence no map: nothing to rewrite.
  if (!validateDomainName(call.domain)) {
    entry["note"] = "domain name not usable as a vmckpt record name: no device map";
    return std::optional<std::string>();
  }
  auto map = loadDomainDeviceMap(home, call.domain);
  if (!map) return fail(map.error());
  if (map->empty()) return std::optional<std::string>();
  auto r = applyDeviceMap(xml, *map);
  if (!r) return fail(r.error().context(cat("rewrite domain ", call.domain, " for ", call.op)));
  entry["changes"] = r->changes;
  return std::optional<std::string>(std::move(r->xml));
}

}  // namespace

Status validateDomainName(std::string_view domain) {
  auto ok = validateVmName(domain);
  if (!ok) return fail(Errc::invalidArgument, cat("libvirt domain '", domain, "': ", ok.error().message()));
  return {};
}

bool rewritesXml(const HookCall& call) { return call.op == "migrate" || call.op == "restore"; }

std::string hookLogPath(const std::string& home) { return libvirtDir(home) + "/hook.log"; }

std::string domainRecordPath(const std::string& home, const std::string& domain) {
  return cat(libvirtDir(home), "/domains/", domain, ".json");
}

Result<DeviceMap> loadDomainDeviceMap(const std::string& home, const std::string& domain) {
  VMCKPT_TRY(validateDomainName(domain));
  std::string path = domainRecordPath(home, domain);
  auto j = loadRecordJson(path);
  if (!j) return fail(j.error());
  DeviceMap map;
  if (!j->contains("device_map")) return map;
  const Json& m = (*j)["device_map"];
  if (!m.is_object()) return fail(Errc::corrupt, cat(path, ": device_map is not an object"));
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string()) return fail(Errc::corrupt, cat(path, ": device_map.", k, " is not a string"));
    auto ok = parseDeviceMapArg(cat(k, "=", v.get<std::string>()), map);
    if (!ok) return fail(ok.error().context(path));
  }
  return map;
}

Status saveDomainDeviceMap(const std::string& home, const std::string& domain, const DeviceMap& map) {
  VMCKPT_TRY(validateDomainName(domain));
  std::string path = domainRecordPath(home, domain);
  auto j = loadRecordJson(path);
  if (!j) return fail(j.error());
  (*j)["device_map"] = map;
  return saveRecordJson(home, path, std::move(*j));
}

Result<std::optional<std::string>> runHook(const std::string& home, const HookCall& call, const std::string& domainXml) {
  std::string now = nowIso();
  Json entry = {{"time", now}, {"domain", call.domain}, {"op", call.op}, {"sub", call.sub}, {"extra", call.extra}};
  if (rewritesXml(call)) {
    auto out = rewrite(home, call, domainXml, entry);
    if (!out) entry["error"] = out.error().message();
    auto logged = appendLog(home, entry);
    if (!out) return fail(out.error());
    if (!logged) return fail(logged.error().context("libvirt hook log"));
    return out;
  }
  if (call.op == "release") {
    auto ended = validateDomainName(call.domain);
    if (ended) ended = recordEnd(home, call.domain, now);
    if (!ended) entry["error"] = ended.error().message();
  }
  VMCKPT_TRY(appendLog(home, entry));
  return std::optional<std::string>();
}

}  // namespace vmckpt::vmm::libvirt
