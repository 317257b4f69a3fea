// vmckpt libvirt-prepare DOMAIN [--connect URI] [--apply]: what a libvirt domain needs for
// vmckpt (file-backed shared memory for the fast path, the guest agent's channel), shown
// as a diff of its definition and applied only with --apply.
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "vmm/libvirt/connection.hpp"
#include "vmm/libvirt/prepare.hpp"

namespace vmckpt::cli {

void addLibvirtPrepare(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string domain, connect = "qemu:///system";
    bool apply = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "libvirt-prepare",
      "Show (and with --apply make) the changes a libvirt domain needs for vmckpt: file-backed shared memory (the "
      "fast path) and the guest agent's channel");
  sub->add_option("domain", o->domain, "libvirt domain name")->required();
  sub->add_option("--connect,-c", o->connect, "libvirt URI")->capture_default_str();
  sub->add_flag("--apply", o->apply,
                "Redefine the domain with the changes (they take effect at its next start from shut off)");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto conn = vmm::libvirt::Connection::open(o->connect);
      if (!conn) return fail(conn.error());
      auto dom = conn->lookup(o->domain);
      if (!dom) return fail(dom.error());
      auto xml = dom->xml(vmm::libvirt::Domain::Xml::persistent, true);
      if (!xml) return fail(xml.error());
      auto p = vmm::libvirt::prepareDomainXml(*xml);
      if (!p) return fail(p.error().context(cat("libvirt-prepare ", o->domain)));
      std::string diff = vmm::libvirt::unifiedDiff(*xml, p->xml, cat(o->domain, " (now)"),
                                                  cat(o->domain, " (for vmckpt)"));
      bool applied = false;
      if (o->apply && !p->changes.empty()) {
        auto d = conn->define(p->xml);
        if (!d) return fail(d.error().context(cat("libvirt-prepare ", o->domain)));
        applied = true;
      }
      std::string human;
      if (p->changes.empty()) {
        human = cat("domain ", o->domain, " is ready for vmckpt: nothing to change\n");
      } else {
        human = diff;
        human += applied ? cat("applied to domain ", o->domain,
                               "; it takes effect when the domain next starts from shut off\n")
                         : cat("not applied: run again with --apply to redefine domain ", o->domain, "\n");
      }
      for (const auto& n : p->notes) human += cat("note: ", n, "\n");
      if (!p->changes.empty())
        human += "note: the fast path clones the RAM file into the vmckpt store: set memory_backing_dir in "
                 "/etc/libvirt/qemu.conf to a directory on the store's btrfs or XFS filesystem, or RAM is copied "
                 "while the guest is paused\n";
      if (!human.empty() && human.back() == '\n') human.pop_back();
      ctx.emit(Json{{"domain", o->domain},
                    {"changes", p->changes},
                    {"notes", p->notes},
                    {"diff", diff},
                    {"applied", applied}},
               human);
      return {};
    };
  });
}

}  // namespace vmckpt::cli
