// See convert.h.
#include "convert.h"

#include <ATen/Functions.h>

#include <cmath>
#include <limits>
#include <string>

#include "js_errors.h"
#include "tensor_wrap.h"

namespace yd_addon {

namespace {

using yd::code::kDataLength;
using yd::code::kDetachedBuffer;
using yd::code::kGradOut;
using yd::code::kInvalidArgType;
using yd::code::kInvalidOption;
using yd::code::kInvalidShape;

const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// A short description of a JS value's type for error messages.
std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return typed_array_name(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArrayBuffer()) return "ArrayBuffer";
  if (v.IsArray()) return "Array";
  if (v.IsBoolean()) return "boolean";
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    return "number " + Napi::Number::New(v.Env(), d).ToString().Utf8Value();
  }
  if (v.IsString()) return "string \"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsFunction()) return "function";
  if (v.IsBigInt()) return "bigint";
  if (v.IsSymbol()) return "symbol";
  return "object";
}

std::string scale_name(size_t s, const char* tensor) {
  return "scale " + std::to_string(s) + ", " + tensor;
}

// ---- options ----------------------------------------------------------------

bool has(const Napi::Object& o, const char* key, Napi::Value* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  *out = v;
  return true;
}

double opt_number(const Napi::Object& o, const char* key, const char* path, double fallback) {
  Napi::Value v;
  if (!has(o, key, &v)) return fallback;
  if (!v.IsNumber()) {
    fail_type(kInvalidArgType,
              std::string("options.") + path + ": expected a number, got " + describe(v));
  }
  return v.As<Napi::Number>().DoubleValue();
}

int64_t opt_integer(const Napi::Object& o, const char* key, int64_t fallback, int64_t min,
                    int64_t max, bool required) {
  Napi::Value v;
  if (!has(o, key, &v)) {
    if (required) {
      fail_type(kInvalidArgType, std::string("options.") + key + " is required (an integer >= " +
                                     std::to_string(min) + ")");
    }
    return fallback;
  }
  if (!v.IsNumber()) {
    fail_type(kInvalidArgType,
              std::string("options.") + key + ": expected an integer, got " + describe(v));
  }
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    fail_range(kInvalidOption, std::string("options.") + key + ": expected an integer in [" +
                                   std::to_string(min) + ", " + std::to_string(max) + "], got " +
                                   describe(v));
  }
  return static_cast<int64_t>(d);
}

bool opt_bool(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v;
  if (!has(o, key, &v)) return fallback;
  if (!v.IsBoolean()) {
    fail_type(kInvalidArgType,
              std::string("options.") + key + ": expected a boolean, got " + describe(v));
  }
  return v.As<Napi::Boolean>().Value();
}

std::string opt_enum(const Napi::Object& o, const char* key, const char* fallback,
                     std::initializer_list<const char*> allowed) {
  Napi::Value v;
  if (!has(o, key, &v)) return fallback;
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : " | ") + "'" + a + "'";
  if (!v.IsString()) {
    fail_type(kInvalidArgType,
              std::string("options.") + key + ": expected " + list + ", got " + describe(v));
  }
  const std::string s = v.As<Napi::String>().Utf8Value();
  for (const char* a : allowed) {
    if (s == a) return s;
  }
  fail_range(kInvalidOption, std::string("options.") + key + ": expected " + list + ", got \"" + s + "\"");
}

yd::Options parse_options(const Napi::Value& v) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    fail_type(kInvalidArgType, "options: expected an object with at least numClasses, got " +
                                   describe(v));
  }
  const Napi::Object o = v.As<Napi::Object>();
  yd::Options opts;
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  opts.num_classes = opt_integer(o, "numClasses", 0, 1, kMaxDim, true);
  opts.num_anchors = opt_integer(o, "numAnchors", 3, 1, kMaxDim, false);
  opts.layout = opt_enum(o, "layout", "nchw", {"nchw", "nahwc"}) == "nchw" ? yd::Layout::NCHW
                                                                           : yd::Layout::NAHWC;
  // preset: 'yolov5' (DESIGN.md §1, the default) or 'paper' (Mehta & Ozturk 2018
  // as published); explicit options override the preset's.
  const bool paper = opt_enum(o, "preset", "yolov5", {"yolov5", "paper"}) == "paper";
  yd::Variant& var = opts.variant;
  if (paper) {
    var.box = yd::BoxTarget::Paper;
    var.obj = yd::Target::Prob;
    var.weighted_obj = false;
    var.cls = yd::Target::Prob;
  }
  var.box = opt_enum(o, "boxTarget", paper ? "paper" : "logit", {"logit", "paper"}) == "paper"
              ? yd::BoxTarget::Paper
              : yd::BoxTarget::Logit;
  auto target = [](const std::string& s) {
    return s == "prob" ? yd::Target::Prob : s == "bce" ? yd::Target::Bce : s == "kl" ? yd::Target::Kl : yd::Target::Logit;
  };
  var.obj = target(opt_enum(o, "objTarget", paper ? "prob" : "logit", {"logit", "prob", "bce"}));
  var.cls = target(opt_enum(o, "clsTarget", paper ? "prob" : "logit", {"logit", "prob", "bce", "kl"}));
  Napi::Value wdv;
  if (has(o, "weighted", &wdv)) {
    if (!wdv.IsObject() || wdv.IsArray() || wdv.IsFunction()) {
      fail_type(kInvalidArgType, "options.weighted: expected an object { box?, obj?, cls? } of booleans, got " + describe(wdv));
    }
    const Napi::Object wd = wdv.As<Napi::Object>();
    var.weighted_box = opt_bool(wd, "box", var.weighted_box);
    var.weighted_obj = opt_bool(wd, "obj", var.weighted_obj);
    var.weighted_cls = opt_bool(wd, "cls", var.weighted_cls);
  }
  var.temperature = opt_number(o, "temperature", "temperature", 1.0);
  var.fm_nms = opt_bool(o, "fmNms", false);
  opts.lambda = opt_number(o, "lambda", "lambda", paper ? 1.0 : 10.0);
  Napi::Value wv;
  if (has(o, "weights", &wv)) {
    if (!wv.IsObject() || wv.IsArray() || wv.IsFunction()) {
      fail_type(kInvalidArgType,
                "options.weights: expected an object { box?, obj?, cls? }, got " + describe(wv));
    }
    const Napi::Object w = wv.As<Napi::Object>();
    opts.w_box = opt_number(w, "box", "weights.box", 1.0);
    opts.w_obj = opt_number(w, "obj", "weights.obj", 1.0);
    opts.w_cls = opt_number(w, "cls", "weights.cls", 1.0);
  }
  opts.grad = opt_bool(o, "grad", true);
  opts.grad_scale = opt_number(o, "gradScale", "gradScale", 1.0);
  opts.check_finite = opt_bool(o, "checkFinite", false);
  opts.impl = opt_enum(o, "impl", "fused", {"fused", "reference"}) == "fused" ? yd::Impl::Fused
                                                                              : yd::Impl::Reference;
  opts.threads = static_cast<int>(opt_integer(o, "threads", 0, 0, 1024, false));
  Napi::Value dv;
  if (has(o, "device", &dv)) {
    if (!dv.IsString()) {
      fail_type(kInvalidArgType, "options.device: expected 'cpu', 'cuda' or 'cuda:N', got " + describe(dv));
    }
    opts.device = dv.As<Napi::String>().Utf8Value();
    yd::resolve_device(opts.device, "options.device");  // coded error now, not mid-call
  }
  return opts;
}

// ---- heads ------------------------------------------------------------------

int64_t shape_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > std::numeric_limits<int64_t>::max() / d) {
      fail_range(kInvalidShape, what + ": the shape's element count overflows");
    }
    n *= d;
  }
  return n;
}

at::Tensor borrow(Napi::Float32Array a, const std::vector<int64_t>& shape) {
  // Zero copy: the tensor views the array's memory (honouring byteOffset).
  return at::from_blob(a.Data(), shape, at::TensorOptions().dtype(at::kFloat));
}

// One head: { data: Float32Array, shape: number[] } or a native Tensor handle.
at::Tensor parse_head(const Napi::Env& env, const Napi::Value& v, size_t s, const char* tensor,
                      PreparedCall& call, bool* is_array) {
  *is_array = false;
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) {
    fail_type(kInvalidArgType, scale_name(s, tensor) +
                                   ": expected a head { data: Float32Array, shape: number[] } "
                                   "or a Tensor, got " + describe(v));
  }
  const Napi::Object o = v.As<Napi::Object>();
  // The common case first: a { data, shape } head (napi_instanceof is slow).
  const Napi::Value data_v = o.Get("data");
  if (data_v.IsUndefined() && TensorWrap::IsInstance(env, v)) {
    return TensorWrap::Get(v, scale_name(s, tensor));
  }
  const std::string what = scale_name(s, tensor);
  const Napi::Float32Array data = expect_float32_array(data_v, what + ".data");
  const std::vector<int64_t> shape = parse_shape(o.Get("shape"), what + ".shape");
  const int64_t numel = shape_numel(shape, what + ".shape");
  if (static_cast<int64_t>(data.ElementLength()) != numel) {
    fail_range(kDataLength, what + ": data has " + std::to_string(data.ElementLength()) +
                                " elements but shape [" +
                                [&] {
                                  std::string r;
                                  for (size_t i = 0; i < shape.size(); ++i)
                                    r += (i ? ", " : "") + std::to_string(shape[i]);
                                  return r;
                                }() +
                                "] needs " + std::to_string(numel));
  }
  call.pins.push_back(data);
  *is_array = true;
  return borrow(data, shape);
}

std::vector<Napi::Value> expect_array(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) {
    fail_type(kInvalidArgType, std::string(what) + ": expected an array of heads (one per scale), got " +
                                   describe(v));
  }
  const Napi::Array a = v.As<Napi::Array>();
  std::vector<Napi::Value> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i));
  return out;
}

}  // namespace

Napi::Float32Array expect_float32_array(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    fail_type(kInvalidArgType, what + ": expected a Float32Array, got " + describe(v));
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ArrayBuffer().IsDetached()) {
    fail_type(kDetachedBuffer, what + ": the Float32Array's ArrayBuffer is detached "
                                      "(transferred or neutered)");
  }
  return a;
}

std::vector<int64_t> parse_shape(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) fail_type(kInvalidArgType, what + ": expected an array of integers, got " + describe(v));
  const Napi::Array a = v.As<Napi::Array>();
  if (a.Length() == 0 || a.Length() > 8) {
    fail_range(kInvalidShape, what + ": expected 1 to 8 dimensions, got " + std::to_string(a.Length()));
  }
  std::vector<int64_t> shape;
  shape.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    const Napi::Value d = a.Get(i);
    if (!d.IsNumber()) {
      fail_type(kInvalidArgType, what + "[" + std::to_string(i) + "]: expected an integer, got " + describe(d));
    }
    const double x = d.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x) || std::floor(x) != x || x < 1 || x > 9007199254740991.0) {
      fail_range(kInvalidShape, what + "[" + std::to_string(i) +
                                    "]: expected a positive integer, got " + describe(d));
    }
    shape.push_back(static_cast<int64_t>(x));
  }
  return shape;
}

PreparedCall prepare_call(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  PreparedCall call;
  const std::vector<Napi::Value> student = expect_array(info[0], "student");
  const std::vector<Napi::Value> teacher = expect_array(info[1], "teacher");
  call.opts = parse_options(info[2]);
  std::vector<bool> student_is_array(student.size());
  for (size_t s = 0; s < student.size(); ++s) {
    bool is_array = false;
    call.student.push_back(parse_head(env, student[s], s, "student", call, &is_array));
    student_is_array[s] = is_array;
  }
  for (size_t s = 0; s < teacher.size(); ++s) {
    bool is_array = false;
    call.teacher.push_back(parse_head(env, teacher[s], s, "teacher", call, &is_array));
  }

  // Caller-owned gradient buffers (options.gradOut), one entry per scale.
  const Napi::Object o = info[2].As<Napi::Object>();
  Napi::Value gov;
  std::vector<Napi::Value> grad_out_js;
  if (has(o, "gradOut", &gov)) {
    if (!gov.IsArray()) {
      fail_type(kInvalidArgType, "options.gradOut: expected an array with one Float32Array or "
                                 "Tensor per scale, got " + describe(gov));
    }
    grad_out_js = expect_array(gov, "options.gradOut");
    if (grad_out_js.size() != call.student.size()) {
      fail_range(kGradOut, "options.gradOut must have one entry per scale (" +
                               std::to_string(call.student.size()) + "), got " +
                               std::to_string(grad_out_js.size()));
    }
  }
  // Validate the heads before touching gradients so errors name the heads first.
  yd::validate(call.student, call.teacher, call.opts, {});

  if (call.opts.grad) {
    call.grad_out.resize(call.student.size());
    call.grad_js.resize(call.student.size(), env.Undefined());
    for (size_t s = 0; s < call.student.size(); ++s) {
      const at::Tensor& st = call.student[s];
      const Napi::Value g = grad_out_js.empty() ? env.Undefined() : grad_out_js[s];
      const std::string what = scale_name(s, "gradOut");
      if (!g.IsUndefined() && !g.IsNull()) {
        if (TensorWrap::IsInstance(env, g)) {
          call.grad_out[s] = TensorWrap::Get(g, what);
        } else {
          const Napi::Float32Array ga = expect_float32_array(g, what);
          if (static_cast<int64_t>(ga.ElementLength()) != st.numel()) {
            fail_range(kGradOut, what + ": expected a Float32Array of " + std::to_string(st.numel()) +
                                     " elements (the student's size), got " +
                                     std::to_string(ga.ElementLength()));
          }
          call.pins.push_back(ga);
          call.grad_out[s] = borrow(ga, st.sizes().vec());
        }
        call.grad_js[s] = g;
      } else if (student_is_array[s]) {
        // A Float32Array head: its gradient is a new Float32Array, written in place.
        Napi::Float32Array ga = Napi::Float32Array::New(env, static_cast<size_t>(st.numel()));
        call.pins.push_back(ga);
        call.grad_out[s] = borrow(ga, st.sizes().vec());
        call.grad_js[s] = ga;
      }
    }
    // gradOut shapes, dtypes and overlaps are checked by yd::distillation_loss,
    // which validates everything again before it computes.
  }
  return call;
}

Napi::Value build_result(Napi::Env env, const yd::Result& r, const PreparedCall& call) {
  // [terms, grads]: terms = Float64Array [loss, box, obj, cls, then box, obj, cls
  // of every scale]; the facade turns it into the result object (cheaper than
  // setting a dozen named properties from C++).
  const size_t S = r.scales.size();
  Napi::Float64Array terms = Napi::Float64Array::New(env, 4 + 3 * S);
  double* t = terms.Data();
  t[0] = r.loss;
  t[1] = r.total.box;
  t[2] = r.total.obj;
  t[3] = r.total.cls;
  for (size_t s = 0; s < S; ++s) {
    t[4 + 3 * s] = r.scales[s].box;
    t[5 + 3 * s] = r.scales[s].obj;
    t[6 + 3 * s] = r.scales[s].cls;
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, terms);
  if (call.opts.grad) {
    Napi::Array grads = Napi::Array::New(env, r.grads.size());
    for (size_t s = 0; s < r.grads.size(); ++s) {
      const Napi::Value g = call.grad_js[s];
      grads.Set(static_cast<uint32_t>(s), g.IsUndefined() ? TensorWrap::NewInstance(env, r.grads[s]) : g);
    }
    out.Set(1u, grads);
  } else {
    out.Set(1u, env.Null());
  }
  return out;
}

}  // namespace yd_addon
