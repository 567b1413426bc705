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
  // The engine's own getter of ArrayBuffer.prototype.resizable, captured at load
  // (empty where the runtime has no resizable buffers).
  Napi::FunctionReference resizable_getter;
  // worker_threads.markAsUntransferable, handed over by the facade at load
  // (lib/binding.ts); async calls refuse to run without it.
  Napi::FunctionReference mark_untransferable;
  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace yd_addon
