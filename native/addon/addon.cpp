// Module init, backendInfo, the benchmark floor, and the error mapping.
#include <c10/util/Exception.h>
#include <napi.h>

#include <malloc.h>

#include <new>

#include "addon_data.h"
#include "convert.h"
#include "grad_pool.h"
#include "js_errors.h"
#include "loss.h"
#include "loss_binding.h"
#include "tensor_wrap.h"

namespace yd_addon {

Napi::Error make_error(Napi::Env env, yd::ErrorKind kind, const std::string& code,
                       const std::string& message) {
  Napi::Error e = kind == yd::ErrorKind::Type    ? Napi::TypeError::New(env, message)
                  : kind == yd::ErrorKind::Range ? Napi::RangeError::New(env, message)
                                                 : Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

ErrorInfo current_exception_info() {
  try {
    throw;
  } catch (const yd::Error& e) {
    return {e.kind(), e.code(), e.what()};
  } catch (const c10::Error& e) {
    return {yd::ErrorKind::Generic, yd::code::kLibTorch,
            std::string("LibTorch error: ") + e.what_without_backtrace()};
  } catch (const std::bad_alloc&) {
    return {yd::ErrorKind::Range, yd::code::kOutOfMemory, "out of memory"};
  } catch (const std::exception& e) {
    return {yd::ErrorKind::Generic, yd::code::kInternal, std::string("internal error: ") + e.what()};
  } catch (...) {
    return {yd::ErrorKind::Generic, yd::code::kInternal, "internal error: unknown exception"};
  }
}

namespace {

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("libtorch", yd::libtorch_version());
    o.Set("cuda", yd::cuda_compiled() && yd::cuda_device_count() > 0);
    o.Set("cudaDeviceCount", yd::cuda_device_count());
    o.Set("threads", yd::default_threads());
    // The core's list of backends (native/core/loss.h), as it is on this machine.
    const std::vector<yd::BackendDesc> list = yd::backends();
    Napi::Array backends = Napi::Array::New(info.Env(), list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      Napi::Object b = Napi::Object::New(info.Env());
      b.Set("name", list[i].name);
      b.Set("device", list[i].device);
      b.Set("available", list[i].available);
      if (!list[i].available) b.Set("reason", list[i].why);
      backends.Set(static_cast<uint32_t>(i), b);
    }
    o.Set("backends", backends);
    return o;
  });
}

// The floor pass (yd::streaming_floor or streaming_floor16) over three typed
// arrays of one element type, after the length check; info[3]: threads.
template <typename Array, typename Elem>
Napi::Value floor_pass(const Napi::CallbackInfo& info, const Array& a, const Array& b, Array out,
                       void (*pass)(const Elem*, const Elem*, Elem*, int64_t, int)) {
  if (a.ElementLength() != b.ElementLength() || a.ElementLength() != out.ElementLength()) {
    fail_range(yd::code::kDataLength, "streamingFloor: a, b and out must have the same length");
  }
  const int threads = info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 0;
  pass(a.Data(), b.Data(), out.Data(), static_cast<int64_t>(a.ElementLength()),
       threads > 0 ? threads : yd::default_threads());
  return info.Env().Undefined();
}

// streamingFloor(a, b, out, threads): out = a - b, the bandwidth floor of a
// kernel that reads two arrays and writes one. Three Float32Arrays, or three
// Uint16Arrays (the 2-byte floor). For benchmarks only.
Napi::Value StreamingFloor(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    if (info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array) {
      for (int k = 0; k < 3; ++k) {
        if (!info[k].IsTypedArray() || info[k].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) {
          fail_type(yd::code::kInvalidArgType, "streamingFloor: a, b and out must all be Uint16Arrays (or all Float32Arrays)");
        }
      }
      return floor_pass(info, info[0].As<Napi::Uint16Array>(), info[1].As<Napi::Uint16Array>(),
                        info[2].As<Napi::Uint16Array>(), yd::streaming_floor16);
    }
    const Napi::Float32Array a = expect_float32_array(info[0], "streamingFloor: a");  // checked in order
    const Napi::Float32Array b = expect_float32_array(info[1], "streamingFloor: b");
    const Napi::Float32Array out = expect_float32_array(info[2], "streamingFloor: out");
    return floor_pass(info, a, b, out, yd::streaming_floor);
  });
}

// cpuKernels(): { klLanes, streamLevel, klGather }, the forms of the CPU kernels this
// process runs (yd::cpu_kernel_choices). For tests and benchmarks only.
Napi::Value CpuKernels(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const yd::CpuKernelChoices k = yd::cpu_kernel_choices();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("klLanes", k.kl_lanes);
    o.Set("streamLevel", k.stream_level);
    o.Set("klGather", k.kl_gather);
    return o;
  });
}

// configure({ markAsUntransferable }): called once per env by the package's
// loader (lib/binding.ts) with worker_threads.markAsUntransferable, which
// async calls apply to the ArrayBuffers they read and write in place.
Napi::Value Configure(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail_type(yd::code::kInvalidArgType, "configure: expected an object");
    const Napi::Value f = info[0].As<Napi::Object>().Get("markAsUntransferable");
    if (!f.IsFunction()) {
      fail_type(yd::code::kInvalidArgType, "configure: markAsUntransferable must be a function");
    }
    AddonData* data = AddonData::Of(info.Env());
    data->mark_untransferable = Napi::Persistent(f.As<Napi::Function>());
    // recycleGradients: the facade found that a marked buffer cannot be
    // transferred away on this runtime (native/addon/grad_pool.h).
    data->recycle_gradients = info[0].As<Napi::Object>().Get("recycleGradients").ToBoolean().Value();
    return info.Env().Undefined();
  });
}

// The engine's getter of ArrayBuffer.prototype.resizable, read before any user
// code can see the addon (empty when the runtime has no resizable buffers).
Napi::FunctionReference resizable_getter(Napi::Env env) {
  try {
    const Napi::Object global = env.Global();
    const Napi::Value proto = global.Get("ArrayBuffer").As<Napi::Object>().Get("prototype");
    const Napi::Function gopd =
        global.Get("Object").As<Napi::Object>().Get("getOwnPropertyDescriptor").As<Napi::Function>();
    const Napi::Value desc = gopd.Call({proto, Napi::String::New(env, "resizable")});
    if (desc.IsObject()) {
      const Napi::Value get = desc.As<Napi::Object>().Get("get");
      if (get.IsFunction()) return Napi::Persistent(get.As<Napi::Function>());
    }
  } catch (...) {
  }
  return Napi::FunctionReference();
}

}  // namespace

// heapInUse(): bytes the C heap has handed out and not taken back (glibc's
// mallinfo2), or -1 where unknown. For the leak test: unlike RSS it does not
// keep the high-water mark of memory already freed.
Napi::Value HeapInUse(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 mi = mallinfo2();
  return Napi::Number::New(info.Env(), static_cast<double>(mi.uordblks + mi.hblkhd));
#else
  return Napi::Number::New(info.Env(), -1);
#endif
}

AddonData::~AddonData() { release_environment_blocks(this); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by the env's cleanup
  Napi::Function tensor = TensorWrap::Define(env);
  data->tensor_ctor = Napi::Persistent(tensor);
  Napi::Array keys = Napi::Array::New(env, 3);
  keys.Set(0u, Napi::String::New(env, "data"));
  keys.Set(1u, Napi::String::New(env, "shape"));
  keys.Set(2u, Napi::String::New(env, "dtype"));
  data->head_keys = Napi::Persistent(keys.As<Napi::Object>());
  data->resizable_getter = resizable_getter(env);
  exports.Set("Tensor", tensor);
  exports.Set("distillationLoss", Napi::Function::New(env, DistillationLoss, "distillationLoss"));
  exports.Set("distillationLossAsync",
              Napi::Function::New(env, DistillationLossAsync, "distillationLossAsync"));
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo, "backendInfo"));
  exports.Set("streamingFloor", Napi::Function::New(env, StreamingFloor, "streamingFloor"));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuKernels, "cpuKernels"));
  exports.Set("configure", Napi::Function::New(env, Configure, "configure"));
  exports.Set("gradientPool", Napi::Function::New(env, GradientPool, "gradientPool"));
  exports.Set("heapInUse", Napi::Function::New(env, HeapInUse, "heapInUse"));
  exports.Set("optionKeys", option_keys(env));
  return exports;
}

}  // namespace yd_addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return yd_addon::Init(env, exports);
}

NODE_API_MODULE(yolo_distill, InitModule)
