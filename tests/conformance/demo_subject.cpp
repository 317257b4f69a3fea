// The demo plugin (guest-agent/demo) as a conformance subject.
#include "conformance.hpp"
#include "demo_plugin.hpp"

namespace vmckpt::conformance {
namespace {

class DemoSubject final : public Subject {
 public:
  explicit DemoSubject(bool failing) : plugin_(failing, 0) {}
  vmckpt_plugin_descriptor descriptor() override {
    return {VMCKPT_PLUGIN_API_VERSION, "demo", &vmckpt::Plugin::hook, &plugin_};
  }
  void change() override { (void)plugin_.tick(); }
  std::string saved() override {
    auto s = plugin_.savedChecksum();
    return s ? std::to_string(*s) : std::string();
  }
  bool works() override { return plugin_.tick() != 0; }
  std::shared_ptr<void> captureMemory() override {
    return std::make_shared<demo::DemoPlugin::Memory>(plugin_.memory());
  }
  void restoreMemory(const std::shared_ptr<void>& m) override {
    plugin_.setMemory(*static_cast<demo::DemoPlugin::Memory*>(m.get()));
  }
  bool canFail() const override { return true; }

 private:
  demo::DemoPlugin plugin_;
};

RegisterSubject demo({"demo", [](bool failing) { return std::make_unique<DemoSubject>(failing); }});

}  // namespace
}  // namespace vmckpt::conformance
