#include "vmm/store/manifest.hpp"

#include <sys/stat.h>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "vmm/json_integer.hpp"

namespace vmckpt::vmm::store {
namespace {

bool plainName(const std::string& n) {
  return !n.empty() && n.size() <= 255 && n.find('/') == std::string::npos && n != "." && n != "..";
}

// Every key a manifest of this format has. A key outside the list means another writer
// (a newer vmckpt that forgot to bump the format, or a hand edit): refused, not ignored,
// because restore acts on what the manifest says.
constexpr std::string_view kKnownKeys[] = {
    "format",         "id",    "vm",    "tag",     "parent",         "created",         "store_mode", "vmckpt_version",
    "qemu",           "was_running", "spec", "files", "agent", "timings", "devstate_bytes", "exclusive_bytes",
    "ram",            "group", "passthrough",
};

bool knownKey(std::string_view k) {
  for (auto known : kKnownKeys)
    if (k == known) return true;
  return false;
}

}  // namespace

std::string_view snapshotRamName(SnapshotRam r) { return r == SnapshotRam::stream ? "stream" : "file"; }

Result<SnapshotRam> parseSnapshotRam(std::string_view s) {
  if (s == "file") return SnapshotRam::file;
  if (s == "stream") return SnapshotRam::stream;
  return fail(Errc::corrupt, cat("snapshot RAM kind '", s.substr(0, 32), "' is not one this vmckpt knows (file, stream)"));
}

bool Manifest::devicesReleased() const {
  if (!agentPlugins.is_array()) return false;
  for (const Json& p : agentPlugins) {
    if (!p.is_object()) continue;
    auto data = p.find("data");
    if (data == p.end() || !data->is_object()) continue;
    auto released = data->find("released");
    if (released != data->end() && released->is_boolean() && released->get<bool>()) return true;
  }
  return false;
}

const ManifestFile* Manifest::file(const std::string& name) const {
  for (const auto& f : files)
    if (f.name == name) return &f;
  return nullptr;
}

Json Manifest::toJson() const {
  Json filesJ = Json::array();
  for (const auto& f : files) {
    Json fj = {{"name", f.name}, {"size", f.size}};
    if (!f.sha256.empty()) fj["sha256"] = f.sha256;
    filesJ.push_back(fj);
  }
  Json j = {
      {"format", {{"major", kFormatMajor}, {"minor", !unplugged.empty() ? 3 : group ? 2 : 1}}},
      {"id", id},
      {"vm", vm},
      {"tag", tag.empty() ? Json(nullptr) : Json(tag)},
      {"parent", parent.empty() ? Json(nullptr) : Json(parent)},
      {"created", created},
      {"store_mode", storeModeName(mode)},
      {"vmckpt_version", vmckptVersion},
      {"qemu", {{"version", qemuVersion}, {"machine", machine}}},
      {"was_running", wasRunning},
      {"spec", spec.toJson()},
      {"files", filesJ},
      {"agent", {{"quiesced", quiesced}, {"plugins", agentPlugins}}},
      {"timings",
       {{"quiesce_ms", timings.quiesceMs},
        {"flush_ms", timings.flushMs},
        {"pause_ms", timings.pauseMs},
        {"devstate_ms", timings.devstateMs},
        {"capture_ms", timings.captureMs},
        {"stream_ms", timings.streamMs},
        {"unplug_ms", timings.unplugMs},
        {"replug_ms", timings.replugMs},
        {"total_ms", timings.totalMs}}},
      {"ram", snapshotRamName(ram)},
      {"devstate_bytes", devstateBytes},
      {"exclusive_bytes", exclusiveBytes},
  };
  if (group) j["group"] = {{"name", group->name}, {"id", group->id}, {"vms", group->vms}};
  if (!unplugged.empty()) j["passthrough"] = {{"unplugged", unplugged}};
  return j;
}

Result<Manifest> Manifest::fromJson(const Json& j) {
  if (!j.is_object()) return fail(Errc::corrupt, "manifest is not a JSON object");
  try {
    const Json& f = j.at("format");
    int major = jsonInteger<int>(f.at("major"), "format major"), minor = jsonInteger<int>(f.at("minor"), "format minor");
    if (major > kFormatMajor || (major == kFormatMajor && minor > kFormatMinor))
      return fail(Errc::corrupt, cat("snapshot format ", major, ".", minor, " is newer than this vmckpt understands (",
                                     kFormatMajor, ".", kFormatMinor, "); upgrade vmckpt"));
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!knownKey(it.key()))
        return fail(Errc::corrupt, cat("manifest has an unknown key '", it.key().substr(0, 64),
                                       "' (written by another program or edited by hand)"));
    Manifest m;
    m.id = j.at("id").get<std::string>();
    m.vm = j.at("vm").get<std::string>();
    if (auto t = j.find("tag"); t != j.end() && t->is_string()) m.tag = t->get<std::string>();
    if (auto p = j.find("parent"); p != j.end() && p->is_string()) m.parent = p->get<std::string>();
    m.created = j.value("created", "");
    auto mode = parseStoreMode(j.at("store_mode").get<std::string>());
    if (!mode) return fail(Errc::corrupt, mode.error().message());
    m.mode = *mode;
    m.vmckptVersion = j.value("vmckpt_version", "");
    if (auto q = j.find("qemu"); q != j.end() && q->is_object()) {
      m.qemuVersion = q->value("version", "");
      m.machine = q->value("machine", "");
    }
    m.wasRunning = j.value("was_running", true);
    auto spec = VmSpec::fromJson(j.at("spec"));
    if (!spec) return fail(spec.error().context("manifest spec"));
    m.spec = std::move(*spec);
    for (const auto& fj : j.at("files")) {
      ManifestFile mf;
      mf.name = fj.at("name").get<std::string>();
      if (!plainName(mf.name)) return fail(Errc::corrupt, cat("manifest names a file '", mf.name, "' that is not a plain name"));
      mf.size = jsonInteger<std::uint64_t>(fj.at("size"), "file size");
      mf.sha256 = fj.value("sha256", "");
      m.files.push_back(std::move(mf));
    }
    if (auto t = j.find("timings"); t != j.end() && t->is_object()) {
      m.timings.quiesceMs = t->value("quiesce_ms", 0.0);
      m.timings.flushMs = t->value("flush_ms", 0.0);
      m.timings.pauseMs = t->value("pause_ms", 0.0);
      m.timings.devstateMs = t->value("devstate_ms", 0.0);
      m.timings.captureMs = t->value("capture_ms", 0.0);
      m.timings.streamMs = t->value("stream_ms", 0.0);
      m.timings.unplugMs = t->value("unplug_ms", 0.0);
      m.timings.replugMs = t->value("replug_ms", 0.0);
      m.timings.totalMs = t->value("total_ms", 0.0);
    }
    if (auto a = j.find("agent"); a != j.end() && a->is_object()) {
      m.quiesced = a->value("quiesced", false);
      if (auto pl = a->find("plugins"); pl != a->end() && pl->is_array()) m.agentPlugins = *pl;
    }
    if (auto r = j.find("ram"); r != j.end()) {  // absent before format 1.1: the RAM file
      if (!r->is_string()) return fail(Errc::corrupt, "manifest key 'ram' is not a string");
      auto ram = parseSnapshotRam(r->get<std::string>());
      if (!ram) return fail(ram.error());
      m.ram = *ram;
    }
    if (auto g = j.find("group"); g != j.end()) {
      if (!g->is_object()) return fail(Errc::corrupt, "manifest key 'group' is not an object");
      SnapshotGroup sg;
      sg.name = g->at("name").get<std::string>();
      sg.id = g->at("id").get<std::string>();
      for (const auto& v : g->at("vms")) sg.vms.push_back(v.get<std::string>());
      if (!plainName(sg.id) || sg.vms.empty() || sg.vms.size() > 256)
        return fail(Errc::corrupt, "manifest group is malformed (id not a plain name, or no or too many members)");
      m.group = std::move(sg);
    }
    if (auto pt = j.find("passthrough"); pt != j.end()) {
      if (!pt->is_object()) return fail(Errc::corrupt, "manifest key 'passthrough' is not an object");
      for (const auto& id : pt->at("unplugged")) {
        std::string unpluggedId = id.get<std::string>();
        bool known = false;
        for (const auto& d : m.spec.passthrough) known = known || d.id == unpluggedId;
        if (!known)
          return fail(Errc::corrupt, cat("manifest says '", unpluggedId.substr(0, 32),
                                         "' was unplugged, but its spec has no such passthrough device"));
        m.unplugged.push_back(std::move(unpluggedId));
      }
    }
    if (auto d = j.find("devstate_bytes"); d != j.end()) m.devstateBytes = jsonInteger<std::uint64_t>(*d, "devstate_bytes");
    if (auto x = j.find("exclusive_bytes"); x != j.end())
      m.exclusiveBytes = jsonInteger<std::uint64_t>(*x, "exclusive_bytes");
    if (!plainName(m.id)) return fail(Errc::corrupt, "manifest id is not a plain name");
    return m;
  } catch (const Json::exception& e) {
    return fail(Errc::corrupt, cat("manifest: ", e.what()));
  }
}

Result<Manifest> readManifest(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return fail(Errc::corrupt, cat(path, ": ", S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file",
                                   ", not a manifest vmckpt wrote"));
  auto text = fs::readFile(path, kMaxManifestBytes);
  if (!text) return fail(text.error());
  auto j = Json::parse(*text, nullptr, false);
  if (j.is_discarded()) return fail(Errc::corrupt, cat(path, ": not valid JSON"));
  auto m = Manifest::fromJson(j);
  if (!m) return fail(m.error().context(path));
  return m;
}

Status writeManifest(const std::string& path, const Manifest& m) {
  return fs::writeFileAtomic(path, m.toJson().dump(2) + "\n", 0600);
}

}  // namespace vmckpt::vmm::store
