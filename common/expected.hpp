// vmckpt::Expected<T, E> and vmckpt::Unexpected<E>: std::expected where the standard
// library provides it (GCC 12 in C++23 mode: the product build), otherwise a minimal
// stand-in with the subset of the interface vmckpt uses. The stand-in exists for the
// libFuzzer targets: Debian 12's clang 14 cannot use libstdc++ 12's <expected> (it needs
// C++20 concepts that clang 14 does not fully have), yet the parsers it fuzzes return
// Result<T>. Both spellings behave the same for every use in this code base.
#pragma once

#include <version>

#if defined(__cpp_lib_expected)
#include <expected>

namespace vmckpt {
template <class T, class E>
using Expected = std::expected<T, E>;
template <class E>
using Unexpected = std::unexpected<E>;
}  // namespace vmckpt

#else
#include <cstdlib>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace vmckpt {

template <class E>
class Unexpected {
 public:
  explicit Unexpected(E e) : error_(std::move(e)) {}
  E& error() & { return error_; }
  const E& error() const& { return error_; }
  E&& error() && { return std::move(error_); }

 private:
  E error_;
};

namespace detail {
template <class U>
struct IsUnexpected : std::false_type {};
template <class E>
struct IsUnexpected<Unexpected<E>> : std::true_type {};
// std::expected throws bad_expected_access here; vmckpt never relies on that.
[[noreturn]] inline void badExpectedAccess() { std::abort(); }
}  // namespace detail

template <class T, class E>
class Expected {
 public:
  using value_type = T;
  using error_type = E;

  Expected()
    requires std::is_default_constructible_v<T>
      : v_(std::in_place_index<0>) {}
  template <class U = T>
    requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::remove_cvref_t<U>, Expected> &&
             !detail::IsUnexpected<std::remove_cvref_t<U>>::value)
  Expected(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}
  template <class G>
  Expected(const Unexpected<G>& u) : v_(std::in_place_index<1>, u.error()) {}
  template <class G>
  Expected(Unexpected<G>&& u) : v_(std::in_place_index<1>, std::move(u).error()) {}

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return has_value() ? std::get<0>(v_) : (detail::badExpectedAccess(), std::get<0>(v_)); }
  const T& value() const& { return has_value() ? std::get<0>(v_) : (detail::badExpectedAccess(), std::get<0>(v_)); }
  T&& value() && { return std::move(value()); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(value()); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  E& error() & { return std::get<1>(v_); }
  const E& error() const& { return std::get<1>(v_); }
  E&& error() && { return std::move(std::get<1>(v_)); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(std::get<0>(v_)) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, E> v_;
};

template <class E>
class Expected<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Expected() = default;
  template <class G>
  Expected(const Unexpected<G>& u) : error_(u.error()) {}
  template <class G>
  Expected(Unexpected<G>&& u) : error_(std::move(u).error()) {}

  bool has_value() const { return !error_.has_value(); }
  explicit operator bool() const { return has_value(); }
  void value() const {
    if (!has_value()) detail::badExpectedAccess();
  }
  void operator*() const {}

  E& error() & { return *error_; }
  const E& error() const& { return *error_; }
  E&& error() && { return std::move(*error_); }

 private:
  std::optional<E> error_;
};

}  // namespace vmckpt
#endif
