// GPU UUIDs as nvidia-smi prints them ("GPU-abad7602-5de6-345b-691c-8071996c13fb") and
// the device map's "gpu" value, which says where checkpointed CUDA processes restore.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace vmckpt::cuda {

using GpuUuid = std::array<std::uint8_t, 16>;

std::optional<GpuUuid> parseGpuUuid(std::string_view s);  // "GPU-" and 32 hex digits, dashes as nvidia-smi
std::string formatGpuUuid(const GpuUuid& u);

// What the device map's "gpu" entry asks of a restore.
struct GpuTarget {
  enum class Kind { same, none, uuid };
  Kind kind = Kind::same;
  GpuUuid uuid{};  // for Kind::uuid: restore every checkpointed process onto this GPU
};

// Absent or "same": the GPUs the processes had. "none": no GPU (the restore refuses and
// the processes stay checkpointed). "GPU-<uuid>": that GPU.
Result<GpuTarget> parseGpuTarget(std::string_view mapValue);

}  // namespace vmckpt::cuda
