// The Tensor handle: a JS object owning one LibTorch tensor (CPU, or CUDA in a
// CUDA build). Its native memory is reported to V8 and freed by dispose() or by
// the garbage collector, whichever comes first.
#pragma once

#include <ATen/core/Tensor.h>
#include <napi.h>

#include <string>

namespace yd_addon {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static bool IsInstance(Napi::Env env, const Napi::Value& v);
  // A new handle owning t.
  static Napi::Object NewInstance(Napi::Env env, const at::Tensor& t);
  // The tensor of a handle; throws ERR_TENSOR_DISPOSED naming `what` if disposed.
  static at::Tensor Get(const Napi::Value& v, const std::string& what);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

 private:
  static Napi::Value FromFloat32Array(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ToFloat32Array(const Napi::CallbackInfo& info);
  Napi::Value ToFloat32ArrayAsync(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void Release();
  at::Tensor Live(const char* method) const;

  at::Tensor tensor_;
  int64_t external_bytes_ = 0;
};

std::string device_label(const at::Tensor& t);

}  // namespace yd_addon
