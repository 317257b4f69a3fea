#include "vmm/guest_quiesce.hpp"

#include "common/log.hpp"
#include "common/strings.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
constexpr auto kConnectAuto = 1000ms;  // "answers within a short deadline"
constexpr auto kConnectRequired = 5000ms;
constexpr auto kSlack = 2000ms;  // beyond the quiesce deadline the agent enforces itself

}  // namespace

Result<QuiescedGuest> QuiescedGuest::connect(const VmSpec& spec, const VmPaths& paths, AgentPolicy policy) {
  return connect(spec.agent ? std::optional<std::string>(paths.agentSocket) : std::nullopt,
                 "the VM has no agent channel (created with --no-agent)", policy);
}

Result<QuiescedGuest> QuiescedGuest::connect(const std::optional<std::string>& socket, std::string_view noChannel,
                                             AgentPolicy policy) {
  QuiescedGuest g;
  if (policy == AgentPolicy::off) return g;
  const bool required = policy == AgentPolicy::required;
  if (!socket) {
    if (required) return fail(Errc::unsupported, cat("--agent required, but ", noChannel));
    g.note_ = std::string(noChannel);
    log::info(g.note_);
    return g;
  }
  auto client = agent::Client::connect(*socket, Deadline::in(required ? kConnectRequired : kConnectAuto));
  if (!client) {
    if (required) return fail(client.error().context("--agent required"));
    g.note_ = cat("guest agent not used: ", client.error().message());
    log::info(g.note_);
    return g;
  }
  g.client_ = std::move(*client);
  g.socket_ = *socket;
  return g;
}

Result<QuiescedGuest> QuiescedGuest::quiesce(const VmSpec& spec, const VmPaths& paths, AgentPolicy policy,
                                             std::chrono::milliseconds timeout) {
  auto g = connect(spec, paths, policy);
  if (!g) return fail(g.error());
  VMCKPT_TRY(g->quiesce(timeout));
  return g;
}

Status QuiescedGuest::quiesce(std::chrono::milliseconds timeout, bool release) {
  if (!client_ || quiesced_) return {};
  timeout_ = timeout;
  auto t0 = std::chrono::steady_clock::now();
  Json args = {{"deadline_ms", timeout.count()}};
  if (release) args["release"] = true;
  releaseAsked_ = releaseAsked_ || release;
  auto q = client_->call("quiesce", args, Deadline::in(timeout + kSlack));
  quiesceMs_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!q) {
    // The agent rolls back by itself; a thaw covers a host-side timeout.
    (void)client_->call("thaw", {{"deadline_ms", timeout.count()}}, Deadline::in(timeout + kSlack));
    client_.reset();
    return fail(q.error().context("quiesce"));
  }
  if (auto pl = q->find("plugins"); pl != q->end() && pl->is_array()) plugins_ = *pl;
  quiesced_ = true;
  log::debug("guest agent: quiesced");
  return {};
}

Status QuiescedGuest::release() {
  if (!client_ || !quiesced_ || !releaseAsked_) return {};
  auto t0 = std::chrono::steady_clock::now();
  auto r = client_->call("release", {{"deadline_ms", timeout_.count()}}, Deadline::in(timeout_ + kSlack));
  quiesceMs_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!r) {
    client_.reset();  // the agent rolled back (its processes got RESUME)
    quiesced_ = false;
    return fail(r.error().context("release"));
  }
  // What each plugin answered when it closed its devices ({"released": true} ...).
  if (auto pl = r->find("plugins"); pl != r->end() && pl->is_array()) plugins_ = *pl;
  return {};
}

Status QuiescedGuest::thaw() {
  if (!client_ || !quiesced_) return {};
  auto r = client_->call("thaw", {{"deadline_ms", timeout_.count()}}, Deadline::in(timeout_ + kSlack));
  client_.reset();
  quiesced_ = false;
  if (!r) return fail(r.error().context("thaw"));
  log::debug("guest agent: thawed");
  return {};
}

std::optional<std::string> QuiescedGuest::handOver() {
  if (!releaseAsked_) return std::nullopt;
  releaseAsked_ = false;
  client_.reset();
  quiesced_ = false;
  return socket_;
}

}  // namespace vmckpt::vmm
