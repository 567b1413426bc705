// Parsing the JS arguments of a loss call into core inputs, and the core result
// back into a JS object. Shared by the sync and the async entry points.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

#include <vector>

#include "loss.h"

namespace yd_addon {

struct PreparedCall {
  std::vector<at::Tensor> student, teacher, grad_out;
  yd::Options opts;
  // JS objects whose memory the tensors above borrow (kept alive by async calls).
  std::vector<Napi::Object> pins;
  // Per scale: the JS gradient object to return (a Float32Array the native side
  // allocated or the caller's gradOut entry), or undefined when the core's
  // gradient tensor should be returned as a new Tensor handle.
  std::vector<Napi::Value> grad_js;
};

// Parses (student, teacher, options) and validates them with the core. Throws
// coded errors (yd::Error) on any problem.
PreparedCall prepare_call(const Napi::CallbackInfo& info);

// The loss result as [Float64Array terms, grads | null]; see lib/index.ts.
Napi::Value build_result(Napi::Env env, const yd::Result& r, const PreparedCall& call);

// Parses a Float32Array argument (for Tensor.fromFloat32Array and the floor).
Napi::Float32Array expect_float32_array(const Napi::Value& v, const std::string& what);
std::vector<int64_t> parse_shape(const Napi::Value& v, const std::string& what);

}  // namespace yd_addon
