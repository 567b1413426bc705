#pragma once

#include <napi.h>

namespace yd_addon {

// (student: Head[], teacher: Head[], options) -> result object
Napi::Value DistillationLoss(const Napi::CallbackInfo& info);
// Same arguments -> Promise<result>
Napi::Value DistillationLossAsync(const Napi::CallbackInfo& info);

}  // namespace yd_addon
