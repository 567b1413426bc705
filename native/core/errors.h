// Errors raised by the core. Each carries a stable code and a kind, so that the
// addon can turn it into the right JS error class without knowing where it came from.
#pragma once

#include <stdexcept>
#include <string>

namespace yd {

enum class ErrorKind { Type, Range, Generic };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string code, const std::string& message)
      : std::runtime_error(message), kind_(kind), code_(std::move(code)) {}
  ErrorKind kind() const { return kind_; }
  const std::string& code() const { return code_; }

 private:
  ErrorKind kind_;
  std::string code_;
};

// Stable error codes (documented in README.md, exported as ErrorCodes).
namespace code {
constexpr const char* kInvalidArgType = "ERR_INVALID_ARG_TYPE";
constexpr const char* kInvalidOption = "ERR_INVALID_OPTION";
constexpr const char* kInvalidShape = "ERR_INVALID_SHAPE";
constexpr const char* kDataLength = "ERR_DATA_LENGTH";
constexpr const char* kScaleCount = "ERR_SCALE_COUNT";
constexpr const char* kShapeMismatch = "ERR_SHAPE_MISMATCH";
constexpr const char* kChannelMismatch = "ERR_CHANNEL_MISMATCH";
constexpr const char* kDtypeMismatch = "ERR_DTYPE_MISMATCH";
constexpr const char* kDeviceMismatch = "ERR_DEVICE_MISMATCH";
constexpr const char* kDetachedBuffer = "ERR_DETACHED_BUFFER";
constexpr const char* kResizableBuffer = "ERR_RESIZABLE_BUFFER";
constexpr const char* kTensorDisposed = "ERR_TENSOR_DISPOSED";
constexpr const char* kGradOut = "ERR_GRAD_OUT";
constexpr const char* kBufferOverlap = "ERR_BUFFER_OVERLAP";
constexpr const char* kNonFinite = "ERR_NON_FINITE";
constexpr const char* kNoCuda = "ERR_NO_CUDA";
constexpr const char* kUnsupportedDtype = "ERR_UNSUPPORTED_DTYPE";
constexpr const char* kLibTorch = "ERR_LIBTORCH";
constexpr const char* kOutOfMemory = "ERR_OUT_OF_MEMORY";
constexpr const char* kInternal = "ERR_INTERNAL";
// Raised by the TypeScript facade only: ERR_ADDON_LOAD (lib/binding.ts) and
// ERR_TFJS_MISSING (lib/tfjs.ts). test/error-codes.test.js keeps this list,
// ErrorCodes (lib/index.ts) and the README's table in step.
}  // namespace code

[[noreturn]] inline void throw_type(const char* c, const std::string& msg) {
  throw Error(ErrorKind::Type, c, msg);
}
[[noreturn]] inline void throw_range(const char* c, const std::string& msg) {
  throw Error(ErrorKind::Range, c, msg);
}

}  // namespace yd
