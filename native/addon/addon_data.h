// Per-environment instance data (one per main thread or worker thread): no
// static JS references anywhere in the addon.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

namespace yd_addon {

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  // The tensor a TensorWrap under construction takes (set only by
  // TensorWrap::NewInstance, so JS cannot construct a handle directly).
  at::Tensor pending;
  bool constructing = false;
  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace yd_addon
