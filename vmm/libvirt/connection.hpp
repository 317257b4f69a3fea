// A connection to libvirt and the calls vmckpt makes on one domain through it. libvirt's
// own printing of errors is silenced; each failure is one line naming the call, with the
// usual causes said plainly (libvirtd not running, no such domain). QMP reaches the
// domain's QEMU only through libvirt's monitor passthrough: libvirt owns the monitor and
// stays the one that knows the domain's state.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace vmckpt::vmm::libvirt {

using Json = nlohmann::json;

// A QMP reply larger than this through the passthrough is refused.
inline constexpr std::size_t kMaxMonitorReplyBytes = 8u << 20;

class Domain;

class Connection {
 public:
  // Errc::io when libvirtd does not answer at `uri` (not running, or its socket
  // elsewhere); the message says which.
  static Result<Connection> open(const std::string& uri);
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  ~Connection();

  // Errc::notFound when libvirt has no domain of that name.
  Result<Domain> lookup(const std::string& name) const;
  // Defines (or redefines) a persistent domain from XML; returns it.
  Result<Domain> define(const std::string& xml) const;
  const std::string& uri() const { return uri_; }

 private:
  Connection(void* conn, std::string uri) : conn_(conn), uri_(std::move(uri)) {}
  void* conn_ = nullptr;  // virConnectPtr
  std::string uri_;
};

enum class DomainState { shutoff, running, paused, other };
std::string_view domainStateName(DomainState s);

class Domain {
 public:
  Domain(Domain&&) noexcept;
  Domain& operator=(Domain&&) noexcept;
  ~Domain();

  const std::string& name() const { return name_; }
  Result<DomainState> state() const;
  // current: the live definition while running (with the paths libvirt filled in, e.g.
  // channel sockets), else the persistent one; persistent: the persistent one always;
  // migratable: the live one as libvirt writes it for a migration, fit to define and start
  // again (its generated paths dropped). `secure` includes secrets (VNC passwords): only
  // for files that stay private.
  enum class Xml { current, persistent, migratable };
  Result<std::string> xml(Xml which = Xml::current, bool secure = false) const;
  // One QMP command through libvirt's passthrough; its "return" value. QMP errors come
  // back as Errc::qmp with QEMU's description. `fds` travel with it (getfd).
  Result<Json> qmp(std::string_view command, const Json& arguments = Json::object(),
                   std::span<const int> fds = {}) const;
  // Through libvirt's API, so that libvirt's view of the domain follows.
  Status suspend() const;
  Status resume() const;
  Status destroy() const;
  Status start(bool paused) const;
  Status undefine() const;

 private:
  friend class Connection;
  Domain(void* dom, std::string name) : dom_(dom), name_(std::move(name)) {}
  void* dom_ = nullptr;  // virDomainPtr
  std::string name_;
};

}  // namespace vmckpt::vmm::libvirt
