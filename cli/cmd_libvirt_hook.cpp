// vmckpt libvirt-hook install|uninstall|run|map: vmckpt as libvirt's qemu hook
// (vmm/libvirt/hook.hpp). `run` is what libvirtd calls; its stdout belongs to libvirt.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>

#include "cli/context.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "vmm/libvirt/domain_xml.hpp"
#include "vmm/libvirt/hook.hpp"
#include "vmm/libvirt/hook_install.hpp"
#include "vmm/store_root.hpp"

namespace vmckpt::cli {

namespace lv = vmm::libvirt;

namespace {

std::string storeHome(const Context& ctx) {
  return fs::absolute(ctx.home.empty() ? vmm::StoreRoot::defaultHome() : ctx.home);
}

// Reads the domain XML libvirt writes on stdin: up to `cap` bytes kept, the rest drained
// (libvirt must never see a broken pipe); `truncated` says whether there was more.
Result<std::string> readStdin(std::size_t cap, bool& truncated) {
  std::string text;
  char buf[65536];
  truncated = false;
  for (;;) {
    ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failErrno("read domain XML from stdin", errno);
    if (n == 0) return text;
    std::size_t keep = std::min<std::size_t>(static_cast<std::size_t>(n), cap - std::min(cap, text.size()));
    text.append(buf, keep);
    if (keep < static_cast<std::size_t>(n)) truncated = true;
  }
}

Status writeStdout(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    return failErrno("write domain XML to stdout", errno);
  return {};
}

// install and uninstall: one registration, a --hooks-dir option, and what each does with it.
void addHooksDirCommand(CLI::App& parent, Context& ctx, const std::string& name, const std::string& description,
                        std::function<Status(const Context&, const std::string& hooksDir)> fn) {
  auto dir = std::make_shared<std::string>(lv::kDefaultHooksDir);
  auto* sub = parent.add_subcommand(name, description);
  sub->add_option("--hooks-dir", *dir, "libvirt's qemu hook directory")->capture_default_str();
  sub->callback([&ctx, dir, fn] { ctx.action = [&ctx, dir, fn]() { return fn(ctx, fs::absolute(*dir)); }; });
}

Status install(const Context& ctx, const std::string& hooksDir) {
  auto root = vmm::StoreRoot::open(storeHome(ctx));
  if (!root) return fail(root.error());
  auto self = lv::selfExecutable();
  if (!self) return fail(self.error());
  auto path = lv::installHook(hooksDir, *self, root->home());
  if (!path) return fail(path.error());
  std::string note = "libvirtd reads a qemu.d directory that was empty (or missing) when it started only after "
                     "a restart: restart libvirtd if this is the first hook there";
  ctx.emit(Json{{"hook", *path}, {"store", root->home()}, {"binary", *self}, {"note", note}},
           cat("installed libvirt hook ", *path, " (runs ", *self, " for store ", root->home(), ")\n", note));
  return {};
}

Status uninstall(const Context& ctx, const std::string& hooksDir) {
  auto path = lv::uninstallHook(hooksDir);
  if (!path) return fail(path.error());
  ctx.emit(Json{{"removed", *path}}, cat("removed libvirt hook ", *path));
  return {};
}

void addRun(CLI::App& parent, Context& ctx) {
  auto call = std::make_shared<lv::HookCall>();
  auto* sub = parent.add_subcommand(
      "run", "What libvirtd runs (DOMAIN OP SUB EXTRA, domain XML on stdin); prints a rewritten XML on restore/migrate "
             "of a domain with a device map");
  sub->add_option("domain", call->domain, "Domain name")->required();
  sub->add_option("op", call->op, "Operation (prepare, start, started, stopped, release, migrate, restore, ...)")->required();
  sub->add_option("sub", call->sub, "Sub-operation (begin, end, -)");
  sub->add_option("extra", call->extra, "Extra argument (-)");
  sub->callback([&ctx, call] {
    ctx.action = [&ctx, call]() -> Status {
      bool truncated = false;
      auto xml = readStdin(lv::kMaxDomainXmlBytes + 1, truncated);
      std::string home = storeHome(ctx);
      Result<std::optional<std::string>> out = fail(Errc::internal, "not run");
      if (!xml) out = fail(xml.error());
      else if (truncated && lv::rewritesXml(*call))
        out = fail(Errc::invalidArgument, cat("domain XML on stdin is larger than ", lv::kMaxDomainXmlBytes, " bytes"));
      else out = lv::runHook(home, *call, *xml);
      if (out && *out) return writeStdout(**out);
      if (out) return {};
      Error e = out.error().context(cat("libvirt hook ", call->domain, " ", call->op));
      if (lv::rewritesXml(*call)) return fail(e);
      // Any other operation goes on: a vmckpt failure must not stop the user's domains.
      std::fprintf(stderr, "vmckpt: warning: %s\n", e.message().c_str());
      return {};
    };
  });
}

void addMap(CLI::App& parent, Context& ctx) {
  struct Opts {
    std::string domain;
    std::vector<std::string> maps;
    bool clear = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = parent.add_subcommand("map", "Show or set the device map the hook applies to DOMAIN on restore/migrate");
  sub->add_option("domain", o->domain, "libvirt domain name")->required();
  sub->add_option("--map", o->maps, "KEY=VALUE (gpu=none, ib=rxe:eth0, net=user|none; repeatable; replaces the map)");
  sub->add_flag("--clear", o->clear, "Remove the domain's device map");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      std::string home = storeHome(ctx);
      vmm::DeviceMap map;
      if (!o->maps.empty() || o->clear) {
        if (o->clear && !o->maps.empty()) return fail(Errc::invalidArgument, "libvirt-hook map: --clear and --map exclude each other");
        for (const auto& m : o->maps) VMCKPT_TRY(vmm::parseDeviceMapArg(m, map));
        VMCKPT_TRY(lv::saveDomainDeviceMap(home, o->domain, map));
      } else {
        auto loaded = lv::loadDomainDeviceMap(home, o->domain);
        if (!loaded) return fail(loaded.error());
        map = std::move(*loaded);
      }
      std::vector<std::string> kv;
      for (const auto& [k, v] : map) kv.push_back(cat(k, "=", v));
      ctx.emit(Json{{"domain", o->domain}, {"device_map", map}},
               cat("domain ", o->domain, ": ", kv.empty() ? std::string("no device map") : join(kv, " ")));
      return {};
    };
  });
}

}  // namespace

void addLibvirtHook(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("libvirt-hook", "vmckpt as libvirt's qemu hook: install, uninstall, map, run");
  sub->require_subcommand(1);
  addHooksDirCommand(*sub, ctx, "install", "Install <hooks-dir>/50-vmckpt, which runs this vmckpt for this store",
                     install);
  addHooksDirCommand(*sub, ctx, "uninstall", "Remove <hooks-dir>/50-vmckpt if vmckpt installed it", uninstall);
  addRun(*sub, ctx);
  addMap(*sub, ctx);
}

}  // namespace vmckpt::cli
