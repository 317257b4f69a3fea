#include "host-plugins/vfio/hotplug.hpp"

#include <optional>

#include "common/log.hpp"
#include "common/strings.hpp"

namespace vmckpt::vfio {
namespace {

std::string peripheralPath(std::string_view id) { return cat("/machine/peripheral/", id); }

Status plugOne(qmp::Client& c, const PassthroughDevice& d, const HotplugOptions& o) {
  if (auto r = c.execute("device_add", deviceAddArguments(d), Deadline::in(o.commandTimeout)); !r)
    return fail(r.error().context(cat("device_add ", d.id)));
  auto present = devicePresent(c, d.id, Deadline::in(o.commandTimeout));
  if (!present) return fail(present.error().context(cat("device_add ", d.id)));
  if (!*present)
    return fail(Errc::processFailed, cat("device_add ", d.id, ": QEMU accepted it, but it is not present"));
  log::debug("plugged ", d.id, " (", d.driver, ") into ", slotId(d.id));
  return {};
}

// `removed` says whether the device is gone when this returns, whatever the result.
Status unplugOne(qmp::Client& c, const PassthroughDevice& d, const HotplugOptions& o, bool& removed) {
  removed = false;
  auto before = devicePresent(c, d.id, Deadline::in(o.commandTimeout));
  if (!before) return fail(before.error().context(cat("device_del ", d.id)));
  if (!*before) return fail(Errc::wrongState, cat("device_del ", d.id, ": the device is not plugged in"));
  if (auto r = c.execute("device_del", {{"id", d.id}}, Deadline::in(o.commandTimeout)); !r)
    return fail(r.error().context(cat("device_del ", d.id)));
  auto deleted = [&d](const qmp::Event& e) {
    return e.name == "DEVICE_DELETED" && qmp::stringField(e.data, "device") == d.id;
  };
  auto ev = c.waitEvent(deleted, Deadline::in(o.unplugTimeout));
  auto after = devicePresent(c, d.id, Deadline::in(o.commandTimeout));
  removed = after && !*after;
  if (!ev) {
    if (ev.error().code() != Errc::timeout) return fail(ev.error().context(cat("device_del ", d.id)));
    if (!removed) {
      // The request stays with the guest; a release just after the timeout is seen here,
      // so that the caller's rollback plugs the device back.
      (void)c.waitEvent(deleted, Deadline::in(o.lateReleaseGrace));
      auto late = devicePresent(c, d.id, Deadline::in(o.commandTimeout));
      removed = late && !*late;
      return fail(Errc::timeout,
                  cat("device_del ", d.id, ": the guest did not release it within ", o.unplugTimeout.count(),
                      " ms (no DEVICE_DELETED)", removed ? "; it did later, and was plugged back" : ""));
    }
    // Gone although the event was not seen: accepted, the device is what matters.
  }
  if (!after) return fail(after.error().context(cat("device_del ", d.id)));
  if (!removed)
    return fail(Errc::processFailed, cat("device_del ", d.id, ": DEVICE_DELETED came, but it is still present"));
  log::debug("unplugged ", d.id, " (", d.driver, ")");
  return {};
}

}  // namespace

Result<bool> devicePresent(qmp::Client& c, std::string_view id, Deadline deadline) {
  auto r = c.execute("qom-get", {{"path", peripheralPath(id)}, {"property", "realized"}}, deadline);
  if (r) return r->is_boolean() && r->get<bool>();
  // QEMU answers a path that does not resolve with DeviceNotFound (GenericError before 6.0).
  if (r.error().code() == Errc::qmp &&
      (r.error().qmpClass() == "DeviceNotFound" || r.error().message().find("not found") != std::string::npos))
    return false;
  return fail(r.error());
}

Status unplugAll(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts) {
  std::vector<const PassthroughDevice*> removed;
  for (const auto& d : devices) {
    bool gone = false;
    auto s = unplugOne(c, d, opts, gone);
    if (gone) removed.push_back(&d);
    if (s && opts.afterEachUnplug) s = opts.afterEachUnplug(d);
    if (s) continue;
    // Put back what this call removed, the last first, so the VM has its devices again.
    std::string message = s.error().message();
    for (auto it = removed.rbegin(); it != removed.rend(); ++it)
      if (auto p = plugOne(c, **it, opts); !p)
        message += cat("; putting ", (*it)->id, " back failed too: ", p.error().message());
    return fail(Error(s.error().code(), message, s.error().sysErrno()));
  }
  return {};
}

Status plugAll(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts) {
  std::optional<Error> first;
  size_t failed = 0;
  for (const auto& d : devices) {
    auto p = plugOne(c, d, opts);
    if (p) continue;
    ++failed;
    if (!first)
      first = p.error();
    else
      log::error(p.error().message());
  }
  if (!first) return {};
  if (failed == 1) return fail(*first);
  return fail(Error(first->code(),
                    cat(first->message(), " (and ", failed - 1, " more device", failed > 2 ? "s" : "", " not plugged)"),
                    first->sysErrno()));
}

Status plugMissing(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts) {
  std::vector<PassthroughDevice> missing;
  for (const auto& d : devices) {
    auto present = devicePresent(c, d.id, Deadline::in(opts.commandTimeout));
    if (!present) return fail(present.error());
    if (!*present) missing.push_back(d);
  }
  return plugAll(c, missing, opts);
}

}  // namespace vmckpt::vfio
