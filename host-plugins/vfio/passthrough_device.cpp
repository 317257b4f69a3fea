#include "host-plugins/vfio/passthrough_device.hpp"

#include "common/strings.hpp"

namespace vmckpt::vfio {
namespace {

constexpr size_t kMaxIdLength = 24;  // "pci_" + id stays within the device map's 32
constexpr size_t kMaxValueLength = 128;
constexpr size_t kMaxProps = 16;
constexpr unsigned kFirstChassis = 64;  // away from the chassis numbers a hand-written root port uses

bool lowerOrDigit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool alnum(char c) { return lowerOrDigit(c) || (c >= 'A' && c <= 'Z'); }
bool hexDigit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

Status validateDriver(std::string_view s) {
  if (s.empty() || s.size() > 64 || !alnum(s[0]))
    return fail(Errc::invalidArgument,
                cat("passthrough driver '", s, "' must be 1-64 characters starting with a letter or digit"));
  for (char c : s)
    if (!alnum(c) && c != '-' && c != '_' && c != '.')
      return fail(Errc::invalidArgument,
                  cat("passthrough driver '", s, "' may only contain letters, digits, '-', '_', '.'"));
  return {};
}

Status validateId(std::string_view s) {
  if (s.empty() || s.size() > kMaxIdLength || s[0] < 'a' || s[0] > 'z')
    return fail(Errc::invalidArgument, cat("passthrough id '", s, "' must be 1-", kMaxIdLength,
                                           " characters starting with a lowercase letter"));
  for (char c : s)
    if (!lowerOrDigit(c) && c != '_')
      return fail(Errc::invalidArgument, cat("passthrough id '", s, "' may only contain a-z, 0-9, '_'"));
  return {};
}

Status validateProp(std::string_view id, std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > 32 || !alnum(key[0]))
    return fail(Errc::invalidArgument, cat("passthrough ", id, ": property name '", key,
                                           "' must be 1-32 characters starting with a letter or digit"));
  for (char c : key)
    if (!alnum(c) && c != '-' && c != '_' && c != '.')
      return fail(Errc::invalidArgument, cat("passthrough ", id, ": property name '", key,
                                             "' may only contain letters, digits, '-', '_', '.'"));
  if (key == "id" || key == "bus" || key == "driver")
    return fail(Errc::invalidArgument, cat("passthrough ", id, ": property '", key, "' is set by vmckpt"));
  if (value.empty() || value.size() > kMaxValueLength)
    return fail(Errc::invalidArgument,
                cat("passthrough ", id, ": value of '", key, "' must be 1-", kMaxValueLength, " characters"));
  for (char c : value)
    if (!alnum(c) && c != '-' && c != '_' && c != '.' && c != ':' && c != '/' && c != '@' && c != '+')
      return fail(Errc::invalidArgument,
                  cat("passthrough ", id, ": value of '", key, "' may only contain letters, digits and - _ . : / @ +"));
  if (key == "host" && !isPciAddress(value))
    return fail(Errc::invalidArgument,
                cat("passthrough ", id, ": host '", value, "' is not a PCI address (DDDD:BB:DD.F, e.g. 0000:65:00.0)"));
  return {};
}

}  // namespace

std::string PassthroughDevice::prop(std::string_view key) const {
  for (const auto& [k, v] : props)
    if (k == key) return v;
  return {};
}

bool isPciAddress(std::string_view s) {
  // [DDDD:]BB:DD.F
  if (s.size() == 12) {
    if (s[4] != ':') return false;
    for (size_t i = 0; i < 4; ++i)
      if (!hexDigit(s[i])) return false;
    s.remove_prefix(5);
  }
  return s.size() == 7 && hexDigit(s[0]) && hexDigit(s[1]) && s[2] == ':' && hexDigit(s[3]) && hexDigit(s[4]) &&
         s[5] == '.' && s[6] >= '0' && s[6] <= '7';
}

Status validate(const PassthroughDevice& d) {
  VMCKPT_TRY(validateDriver(d.driver));
  VMCKPT_TRY(validateId(d.id));
  if (d.props.size() > kMaxProps)
    return fail(Errc::invalidArgument, cat("passthrough ", d.id, ": more than ", kMaxProps, " properties"));
  for (size_t i = 0; i < d.props.size(); ++i) {
    VMCKPT_TRY(validateProp(d.id, d.props[i].first, d.props[i].second));
    for (size_t j = 0; j < i; ++j)
      if (d.props[j].first == d.props[i].first)
        return fail(Errc::invalidArgument,
                    cat("passthrough ", d.id, ": property '", d.props[i].first, "' given twice"));
  }
  return {};
}

Status validateAll(const std::vector<PassthroughDevice>& devices) {
  if (devices.size() > kMaxPassthroughDevices)
    return fail(Errc::invalidArgument, cat("at most ", kMaxPassthroughDevices, " passthrough devices"));
  for (size_t i = 0; i < devices.size(); ++i) {
    VMCKPT_TRY(validate(devices[i]));
    for (size_t j = 0; j < i; ++j)
      if (devices[j].id == devices[i].id)
        return fail(Errc::invalidArgument, cat("passthrough id '", devices[i].id, "' is used twice"));
  }
  return {};
}

Result<PassthroughDevice> parsePassthrough(std::string_view arg) {
  const char* usage = " (DRIVER,id=ID[,KEY=VALUE...], e.g. vfio-pci,id=gpu0,host=0000:65:00.0)";
  auto parts = split(arg, ',');
  PassthroughDevice d;
  d.driver = parts[0];
  VMCKPT_TRY(validateDriver(d.driver));
  for (size_t i = 1; i < parts.size(); ++i) {
    auto eq = parts[i].find('=');
    if (eq == std::string::npos)
      return fail(Errc::invalidArgument, cat("--passthrough '", arg, "': '", parts[i], "' is not KEY=VALUE", usage));
    std::string key = parts[i].substr(0, eq), value = parts[i].substr(eq + 1);
    if (key == "id" && d.id.empty() && i == 1)
      d.id = value;
    else
      d.props.emplace_back(std::move(key), std::move(value));
  }
  if (d.id.empty())
    return fail(Errc::invalidArgument, cat("--passthrough '", arg, "' has no id= after the driver", usage));
  VMCKPT_TRY(validate(d));
  return d;
}

std::string describe(const PassthroughDevice& d) {
  std::string s = cat(d.driver, ",id=", d.id);
  for (const auto& [k, v] : d.props) s += cat(",", k, "=", v);
  return s;
}

Json toJson(const PassthroughDevice& d) {
  Json props = Json::array();
  for (const auto& [k, v] : d.props) props.push_back(Json::array({k, v}));
  return {{"driver", d.driver}, {"id", d.id}, {"props", props}};
}

Result<PassthroughDevice> fromJson(const Json& j) {
  if (!j.is_object()) return fail(Errc::corrupt, "passthrough device is not a JSON object");
  auto str = [&](const char* key) -> std::string {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  PassthroughDevice d{str("driver"), str("id"), {}};
  if (auto p = j.find("props"); p != j.end()) {
    if (!p->is_array() || p->size() > kMaxProps)
      return fail(Errc::corrupt, cat("passthrough ", d.id, ": props is malformed"));
    for (const Json& kv : *p) {
      if (!kv.is_array() || kv.size() != 2 || !kv[0].is_string() || !kv[1].is_string())
        return fail(Errc::corrupt, cat("passthrough ", d.id, ": a property is not a [key, value] pair"));
      d.props.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
    }
  }
  if (auto v = validate(d); !v) return fail(Errc::corrupt, v.error().message());
  return d;
}

std::string slotId(std::string_view deviceId) { return cat("vmckpt-slot-", deviceId); }

std::string slotCommandLine(const PassthroughDevice& d, size_t index) {
  return cat("pcie-root-port,id=", slotId(d.id), ",chassis=", kFirstChassis + index, ",slot=0");
}

std::string deviceCommandLine(const PassthroughDevice& d) {
  std::string s = cat(d.driver, ",id=", d.id, ",bus=", slotId(d.id));
  for (const auto& [k, v] : d.props) s += cat(",", k, "=", v);
  return s;
}

Json deviceAddArguments(const PassthroughDevice& d) {
  Json args = {{"driver", d.driver}, {"id", d.id}, {"bus", slotId(d.id)}};
  for (const auto& [k, v] : d.props) args[k] = v;
  return args;
}

std::string deviceMapKey(std::string_view id) { return cat(kDeviceMapPrefix, id); }

Result<std::vector<PassthroughDevice>> applyDeviceMap(const std::vector<PassthroughDevice>& devices,
                                                      const std::map<std::string, std::string>& map) {
  std::vector<PassthroughDevice> out = devices;
  for (const auto& [key, value] : map) {
    if (!startsWith(key, kDeviceMapPrefix)) continue;
    const std::string id = key.substr(kDeviceMapPrefix.size());
    PassthroughDevice* d = nullptr;
    for (auto& candidate : out)
      if (candidate.id == id) d = &candidate;
    if (!d) {
      std::vector<std::string> ids;
      for (const auto& o : out) ids.push_back(o.id);
      return fail(Errc::invalidArgument, cat("device map key '", key, "' names no passthrough device of this VM (",
                                             ids.empty() ? "it has none" : cat("it has ", join(ids, ", ")), ")"));
    }
    if (!isPciAddress(value))
      return fail(Errc::invalidArgument,
                  cat("device map ", key, "=", value, ": not a PCI address (DDDD:BB:DD.F, e.g. 0000:66:00.0)"));
    bool replaced = false;
    for (auto& [k, v] : d->props)
      if (k == "host") {
        v = value;
        replaced = true;
      }
    if (!replaced)
      return fail(Errc::invalidArgument,
                  cat("device map ", key, ": passthrough device ", id, " (", d->driver, ") has no host= to replace"));
  }
  return out;
}

}  // namespace vmckpt::vfio
