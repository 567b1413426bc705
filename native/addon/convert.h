// Parsing the JS arguments of a loss call into core inputs, and the core result
// back into a JS object. Shared by the sync and the async entry points.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

#include <string>
#include <vector>

#include "loss.h"

namespace yd_addon {

// A short description of a JS value (its type; a number's or string's value)
// for error messages.
std::string describe(const Napi::Value& v);

struct PreparedCall {
  std::vector<at::Tensor> student, teacher, grad_out;
  yd::Options opts;
  // Whether the call runs off the main thread (distillationLossAsync).
  bool async = false;
  // The checked call (yd::make_plan + yd::attach_grad_out): what runs.
  yd::Plan plan;
  // JS objects whose memory the tensors above borrow (kept alive by async calls).
  std::vector<Napi::Object> pins;
  // Per scale: the JS gradient object to return (a Float32Array the native side
  // allocated or the caller's gradOut entry), or undefined when the core's
  // gradient tensor should be returned as a new Tensor handle.
  std::vector<Napi::Value> grad_js;
  // A sync call's Float64Array from the facade for the terms (build_result),
  // or empty.
  Napi::Value terms_js;
};

// The top-level option keys in the order the addon reads them; the facade
// passes their values in this order after the options object (convert.cpp
// YD_OPTION_KEYS). Exported to JavaScript as optionKeys for the facade's test.
Napi::Array option_keys(Napi::Env env);

// Parses (student, teacher, options[, the option values in option_keys order])
// and validates them with the core. Throws
// coded errors (yd::Error) on any problem.
//
// Memory safety (RELIABILITY.md "What a caller may do to a buffer"): the call
// runs in two phases. Phase 1 reads every user value (options, heads, shapes,
// gradOut entries; the top-level options' values the facade has already read
// and passed); their getters and Proxy traps may run arbitrary JavaScript,
// so it keeps Float32Arrays only as JS values and takes no pointer. Phase 2
// runs after the last user JavaScript of the call: it refuses resizable
// buffers, marks the buffers of an async call untransferable, then re-reads
// each array's data pointer and length, re-checks detached state and length,
// and only then builds tensors over the memory.
PreparedCall prepare_call(const Napi::CallbackInfo& info, bool async);

// The loss result as [Float64Array terms, grads | null], or grads | null alone
// with the terms written into the facade's array (PreparedCall::terms_js); see
// lib/index.ts.
Napi::Value build_result(Napi::Env env, const yd::Result& r, const PreparedCall& call);

// The name of an argument in error messages ("scale 0, student.data",
// "streamingFloor: a"), made into a string only when a message needs it: a
// call that succeeds builds none (the tiny call had built a dozen strings of
// names, a tenth of its instructions; BENCHMARKS.md, the native AVX2 core).
// Holds string literals (or, for a parameter, a string its caller keeps
// alive for the call): never build one from a temporary std::string.
class Where {
 public:
  Where(const char* text) : text_(text) {}  // NOLINT(google-explicit-constructor): a literal name
  Where(size_t scale, const char* tensor) : tensor_(tensor), scale_(scale) {}
  // The same name with a field after it: ".data", ".shape".
  Where field(const char* suffix) const {
    Where w = *this;
    w.suffix_ = suffix;
    return w;
  }
  std::string str() const {
    return (tensor_ ? "scale " + std::to_string(scale_) + ", " + tensor_ : std::string(text_)) + suffix_;
  }

 private:
  const char* text_ = "";
  const char* tensor_ = nullptr;
  size_t scale_ = 0;
  const char* suffix_ = "";
};
inline std::string operator+(const Where& w, const char* s) { return w.str() + s; }
inline std::string operator+(const Where& w, const std::string& s) { return w.str() + s; }

// Parses a Float32Array argument (for the floor: no user JavaScript runs
// between this and the use of the pointer).
Napi::Float32Array expect_float32_array(const Napi::Value& v, const Where& what);
// Phase 1 of a Float32Array argument: checks its type (and that it is not
// detached yet) without taking its pointer.
void check_float32_array_type(const Napi::Value& v, const Where& what);
// ERR_DETACHED_BUFFER if a typed array's buffer is detached now.
void check_not_detached(const Napi::Value& v, const Where& what);
void check_not_detached(Napi::Env env, napi_value buffer, const Where& what);
// A typed array's element type and ArrayBuffer, both fixed for its lifetime:
// read once in phase 1 and kept for phase 2. False for anything else.
struct ViewInfo {
  napi_typedarray_type type = napi_int8_array;
  napi_value buffer = nullptr;
};
bool view_info(Napi::Env env, const Napi::Value& v, ViewInfo* out);
// Phase 2: call after the last user JavaScript of the call. Refuses a resizable
// ArrayBuffer (ERR_RESIZABLE_BUFFER); when `pin_buffer`, marks the ArrayBuffer
// untransferable so that it cannot be detached (and its memory freed) while an
// async call uses it. Runs only the engine's own functions.
// (`what` + `suffix` names the array in messages; built only on failure.)
void guard_buffer(Napi::Env env, const Napi::Value& v, const Where& what, const char* suffix,
                  bool pin_buffer);
// The same for an ArrayBuffer taken from view_info in phase 1.
void guard_array_buffer(Napi::Env env, napi_value buffer, const Where& what, const char* suffix, bool pin_buffer);
// Phase 2, last step (runs no JavaScript at all): the array as it is now,
// checked not detached; the caller checks its length.
struct BoundArray {
  void* data;
  size_t length;  // elements
};
BoundArray bind_float32_array(Napi::Env env, const Napi::Value& v, const Where& what, const char* suffix);
// The same without the error: false where v is no typed array or its buffer
// is detached; its element type in *type.
bool try_bind(Napi::Env env, const Napi::Value& v, BoundArray* out, napi_typedarray_type* type);
// The element count of a shape, ERR_INVALID_SHAPE if it overflows.
int64_t shape_numel(const std::vector<int64_t>& shape, const Where& what);
std::string shape_str(const std::vector<int64_t>& shape);
std::vector<int64_t> parse_shape(const Napi::Value& v, const Where& what);

}  // namespace yd_addon
