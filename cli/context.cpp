#include "cli/context.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "common/strings.hpp"
#include "vmm/libvirt/domain_snapshot.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::cli {

Result<vmm::VmManager> Context::manager() const {
  auto root = vmm::StoreRoot::open(home.empty() ? vmm::StoreRoot::defaultHome() : home);
  if (!root) return fail(root.error());
  return vmm::VmManager(std::move(*root));
}

void Context::emit(const Json& j, const std::string& human) const {
  // Guest output (console logs) may hold invalid UTF-8: replace it rather than throw.
  std::string out = json ? j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n" : human;
  if (!out.empty() && out.back() != '\n') out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  emitted = true;
}

bool Context::stdoutIsTty() const { return ::isatty(STDOUT_FILENO) == 1; }

ProgressLine::ProgressLine(const Context& ctx) : enabled_(!ctx.json && ::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::update(const std::string& text) {
  if (!enabled_) return;
  long long now = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch()).count();
  if (shown_ && now - lastMs_ < 200) return;
  lastMs_ = now;
  shown_ = true;
  std::fprintf(stderr, "\r\033[K%s", text.c_str());
  std::fflush(stderr);
}

void ProgressLine::done() {
  if (!shown_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  shown_ = false;
}

void addTransitionCommand(CLI::App& app, Context& ctx, const std::string& verb, const std::string& description,
                          bool toPaused) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand(verb, description);
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name, verb, toPaused] {
    ctx.action = [&ctx, name, verb, toPaused]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto t = toPaused ? mgr->pause(*name) : mgr->resume(*name);
      if (!t) return fail(t.error());
      Json j = t->status.toJson();
      j["event"] = t->event;
      j["elapsed_ms"] = t->elapsedMs;
      ctx.emit(j, cat(verb, "d VM ", *name, " (QMP ", t->event, " after ", static_cast<int>(t->elapsedMs + 0.5), " ms)"));
      return {};
    };
  });
}

void addSnapshotCommand(CLI::App& app, Context& ctx, const std::string& verb, const std::string& description,
                        std::function<Status(vmm::VmManager&, const vmm::store::SnapshotEntry&)> fn,
                        bool libvirtDomains) {
  auto refs = std::make_shared<std::vector<std::string>>();
  auto connect = std::make_shared<std::string>();
  auto* sub = app.add_subcommand(verb, description);
  sub->add_option("NAME SNAPSHOT", *refs,
                  "[VM name] then snapshot id, unique id prefix, or tag; without the VM name, all VMs are searched")
      ->required()
      ->expected(1, 2);
  if (libvirtDomains)
    sub->add_option("--connect,-c", *connect,
                    "A libvirt URI: NAME is a libvirt domain whose vmckpt snapshot this is (read from the store)");
  sub->callback([&ctx, refs, fn, connect] {
    ctx.action = [&ctx, refs, fn, connect]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      if (!connect->empty()) {
        if (refs->size() != 2) return fail(Errc::invalidArgument, "with --connect, name the domain and the snapshot");
        auto s = vmm::libvirt::findDomainSnapshot(mgr->root().home(), (*refs)[0], (*refs)[1]);
        if (!s) return fail(s.error());
        return fn(*mgr, *s);
      }
      if (refs->size() == 2) {
        auto s = mgr->findSnapshot((*refs)[0], (*refs)[1]);
        if (!s) return fail(s.error());
        return fn(*mgr, *s);
      }
      const std::string& ref = refs->front();
      auto vms = mgr->root().vmNames();
      if (!vms) return fail(vms.error());
      std::vector<vmm::store::SnapshotEntry> found;
      for (const auto& vm : *vms) {
        auto s = mgr->findSnapshot(vm, ref);
        if (s) found.push_back(std::move(*s));
        else if (s.error().code() != Errc::notFound) return fail(s.error());
      }
      if (found.empty()) return fail(Errc::notFound, cat("no snapshot ", ref, " in any VM"));
      if (found.size() > 1) {
        std::string where;
        for (const auto& s : found) where += cat(where.empty() ? "" : ", ", s.manifest.vm);
        return fail(Errc::invalidArgument, cat("snapshot ", ref, " matches in several VMs (", where, "); name the VM"));
      }
      return fn(*mgr, found.front());
    };
  });
}

std::string describeStatus(const vmm::VmStatus& s) {
  std::string out;
  auto line = [&out](std::string_view k, const std::string& v) {
    if (!v.empty()) out += cat(k, std::string(14 - std::min<size_t>(14, k.size()), ' '), v, "\n");
  };
  std::string state(vmm::vmStateName(s.state));
  if (!s.qemuStatus.empty() && s.qemuStatus != state) state += cat(" (QEMU: ", s.qemuStatus, ")");
  line("name", s.name);
  line("state", state);
  line("pid", s.pid > 0 ? std::to_string(s.pid) : "");
  line("vcpus", std::to_string(s.spec.vcpus));
  line("memory", cat(formatSize(s.spec.memoryBytes), s.spec.ram == vmm::RamBackend::anon
                                                        ? " (anonymous RAM: snapshots with --live)"
                                                        : " (RAM file in the store)"));
  line("machine", s.spec.machine);
  std::string accel(vmm::accelName(s.spec.accel));
  if (!s.accel.empty()) accel = cat(s.accel, " (requested ", vmm::accelName(s.spec.accel), "; ", s.accelReason, ")");
  line("accel", accel);
  line("boot", s.spec.kernelBoot ? (s.spec.hasInitrd ? "kernel + initrd" : "kernel") : "disk");
  line("disks", s.spec.disks.empty() ? "none" : [&] {
    std::string d;
    for (const auto& disk : s.spec.disks) d += cat(d.empty() ? "" : ", ", disk.file);
    return d;
  }());
  line("net", vmm::describeNet(s.spec.net));
  line("started", s.startedAt);
  line("stopped", s.stoppedAt);
  line("dir", s.dir);
  line("note", s.note);
  return out;
}

}  // namespace vmckpt::cli
