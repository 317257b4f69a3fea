#include "vmm/libvirt/connection.hpp"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "common/strings.hpp"

namespace vmckpt::vmm::libvirt {
namespace {

virConnectPtr C(void* p) { return static_cast<virConnectPtr>(p); }
virDomainPtr D(void* p) { return static_cast<virDomainPtr>(p); }

// libvirt prints every error to stderr by default; vmckpt reports them itself.
void quiet(void*, virErrorPtr) {}
void silenceLibvirt() {
  static std::once_flag once;
  std::call_once(once, [] { virSetErrorFunc(nullptr, quiet); });
}

// libvirt's last error of this thread, as one line.
std::string lastError() {
  virErrorPtr e = virGetLastError();
  std::string msg = e && e->message ? e->message : "unknown libvirt error";
  for (char& c : msg)
    if (c == '\n') c = ' ';
  return msg;
}
int lastCode() {
  virErrorPtr e = virGetLastError();
  return e ? e->code : 0;
}

Error callFailed(std::string_view what) { return Error(Errc::io, cat(what, ": ", lastError())); }

}  // namespace

Result<Connection> Connection::open(const std::string& uri) {
  silenceLibvirt();
  virConnectPtr c = virConnectOpen(uri.c_str());
  if (!c) {
    std::string why = lastError();
    int code = lastCode();
    if (code == VIR_ERR_SYSTEM_ERROR || code == VIR_ERR_NO_CONNECT || why.find("connect") != std::string::npos)
      return fail(Errc::io, cat("cannot reach libvirt at ", uri, ": libvirtd is not running or listens elsewhere (", why, ")"));
    return fail(Errc::io, cat("cannot open libvirt connection ", uri, ": ", why));
  }
  return Connection(c, uri);
}

Connection::Connection(Connection&& o) noexcept : conn_(o.conn_), uri_(std::move(o.uri_)) { o.conn_ = nullptr; }
Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    if (conn_) virConnectClose(C(conn_));
    conn_ = o.conn_;
    uri_ = std::move(o.uri_);
    o.conn_ = nullptr;
  }
  return *this;
}
Connection::~Connection() {
  if (conn_) virConnectClose(C(conn_));
}

Result<Domain> Connection::lookup(const std::string& name) const {
  virDomainPtr d = virDomainLookupByName(C(conn_), name.c_str());
  if (!d) {
    if (lastCode() == VIR_ERR_NO_DOMAIN)
      return fail(Errc::notFound, cat("libvirt at ", uri_, " has no domain named '", name, "' (virsh list --all)"));
    return fail(callFailed(cat("look up domain ", name)));
  }
  return Domain(d, name);
}

Result<Domain> Connection::define(const std::string& xml) const {
  virDomainPtr d = virDomainDefineXML(C(conn_), xml.c_str());
  if (!d) return fail(callFailed("define the domain"));
  const char* n = virDomainGetName(d);
  return Domain(d, n ? n : "");
}

std::string_view domainStateName(DomainState s) {
  switch (s) {
    case DomainState::shutoff: return "shut off";
    case DomainState::running: return "running";
    case DomainState::paused: return "paused";
    case DomainState::other: break;
  }
  return "other";
}

Domain::Domain(Domain&& o) noexcept : dom_(o.dom_), name_(std::move(o.name_)) { o.dom_ = nullptr; }
Domain& Domain::operator=(Domain&& o) noexcept {
  if (this != &o) {
    if (dom_) virDomainFree(D(dom_));
    dom_ = o.dom_;
    name_ = std::move(o.name_);
    o.dom_ = nullptr;
  }
  return *this;
}
Domain::~Domain() {
  if (dom_) virDomainFree(D(dom_));
}

Result<DomainState> Domain::state() const {
  int st = 0, reason = 0;
  if (virDomainGetState(D(dom_), &st, &reason, 0) != 0) return fail(callFailed(cat("state of domain ", name_)));
  switch (st) {
    case VIR_DOMAIN_SHUTOFF: return DomainState::shutoff;
    case VIR_DOMAIN_RUNNING: return DomainState::running;
    case VIR_DOMAIN_PAUSED: return DomainState::paused;
    default: return DomainState::other;
  }
}

Result<std::string> Domain::xml(Xml which, bool secure) const {
  unsigned flags = secure ? static_cast<unsigned>(VIR_DOMAIN_XML_SECURE) : 0u;
  if (which == Xml::persistent) flags |= static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE);
  if (which == Xml::migratable) flags |= static_cast<unsigned>(VIR_DOMAIN_XML_MIGRATABLE);
  char* x = virDomainGetXMLDesc(D(dom_), flags);
  if (!x) return fail(callFailed(cat("XML of domain ", name_)));
  std::string out(x);
  std::free(x);
  return out;
}

Result<Json> Domain::qmp(std::string_view command, const Json& arguments, std::span<const int> fds) const {
  Json req = {{"execute", std::string(command)}};
  if (!arguments.empty()) req["arguments"] = arguments;
  const std::string text = req.dump();
  std::vector<int> in(fds.begin(), fds.end());
  unsigned int nout = 0;
  int* outFds = nullptr;
  char* reply = nullptr;
  int rc = virDomainQemuMonitorCommandWithFiles(D(dom_), text.c_str(), static_cast<unsigned>(in.size()),
                                                in.empty() ? nullptr : in.data(), &nout, &outFds, &reply, 0);
  for (unsigned i = 0; i < nout; ++i) ::close(outFds[i]);
  std::free(outFds);
  if (rc != 0) return fail(callFailed(cat("QMP ", command, " through libvirt")));
  std::string r = reply ? reply : "";
  std::free(reply);
  if (r.size() > kMaxMonitorReplyBytes)
    return fail(Errc::protocol, cat("QMP ", command, ": reply of ", r.size(), " bytes through libvirt is too large"));
  Json j = Json::parse(r, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Errc::protocol, cat("QMP ", command, ": reply is not a JSON object"));
  if (auto e = j.find("error"); e != j.end()) {
    std::string desc = e->is_object() && e->contains("desc") && (*e)["desc"].is_string() ? (*e)["desc"].get<std::string>()
                                                                                           : e->dump();
    return fail(Errc::qmp, cat(command, ": ", desc));
  }
  auto ret = j.find("return");
  if (ret == j.end()) return fail(Errc::protocol, cat("QMP ", command, ": reply has no return value"));
  return *ret;
}

Status Domain::suspend() const {
  if (virDomainSuspend(D(dom_)) != 0) return fail(callFailed(cat("suspend domain ", name_)));
  return {};
}
Status Domain::resume() const {
  if (virDomainResume(D(dom_)) != 0) return fail(callFailed(cat("resume domain ", name_)));
  return {};
}
Status Domain::destroy() const {
  if (virDomainDestroy(D(dom_)) != 0) return fail(callFailed(cat("destroy domain ", name_)));
  return {};
}
Status Domain::start(bool paused) const {
  if (virDomainCreateWithFlags(D(dom_), paused ? VIR_DOMAIN_START_PAUSED : 0) != 0)
    return fail(callFailed(cat("start domain ", name_)));
  return {};
}
Status Domain::undefine() const {
  if (virDomainUndefine(D(dom_)) != 0) return fail(callFailed(cat("undefine domain ", name_)));
  return {};
}

}  // namespace vmckpt::vmm::libvirt
