// Per-environment instance data (one per main thread or worker thread): no
// static JS references anywhere in the addon.
#pragma once

#include <napi.h>

namespace yd_addon {

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace yd_addon
