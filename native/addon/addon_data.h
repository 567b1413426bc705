// Per-environment instance data (one per main thread or worker thread): no
// static JS references anywhere in the addon.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

#include <utility>
#include <vector>

namespace yd_addon {

struct PoolBlock;  // native/addon/grad_pool.cpp

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  // The property names a head is read by, ["data", "shape", "dtype"], made
  // once (Get with a C string makes and internalizes a JS string every time;
  // Node 20's Node-API cannot reference a string itself, so an array holds
  // them), fetched once per call (HeadKeys, native/addon/convert.cpp).
  Napi::ObjectReference head_keys;
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
  // Gradient arrays over recycled blocks (native/addon/grad_pool.h): on only
  // when the facade says the runtime cannot transfer a marked buffer away.
  bool recycle_gradients = false;
  // Blocks handed out by this environment, each with a weak reference to its
  // ArrayBuffer.
  std::vector<std::pair<PoolBlock*, napi_ref>> outstanding;
  // Bytes of those blocks handed out over buffers V8 does not count and not
  // reported to it (native/addon/grad_pool.cpp, "Buffers V8 does not count").
  size_t quiet_bytes = 0;
  AddonData() = default;
  AddonData(const AddonData&) = delete;
  AddonData& operator=(const AddonData&) = delete;
  ~AddonData();
  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace yd_addon
