// Turning core and LibTorch errors into coded JS errors. Every entry point runs
// its body through guard(), so no C++ exception ever escapes into Node.
#pragma once

#include <napi.h>

#include <string>

#include "errors.h"

namespace yd_addon {

Napi::Error make_error(Napi::Env env, yd::ErrorKind kind, const std::string& code,
                       const std::string& message);

// A plain description of what an error was, safe to carry across threads.
struct ErrorInfo {
  yd::ErrorKind kind = yd::ErrorKind::Generic;
  std::string code;
  std::string message;
};

// Classifies the exception currently being handled (call inside a catch block).
ErrorInfo current_exception_info();

template <typename F>
Napi::Value guard(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;  // already a JS error
  } catch (...) {
    const ErrorInfo e = current_exception_info();
    throw make_error(env, e.kind, e.code, e.message);
  }
}

// Throws a coded TypeError/RangeError as a C++ exception the guard converts.
[[noreturn]] inline void fail_type(const char* code, const std::string& msg) {
  yd::throw_type(code, msg);
}
[[noreturn]] inline void fail_range(const char* code, const std::string& msg) {
  yd::throw_range(code, msg);
}

}  // namespace yd_addon
