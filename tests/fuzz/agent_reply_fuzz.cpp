// libFuzzer target: the host-side reading of agent messages (vmm/agent/agent_protocol),
// which sees only guest-controlled bytes. Each input is parsed as one line, and as a
// stream fed to the line splitter in two uneven pieces.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "vmm/agent/agent_protocol.hpp"

using namespace vmckpt::vmm::agent;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  ParseOutcome whole = parseAgentLine(in);
  if (whole.valid && !whole.reply.ok && whole.reply.errorMessage.size() > 512) __builtin_trap();

  LineSplitter split;
  std::size_t cut = size / 3;
  for (std::string_view part : {in.substr(0, cut), in.substr(cut)}) {
    split.feed(part);
    while (auto line = split.next()) {
      if (line->size() >= kMaxLineBytes) __builtin_trap();  // the splitter's own bound
      (void)parseAgentLine(*line);
    }
  }
  (void)split.takeOverlong();
  return 0;
}
