// Integer members of JSON documents vmckpt reads back (a snapshot's manifest, a VM's
// spec): nlohmann's get<int>() turns a floating-point value into an int with a plain
// conversion, undefined behaviour when it is out of range (the manifest fuzzer found
// "minor": 8.9e77). jsonInteger<T> accepts only a JSON integer that fits T and otherwise
// throws the Json::type_error that get<>() throws for a wrong type, so the callers'
// catch reports a corrupt file as before.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

namespace vmckpt::vmm {

template <typename T>
T jsonInteger(const nlohmann::json& v, const char* what) {
  static_assert(std::numeric_limits<T>::is_integer);
  bool fits = false;
  if (v.is_number_unsigned()) {
    fits = v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
  } else if (v.is_number_integer()) {
    const std::int64_t x = v.get<std::int64_t>();
    fits = std::numeric_limits<T>::is_signed ? x >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
                                                   x <= static_cast<std::int64_t>(std::numeric_limits<T>::max())
                                             : x >= 0;
  }
  if (!fits) throw nlohmann::json::type_error::create(302, std::string(what) + " is not an integer in range", &v);
  return v.get<T>();
}

}  // namespace vmckpt::vmm
