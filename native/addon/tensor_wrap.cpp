// See tensor_wrap.h.
#include "tensor_wrap.h"

#include <ATen/Functions.h>

#include <cstring>

#include "addon_data.h"
#include "convert.h"
#include "js_errors.h"
#include "loss.h"

namespace yd_addon {

namespace {

at::ScalarType parse_dtype(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return at::kFloat;
  if (!v.IsString()) {
    fail_type(yd::code::kInvalidArgType, "Tensor.fromFloat32Array: opts.dtype must be 'float32' | 'float16' | 'bfloat16'");
  }
  const std::string s = v.As<Napi::String>().Utf8Value();
  if (s == "float32") return at::kFloat;
  if (s == "float16") return at::kHalf;
  if (s == "bfloat16") return at::kBFloat16;
  fail_range(yd::code::kInvalidOption, "Tensor.fromFloat32Array: opts.dtype must be 'float32' | "
                                       "'float16' | 'bfloat16', got \"" + s + "\"");
}

at::Device parse_device(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return at::Device(at::kCPU);
  if (!v.IsString()) {
    fail_type(yd::code::kInvalidArgType, "Tensor.fromFloat32Array: opts.device must be 'cpu', 'cuda' or 'cuda:N'");
  }
  return yd::resolve_device(v.As<Napi::String>().Utf8Value(), "Tensor.fromFloat32Array: opts.device");
}

int64_t tensor_bytes(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.numel() * t.element_size()) : 0;
}

// Copies a tensor's values as fp32 into dst (numel floats).
void copy_out(const at::Tensor& t, float* dst) {
  const at::Tensor src = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
  std::memcpy(dst, src.data_ptr<float>(), sizeof(float) * static_cast<size_t>(src.numel()));
}

class ToArrayWorker : public Napi::AsyncWorker {
 public:
  ToArrayWorker(Napi::Env env, at::Tensor t)
      : Napi::AsyncWorker(env, "yolo-distill:toFloat32Array"),
        tensor_(std::move(t)),
        deferred_(Napi::Promise::Deferred::New(env)),
        out_(Napi::Float32Array::New(env, static_cast<size_t>(tensor_.numel()))),
        out_ref_(Napi::Persistent(static_cast<Napi::Object>(out_))),
        dst_(out_.Data()) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      copy_out(tensor_, dst_);
    } catch (...) {
      error_ = current_exception_info();
      SetError(error_.message);
    }
  }
  // As in LossWorker: in an env that is shutting down, drop what cannot be delivered.
  void OnOK() override {
    try {
      deferred_.Resolve(out_ref_.Value());
    } catch (...) {
    }
  }
  void OnError(const Napi::Error&) override {
    try {
      deferred_.Reject(make_error(Env(), error_.kind, error_.code, error_.message).Value());
    } catch (...) {
    }
  }

 private:
  at::Tensor tensor_;
  Napi::Promise::Deferred deferred_;
  Napi::Float32Array out_;
  Napi::ObjectReference out_ref_;
  float* dst_;
  ErrorInfo error_;
};

}  // namespace

std::string device_label(const at::Tensor& t) {
  if (t.device().is_cpu()) return "cpu";
  return "cuda:" + std::to_string(t.device().index() < 0 ? 0 : t.device().index());
}

Napi::Function TensorWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {StaticMethod("fromFloat32Array", &TensorWrap::FromFloat32Array),
                      InstanceAccessor("shape", &TensorWrap::Shape, nullptr),
                      InstanceAccessor("device", &TensorWrap::Device, nullptr),
                      InstanceAccessor("dtype", &TensorWrap::Dtype, nullptr),
                      InstanceAccessor("disposed", &TensorWrap::Disposed, nullptr),
                      InstanceMethod("toFloat32Array", &TensorWrap::ToFloat32Array),
                      InstanceMethod("toFloat32ArrayAsync", &TensorWrap::ToFloat32ArrayAsync),
                      InstanceMethod("dispose", &TensorWrap::Dispose)});
}

bool TensorWrap::IsInstance(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) return false;
  return v.As<Napi::Object>().InstanceOf(AddonData::Of(env)->tensor_ctor.Value());
}

Napi::Object TensorWrap::NewInstance(Napi::Env env, const at::Tensor& t) {
  // Hand the tensor over through the env's instance data rather than an
  // External: an External lives (and holds what it points to) until the GC
  // finalizes it, long after dispose().
  AddonData* data = AddonData::Of(env);
  data->pending = t;
  data->constructing = true;
  Napi::Object obj;
  try {
    obj = data->tensor_ctor.New({});
  } catch (...) {
    data->constructing = false;
    data->pending = at::Tensor();
    throw;
  }
  data->constructing = false;
  data->pending = at::Tensor();
  return obj;
}

at::Tensor TensorWrap::Get(const Napi::Value& v, const std::string& what) {
  // An object that only inherits the handle's prototype (Object.create) wraps
  // nothing: napi_unwrap fails, and that gets a coded error, not a bare one.
  void* raw = nullptr;
  if (napi_unwrap(v.Env(), v, &raw) != napi_ok || raw == nullptr) {
    fail_type(yd::code::kInvalidArgType,
              what + ": not a live Tensor handle (an object that only inherits Tensor's prototype, "
                     "or a handle from another thread: handles belong to the thread that created them)");
  }
  TensorWrap* w = static_cast<TensorWrap*>(raw);
  if (!w->tensor_.defined()) {
    fail_type(yd::code::kTensorDisposed, what + ": the Tensor has been disposed");
  }
  return w->tensor_;
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  AddonData* data = AddonData::Of(info.Env());
  if (!data->constructing) {
    throw make_error(info.Env(), yd::ErrorKind::Type, yd::code::kInvalidArgType,
                     "Tensor cannot be constructed directly; use Tensor.fromFloat32Array()");
  }
  data->constructing = false;  // one handle per NewInstance
  tensor_ = std::move(data->pending);
  external_bytes_ = tensor_.device().is_cpu() ? tensor_bytes(tensor_) : 0;
  if (external_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
}

TensorWrap::~TensorWrap() { Release(); }

void TensorWrap::Release() {
  if (external_bytes_ > 0) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
    external_bytes_ = 0;
  }
  tensor_ = at::Tensor();
}

at::Tensor TensorWrap::Live(const char* method) const {
  if (!tensor_.defined()) {
    fail_type(yd::code::kTensorDisposed, std::string("Tensor.") + method + ": the Tensor has been disposed");
  }
  return tensor_;
}

Napi::Value TensorWrap::FromFloat32Array(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    // Phase 1: every user value (shape elements and opts may be getters that
    // run JavaScript, even detach `data`); no pointer is taken yet.
    const char* const what = "Tensor.fromFloat32Array: data";
    check_float32_array_type(info[0], what);
    const std::vector<int64_t> shape = parse_shape(info[1], "Tensor.fromFloat32Array: shape");
    const int64_t numel = shape_numel(shape, "Tensor.fromFloat32Array: shape");
    at::ScalarType dtype = at::kFloat;
    at::Device device(at::kCPU);
    if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
      if (!info[2].IsObject()) {
        fail_type(yd::code::kInvalidArgType, "Tensor.fromFloat32Array: opts must be an object");
      }
      const Napi::Object o = info[2].As<Napi::Object>();
      dtype = parse_dtype(o.Get("dtype"));
      device = parse_device(o.Get("device"));
    }
    // Phase 2: after the last user JavaScript; copy straight away.
    guard_buffer(info.Env(), info[0], what, "", false);
    const BoundArray data = bind_float32_array(info.Env(), info[0], what, "");
    if (static_cast<int64_t>(data.length) != numel) {
      fail_range(yd::code::kDataLength, "Tensor.fromFloat32Array: data has " + std::to_string(data.length) +
                                            " elements but the shape " + shape_str(shape) + " needs " +
                                            std::to_string(numel));
    }
    const at::Tensor view = at::from_blob(data.data, shape, at::TensorOptions().dtype(at::kFloat));  // a Float32Array
    const at::Tensor owned =
        device.is_cpu() && dtype == at::kFloat ? view.clone() : view.to(device, dtype);
    return NewInstance(info.Env(), owned);
  });
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const at::Tensor t = Live("shape");
    Napi::Array a = Napi::Array::New(info.Env(), t.dim());
    for (int64_t i = 0; i < t.dim(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(t.size(i)));
    return a;
  });
}

Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), device_label(Live("device")));
  });
}

Napi::Value TensorWrap::Dtype(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), yd::dtype_name(Live("dtype").scalar_type()));
  });
}

Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

Napi::Value TensorWrap::ToFloat32Array(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const at::Tensor t = Live("toFloat32Array");
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(t.numel()));
    copy_out(t, out.Data());
    return out;
  });
}

Napi::Value TensorWrap::ToFloat32ArrayAsync(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto* worker = new ToArrayWorker(info.Env(), Live("toFloat32ArrayAsync"));
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  });
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  Release();  // idempotent; an in-flight async call keeps its own reference
  return info.Env().Undefined();
}

}  // namespace yd_addon
