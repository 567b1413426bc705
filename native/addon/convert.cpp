// See convert.h.
#include "convert.h"

#include <ATen/Functions.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "addon_data.h"
#include "grad_pool.h"
#include "js_errors.h"
#include "names.h"
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

}  // namespace

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

namespace {

// ---- options ----------------------------------------------------------------

// The top-level option keys, in the order parse_options reads them. The
// facade reads them from the caller's options object in this order (running
// its getters and Proxy traps, in JavaScript, before the addon takes any
// pointer) and passes the values after it (lib/index.ts): one Node-API call
// for all of them instead of a property lookup each, a fifth of a small
// call's time (BENCHMARKS.md "The tiny call"). test/options.test.js checks
// that the facade's list is this one (optionKeys).
#define YD_OPTION_KEYS(X)                                                                                       \
  X(NumClasses, "numClasses") X(Preset, "preset") X(NumAnchors, "numAnchors") X(Head, "head")                   \
  X(RegMax, "regMax") X(BoxTemperature, "boxTemperature") X(Layout, "layout") X(BoxTarget, "boxTarget")          \
  X(ObjTarget, "objTarget") X(ClsTarget, "clsTarget") X(Weighted, "weighted") X(Temperature, "temperature")     \
  X(FmNms, "fmNms") X(Lambda, "lambda") X(Weights, "weights") X(Grad, "grad") X(GradScale, "gradScale")        \
  X(CheckFinite, "checkFinite") X(Impl, "impl") X(Threads, "threads") X(Device, "device") X(GradOut, "gradOut")

#define YD_OPTION_ENUM(id, name) id,
enum class Opt : int { YD_OPTION_KEYS(YD_OPTION_ENUM) kCount };
#undef YD_OPTION_ENUM
#define YD_OPTION_NAME(id, name) name,
constexpr const char* kOptNames[] = {YD_OPTION_KEYS(YD_OPTION_NAME)};
#undef YD_OPTION_NAME
constexpr size_t kOptCount = static_cast<size_t>(Opt::kCount);

// Where the options are read from: the top-level object (its own lookups, or
// the values the facade passed, by key), or a nested one (options.weighted,
// options.weights) by name. `path` names a value in messages.
struct TopOptions {
  Napi::Object object;
  const Napi::Value* given = nullptr;  // kOptCount values in YD_OPTION_KEYS order, or null
  Napi::Value value(Opt k) const { return given ? given[static_cast<int>(k)] : object.Get(kOptNames[static_cast<int>(k)]); }
  static std::string path(Opt k) { return kOptNames[static_cast<int>(k)]; }
};
struct NestedOptions {
  Napi::Object object;
  const char* prefix = "";  // "weighted.", "weights."
  Napi::Value value(const char* key) const { return object.Get(key); }
  std::string path(const char* key) const { return std::string(prefix) + key; }
};

template <typename Src, typename Key>
bool has(const Src& src, Key key, Napi::Value* out) {
  Napi::Value v = src.value(key);
  if (v.IsUndefined()) return false;
  *out = v;
  return true;
}

template <typename Src, typename Key>
double opt_number(const Src& src, Key key, double fallback) {
  Napi::Value v;
  if (!has(src, key, &v)) return fallback;
  if (!v.IsNumber()) {
    fail_type(kInvalidArgType, "options." + src.path(key) + ": expected a number, got " + describe(v));
  }
  return v.As<Napi::Number>().DoubleValue();
}

template <typename Src, typename Key>
int64_t opt_integer(const Src& src, Key key, int64_t fallback, int64_t min, int64_t max, bool required) {
  Napi::Value v;
  if (!has(src, key, &v)) {
    if (required) {
      fail_type(kInvalidArgType, "options." + src.path(key) + " is required (an integer >= " +
                                     std::to_string(min) + ")");
    }
    return fallback;
  }
  if (!v.IsNumber()) {
    fail_type(kInvalidArgType, "options." + src.path(key) + ": expected an integer, got " + describe(v));
  }
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    fail_range(kInvalidOption, "options." + src.path(key) + ": expected an integer in [" + std::to_string(min) +
                                   ", " + std::to_string(max) + "], got " + describe(v));
  }
  return static_cast<int64_t>(d);
}

template <typename Src, typename Key>
bool opt_bool(const Src& src, Key key, bool fallback) {
  Napi::Value v;
  if (!has(src, key, &v)) return fallback;
  if (!v.IsBoolean()) {
    fail_type(kInvalidArgType, "options." + src.path(key) + ": expected a boolean, got " + describe(v));
  }
  return v.As<Napi::Boolean>().Value();
}

// A nested options object (options.weighted, options.weights) into *out;
// false when absent. `expected` describes it in the message of a wrong type.
bool nested(const TopOptions& o, Opt key, const char* prefix, const char* expected, NestedOptions* out) {
  Napi::Value v;
  if (!has(o, key, &v)) return false;
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    fail_type(kInvalidArgType, "options." + o.path(key) + ": expected " + expected + ", got " + describe(v));
  }
  *out = NestedOptions{v.As<Napi::Object>(), prefix};
  return true;
}

// An enum option read through its names table (native/core/names.h).
template <typename E, size_t N>
E opt_enum(const TopOptions& src, Opt key, E fallback, const yd::Named<E> (&table)[N]) {
  Napi::Value v;
  if (!has(src, key, &v)) return fallback;
  if (!v.IsString()) {
    fail_type(kInvalidArgType,
              "options." + src.path(key) + ": expected " + yd::names_list(table) + ", got " + describe(v));
  }
  const std::string s = v.As<Napi::String>().Utf8Value();
  for (const yd::Named<E>& row : table) {
    if (s == row.name) return row.value;
  }
  fail_range(kInvalidOption,
             "options." + src.path(key) + ": expected " + yd::names_list(table) + ", got \"" + s + "\"");
}

// Reads the options into the core's form: types are checked here, values
// (ranges, combinations) by the core, once (yd::make_plan). Defaults come from
// the core: the preset's options (yd::preset_options), which explicit options
// override. given: the values the facade read (see YD_OPTION_KEYS), or null to
// read them from the object here.
yd::Options parse_options(const Napi::Value& v, const Napi::Value* given) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    fail_type(kInvalidArgType, "options: expected an object with at least numClasses, got " +
                                   describe(v));
  }
  const TopOptions o{v.As<Napi::Object>(), given};
  // Integers are read as such (exactly representable); their ranges are the core's.
  constexpr int64_t kSafe = int64_t{1} << 53;
  const int64_t num_classes = opt_integer(o, Opt::NumClasses, 0, -kSafe, kSafe, true);
  yd::Options opts = yd::preset_options(opt_enum(o, Opt::Preset, yd::Preset::Yolov5, yd::kPresetNames));
  opts.num_classes = num_classes;
  {
    Napi::Value na;
    opts.num_anchors_given = has(o, Opt::NumAnchors, &na);
    opts.num_anchors = opt_integer(o, Opt::NumAnchors, opts.num_anchors, -kSafe, kSafe, false);
  }
  opts.head = opt_enum(o, Opt::Head, opts.head, yd::kHeadNames);
  opts.reg_max = opt_integer(o, Opt::RegMax, opts.reg_max, -kSafe, kSafe, false);
  opts.box_temperature = opt_number(o, Opt::BoxTemperature, opts.box_temperature);
  opts.layout = opt_enum(o, Opt::Layout, opts.layout, yd::kLayoutNames);
  yd::Variant& var = opts.variant;
  var.box = opt_enum(o, Opt::BoxTarget, var.box, yd::kBoxTargetNames);
  var.obj = opt_enum(o, Opt::ObjTarget, var.obj, yd::kObjTargetNames);
  var.cls = opt_enum(o, Opt::ClsTarget, var.cls, yd::kClsTargetNames);
  NestedOptions wd;
  if (nested(o, Opt::Weighted, "weighted.", "an object { box?, obj?, cls? } of booleans", &wd)) {
    var.weighted_box = opt_bool(wd, "box", var.weighted_box);
    var.weighted_obj = opt_bool(wd, "obj", var.weighted_obj);
    var.weighted_cls = opt_bool(wd, "cls", var.weighted_cls);
  }
  var.temperature = opt_number(o, Opt::Temperature, var.temperature);
  var.fm_nms = opt_bool(o, Opt::FmNms, var.fm_nms);
  opts.lambda = opt_number(o, Opt::Lambda, opts.lambda);
  NestedOptions w;
  if (nested(o, Opt::Weights, "weights.", "an object { box?, obj?, cls? }", &w)) {
    opts.w_box = opt_number(w, "box", opts.w_box);
    opts.w_obj = opt_number(w, "obj", opts.w_obj);
    opts.w_cls = opt_number(w, "cls", opts.w_cls);
  }
  opts.grad = opt_bool(o, Opt::Grad, opts.grad);
  opts.grad_scale = opt_number(o, Opt::GradScale, opts.grad_scale);
  opts.check_finite = opt_bool(o, Opt::CheckFinite, opts.check_finite);
  opts.impl = opt_enum(o, Opt::Impl, opts.impl, yd::kImplNames);
  opts.threads = opt_integer(o, Opt::Threads, opts.threads, -kSafe, kSafe, false);
  Napi::Value dv;
  if (has(o, Opt::Device, &dv)) {
    if (!dv.IsString()) {
      fail_type(kInvalidArgType, "options.device: expected 'cpu', 'cuda' or 'cuda:N', got " + describe(dv));
    }
    opts.device = dv.As<Napi::String>().Utf8Value();  // resolved by yd::make_plan
  }
  return opts;
}

// ---- heads ------------------------------------------------------------------

// A Float32Array read in phase 1: bound to a tensor in phase 2.
struct PendingArray {
  Napi::Value value;
  napi_value buffer;  // its ArrayBuffer (a view's buffer never changes): for guard_array_buffer
  std::vector<int64_t> shape;
  Where what;  // "scale 0, student"
  enum Role { Student, Teacher, GradOut } role;
  size_t scale;
  at::ScalarType dtype;  // float32 (Float32Array), float16 or bfloat16 (Uint16Array)
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;  // no overflow: checked in phase 1
    return n;
  }
};

// The array holds exactly the values its shape needs.
void check_data_length(const PendingArray& a, size_t length) {
  if (static_cast<int64_t>(length) != a.numel()) {
    fail_range(kDataLength, a.what + ": data has " + std::to_string(length) + " elements but shape " +
                                shape_str(a.shape) + " needs " + std::to_string(a.numel()));
  }
}

// The dtype of a head array: a Float32Array is float32; a Uint16Array holds the
// raw bits of float16 or bfloat16 values and must say which (docs/DESIGN.md §1c).
// (view: data's view_info, or null where data is no typed array.)
at::ScalarType head_dtype(const Napi::Value& data, const ViewInfo* view, const Napi::Value& dtype, const Where& what) {
  const napi_typedarray_type type = view ? view->type : napi_int8_array;
  if (!view || (type != napi_float32_array && type != napi_uint16_array)) {
    fail_type(kInvalidArgType, what + ".data: expected a Float32Array, or a Uint16Array with dtype 'float16' | "
                                      "'bfloat16', got " + describe(data));
  }
  std::string name;
  if (!dtype.IsUndefined()) {
    if (!dtype.IsString()) {
      fail_type(kInvalidArgType, what + ".dtype: expected 'float32' | 'float16' | 'bfloat16', got " + describe(dtype));
    }
    name = dtype.As<Napi::String>().Utf8Value();
    if (name != "float32" && name != "float16" && name != "bfloat16") {
      fail_range(kInvalidOption, what + ".dtype: expected 'float32' | 'float16' | 'bfloat16', got \"" + name + "\"");
    }
  }
  if (type == napi_float32_array) {
    if (!name.empty() && name != "float32") {
      fail_type(yd::code::kDtypeMismatch, what + ": dtype '" + name + "' needs a Uint16Array of the raw " + name +
                                              " bits, got a Float32Array (leave dtype out, or say 'float32')");
    }
    return at::kFloat;
  }
  if (name.empty()) {
    fail_type(kInvalidArgType, what + ": a Uint16Array head needs dtype: 'float16' or 'bfloat16' (its values "
                                      "are the raw 16-bit patterns, e.g. onnxruntime-node's float16 output)");
  }
  if (name == "float32") {
    fail_type(yd::code::kDtypeMismatch, what + ": dtype 'float32' needs a Float32Array, got a Uint16Array");
  }
  return name == "float16" ? at::kHalf : at::kBFloat16;
}

// A head's data array, checked in phase 1 (read_head, read_head_record): its
// dtype (with the head's dtype), not detached; its ArrayBuffer for phase 2.
struct HeadData {
  at::ScalarType dtype;
  napi_value buffer;
};
HeadData head_data(Napi::Env env, const Napi::Value& data, const Napi::Value& dtype, const Where& what) {
  ViewInfo view;
  const bool typed = view_info(env, data, &view);
  const at::ScalarType type = head_dtype(data, typed ? &view : nullptr, dtype, what);
  check_not_detached(env, view.buffer, what.field(".data"));
  return HeadData{type, view.buffer};
}

// Phase 1 of one head: { data: Float32Array, shape: number[] } (kept as a JS
// value) or a native Tensor handle (its tensor taken now: refcounted, owned).
// The property names of a head, from AddonData::head_keys once per call.
struct HeadKeys {
  Napi::Value data, shape, dtype;
  explicit HeadKeys(Napi::Env env) {
    const Napi::Object keys = AddonData::Of(env)->head_keys.Value();
    data = keys.Get(0u), shape = keys.Get(1u), dtype = keys.Get(2u);
  }
};

void read_head(const Napi::Env& env, const HeadKeys& keys, const Napi::Value& v, size_t s, const char* tensor,
               PendingArray::Role role, at::Tensor* out, std::vector<PendingArray>* arrays) {
  const Where what(s, tensor);
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) {
    fail_type(kInvalidArgType, what + ": expected a head { data: Float32Array, shape: number[] } "
                                      "or a Tensor, got " + describe(v));
  }
  const Napi::Object o = v.As<Napi::Object>();
  // The common case first: a { data, shape } head (napi_instanceof is slower).
  const Napi::Value data_v = o.Get(keys.data);
  if (data_v.IsUndefined()) {
    if (TensorWrap::IsInstance(env, v)) {
      *out = TensorWrap::Get(v, what.str());
      return;
    }
    if (o.Get(keys.shape).IsUndefined()) {
      fail_type(kInvalidArgType,
                what + ": expected a head { data: Float32Array, shape: number[] } or a Tensor, got an "
                       "object with neither data nor shape (a Tensor handle posted to another thread "
                       "or structured-cloned arrives as an empty object: handles belong to the thread "
                       "that created them; send the values, e.g. tensor.toFloat32Array(), instead)");
    }
  }
  const HeadData data = head_data(env, data_v, o.Get(keys.dtype), what);
  std::vector<int64_t> shape = parse_shape(o.Get(keys.shape), what.field(".shape"));
  shape_numel(shape, what.field(".shape"));
  arrays->push_back(PendingArray{data_v, data.buffer, std::move(shape), what, role, s, data.dtype});
}

std::vector<Napi::Value> expect_array(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) {
    fail_type(kInvalidArgType, std::string(what) + ": expected an array of heads (one per scale), got " +
                                   describe(v));
  }
  const Napi::Array a = v.As<Napi::Array>();
  std::vector<Napi::Value> out;
  const uint32_t n = a.Length();
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) out.push_back(a.Get(i));
  return out;
}

at::Tensor borrow(void* data, const std::vector<int64_t>& shape, at::ScalarType dtype = at::kFloat) {
  // Zero copy: the tensor views the array's memory (the pointer honours byteOffset).
  return at::from_blob(data, shape, at::TensorOptions().dtype(dtype));
}

}  // namespace

int64_t shape_numel(const std::vector<int64_t>& shape, const Where& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > std::numeric_limits<int64_t>::max() / d) {
      fail_range(kInvalidShape, what + ": the shape's element count overflows");
    }
    n *= d;
  }
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

void check_float32_array_type(const Napi::Value& v, const Where& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    fail_type(kInvalidArgType, what + ": expected a Float32Array, got " + describe(v));
  }
  check_not_detached(v, what);
}

void check_not_detached(const Napi::Value& v, const Where& what) {
  ViewInfo view;
  if (!view_info(v.Env(), v, &view)) fail_type(kInvalidArgType, what + ": expected a typed array, got " + describe(v));
  check_not_detached(v.Env(), view.buffer, what);
}

void check_not_detached(Napi::Env env, napi_value buffer, const Where& what) {
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, buffer, &detached) != napi_ok || detached) {
    fail_type(kDetachedBuffer, what + ": the Float32Array's ArrayBuffer is detached "
                                      "(transferred or neutered)");
  }
}

bool view_info(Napi::Env env, const Napi::Value& v, ViewInfo* out) {
  // One Node-API call (it fails on anything but a typed array). It runs a
  // cascade of type tests, and asked up to four times per array it had cost
  // 4,560 of a tiny call's 77,180 instructions: now once per array and phase
  // (BENCHMARKS.md "The tiny call on a Zen 3 core").
  return napi_get_typedarray_info(env, v, &out->type, nullptr, nullptr, &out->buffer, nullptr) == napi_ok;
}

Napi::Float32Array expect_float32_array(const Napi::Value& v, const Where& what) {
  check_float32_array_type(v, what);
  guard_buffer(v.Env(), v, what, "", false);
  return v.As<Napi::Float32Array>();
}

void guard_buffer(Napi::Env env, const Napi::Value& v, const Where& what, const char* suffix,
                  bool pin_buffer) {
  napi_value buffer = nullptr;
  if (napi_get_typedarray_info(env, v, nullptr, nullptr, nullptr, &buffer, nullptr) != napi_ok) {
    fail_type(kInvalidArgType, what + suffix + ": expected a Float32Array");
  }
  guard_array_buffer(env, buffer, what, suffix, pin_buffer);
}

void guard_array_buffer(Napi::Env env, napi_value buffer, const Where& what, const char* suffix, bool pin_buffer) {
  // SharedArrayBuffers are not ArrayBuffers here; a growable one never shrinks.
  bool is_ab = false;
  napi_is_arraybuffer(env, buffer, &is_ab);
  if (!is_ab) return;
  AddonData* data = AddonData::Of(env);
  // Whether a buffer is resizable never changes: a buffer found fixed-length once
  // carries a type tag (a private symbol, invisible to JavaScript) that spares
  // the getter call next time.
  static const napi_type_tag kFixedLength = {0x79642d6669786564ULL, 0x2d6c656e67746821ULL};
  bool fixed = false;
  if (napi_check_object_type_tag(env, buffer, &kFixedLength, &fixed) == napi_ok && fixed) {
    // known fixed-length
  } else if (!data->resizable_getter.IsEmpty() &&
             data->resizable_getter.Value().Call(buffer, {}).ToBoolean().Value()) {
    fail_type(yd::code::kResizableBuffer,
              what + suffix + ": the Float32Array views a resizable ArrayBuffer, which could shrink under the "
                              "call; copy it into a fixed-length Float32Array (new Float32Array(a)), or use a "
                              "growable SharedArrayBuffer (they never shrink)");
  } else {
    napi_type_tag_object(env, buffer, &kFixedLength);  // fails harmlessly if tagged by another addon
  }
  if (pin_buffer) {
    if (data->mark_untransferable.IsEmpty()) {
      fail_type(yd::code::kInternal, "the native addon was loaded without the package's loader "
                                     "(lib/binding.ts), which async calls need; load 'yolo-distill'");
    }
    data->mark_untransferable.Value().Call({Napi::Value(env, buffer)});
  }
}

bool try_bind(Napi::Env env, const Napi::Value& v, BoundArray* out, napi_typedarray_type* type) {
  napi_value buffer = nullptr;
  bool detached = true;
  return napi_get_typedarray_info(env, v, type, &out->length, &out->data, &buffer, nullptr) == napi_ok &&
         napi_is_detached_arraybuffer(env, buffer, &detached) == napi_ok && !detached;
}

BoundArray bind_float32_array(Napi::Env env, const Napi::Value& v, const Where& what, const char* suffix) {
  // napi_get_typedarray_info now, after every user getter of the call has run.
  BoundArray bound{nullptr, 0};
  napi_typedarray_type type;
  if (!try_bind(env, v, &bound, &type)) {
    fail_type(kDetachedBuffer, what + suffix + ": the array's ArrayBuffer was detached (transferred) "
                                               "by JavaScript that ran during the call (a getter or Proxy)");
  }
  return bound;
}

namespace {

// A shape's dimension count, and its dimension i (the checks of parse_shape).
void check_rank(uint32_t n, const Where& what) {
  if (n == 0 || n > 8) {
    fail_range(kInvalidShape, what + ": expected 1 to 8 dimensions, got " + std::to_string(n));
  }
}
int64_t shape_dim(const Napi::Value& d, uint32_t i, const Where& what) {
  if (!d.IsNumber()) {
    fail_type(kInvalidArgType, what + "[" + std::to_string(i) + "]: expected an integer, got " + describe(d));
  }
  const double x = d.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || std::floor(x) != x || x < 1 || x > 9007199254740991.0) {
    fail_range(kInvalidShape, what + "[" + std::to_string(i) + "]: expected a positive integer, got " + describe(d));
  }
  return static_cast<int64_t>(x);
}

}  // namespace

std::vector<int64_t> parse_shape(const Napi::Value& v, const Where& what) {
  if (!v.IsArray()) fail_type(kInvalidArgType, what + ": expected an array of integers, got " + describe(v));
  const Napi::Array a = v.As<Napi::Array>();
  const uint32_t n = a.Length();
  check_rank(n, what);
  std::vector<int64_t> shape;
  shape.reserve(n);
  for (uint32_t i = 0; i < n; ++i) shape.push_back(shape_dim(a.Get(i), i, what));
  return shape;
}

namespace {

// What the facade passes after the option values (lib/index.ts callNative),
// read in order: past the last argument, undefined.
//   [3 + kOptCount]  terms: a Float64Array a sync call writes its terms into
//                    (build_result), or undefined;
//   then, where the student and the teacher are arrays: the student's length
//   and one record per head (read_head_record), the same for the teacher,
//   and, where options.gradOut is an array, its length and its entries
//   (Tensor handles as native handles).
// The facade has read every value in JavaScript, in the order the addon
// would: a getter or Proxy trap runs before the call, as it would in phase 1,
// and the addon makes no Node-API call per property or element (a quarter of
// a small call's instructions; BENCHMARKS.md "The tiny call on a Zen 3 core").
// Every value is checked here as read_head and parse_shape check theirs, with
// the same errors: a caller of the addon itself that passes anything else
// gets an error, never a pointer the lengths do not back.
constexpr size_t kTermsArg = 3 + kOptCount;
constexpr size_t kRecordsArg = kTermsArg + 1;

class ArgList {
 public:
  ArgList(const Napi::CallbackInfo& info, size_t pos) : info_(info), pos_(pos) {}
  Napi::Value next() { return info_[pos_++]; }

 private:
  const Napi::CallbackInfo& info_;
  size_t pos_;
};

// A list's length as the facade read it.
uint32_t arg_length(const Napi::Value& v, const Where& what) {
  const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(x >= 0 && x <= 4294967295.0) || std::floor(x) != x) {
    fail_type(kInvalidArgType, what + ": expected the length the package's facade read, got " + describe(v));
  }
  return static_cast<uint32_t>(x);
}

// One head's record: [data, dtype, shape, shape.length, shape[0], ...] for an
// object with data (the dimensions up to the first that is not a positive
// integer: the one parse_shape fails on), or [undefined, head] for anything
// else (a Tensor's native handle, a non-object, an object without data),
// which read_head reads as it reads a head of a direct call.
void read_head_record(const Napi::Env& env, std::optional<HeadKeys>& keys, ArgList& args, size_t s,
                      const char* tensor, PendingArray::Role role, at::Tensor* out, std::vector<PendingArray>* arrays) {
  const Napi::Value data_v = args.next();
  if (data_v.IsUndefined()) {
    if (!keys) keys.emplace(env);
    read_head(env, *keys, args.next(), s, tensor, role, out, arrays);
    return;
  }
  const Where what(s, tensor);
  const Napi::Value dtype_v = args.next();
  const Napi::Value shape_v = args.next();
  const HeadData data = head_data(env, data_v, dtype_v, what);
  const Where sw = what.field(".shape");
  if (!shape_v.IsArray()) fail_type(kInvalidArgType, sw + ": expected an array of integers, got " + describe(shape_v));
  const uint32_t n = arg_length(args.next(), sw);
  check_rank(n, sw);
  std::vector<int64_t> shape;
  shape.reserve(n);
  for (uint32_t i = 0; i < n; ++i) shape.push_back(shape_dim(args.next(), i, sw));
  shape_numel(shape, sw);
  arrays->push_back(PendingArray{data_v, data.buffer, std::move(shape), what, role, s, data.dtype});
}

}  // namespace

Napi::Array option_keys(Napi::Env env) {
  Napi::Array keys = Napi::Array::New(env, kOptCount);
  for (size_t k = 0; k < kOptCount; ++k) keys.Set(static_cast<uint32_t>(k), Napi::String::New(env, kOptNames[k]));
  return keys;
}

PreparedCall prepare_call(const Napi::CallbackInfo& info, bool async) {
  const Napi::Env env = info.Env();
  PreparedCall call;
  call.async = async;
  std::vector<PendingArray> arrays;

  // ---- phase 1: every user value; getters and Proxies may run any JavaScript.
  // The facade passes the option values it read after the options object
  // (YD_OPTION_KEYS), and the heads and gradOut's entries it read after them
  // (ArgList above); a direct call may pass the three arguments alone.
  const bool facade = info.Length() >= 3 + kOptCount;
  const bool records = info.Length() > kRecordsArg;
  ArgList args(info, kRecordsArg);
  std::vector<Napi::Value> student_js, teacher_js;
  size_t S = 0, T = 0;
  if (records) {
    S = arg_length(args.next(), "student");  // T: after the student's records
  } else {
    student_js = expect_array(info[0], "student");
    teacher_js = expect_array(info[1], "teacher");
    S = student_js.size();
    T = teacher_js.size();
  }
  std::array<Napi::Value, kOptCount> given;
  if (facade) {
    for (size_t k = 0; k < kOptCount; ++k) given[k] = info[3 + k];
  }
  const Napi::Value* given_values = facade ? given.data() : nullptr;
  call.opts = parse_options(info[2], given_values);
  std::optional<HeadKeys> keys;  // the property names, where a head is read here
  // One list's heads: from the facade's records, or read here from the list.
  const auto read_heads = [&](size_t count, const std::vector<Napi::Value>& list_js, const char* name,
                              PendingArray::Role role, std::vector<at::Tensor>* out) {
    out->resize(count);
    for (size_t s = 0; s < count; ++s) {
      if (records) {
        read_head_record(env, keys, args, s, name, role, &(*out)[s], &arrays);
      } else {
        if (!keys) keys.emplace(env);
        read_head(env, *keys, list_js[s], s, name, role, &(*out)[s], &arrays);
      }
    }
  };
  read_heads(S, student_js, "student", PendingArray::Student, &call.student);
  if (records) T = arg_length(args.next(), "teacher");
  read_heads(T, teacher_js, "teacher", PendingArray::Teacher, &call.teacher);
  // Caller-owned gradient buffers (options.gradOut), one entry per scale.
  const TopOptions o{info[2].As<Napi::Object>(), given_values};
  std::vector<Napi::Value> grad_out_js;
  Napi::Value gov;
  const bool has_grad_out = has(o, Opt::GradOut, &gov);
  if (has_grad_out) {
    if (!gov.IsArray()) {
      fail_type(kInvalidArgType, "options.gradOut: expected an array with one Float32Array or "
                                 "Tensor per scale, got " + describe(gov));
    }
    if (records) {
      const uint32_t n = arg_length(args.next(), "options.gradOut");
      grad_out_js.reserve(n);
      for (uint32_t i = 0; i < n; ++i) grad_out_js.push_back(args.next());
    } else {
      grad_out_js = expect_array(gov, "options.gradOut");
    }
  }
  if (call.opts.grad) {
    call.grad_out.resize(S);
    call.grad_js.resize(S, env.Undefined());
  }
  std::vector<bool> grad_is_array(S, false);
  std::vector<ViewInfo> grad_view(S);
  if (call.opts.grad && !grad_out_js.empty()) {
    for (size_t s = 0; s < grad_out_js.size() && s < S; ++s) {
      const Napi::Value& g = grad_out_js[s];
      if (g.IsUndefined() || g.IsNull()) continue;
      const Where what(s, "gradOut");
      ViewInfo& view = grad_view[s];
      const bool typed = view_info(env, g, &view);
      if (!typed && TensorWrap::IsInstance(env, g)) {
        call.grad_out[s] = TensorWrap::Get(g, what.str());
      } else {
        if (!typed || (view.type != napi_float32_array && view.type != napi_uint16_array)) {
          fail_type(kInvalidArgType, what + ": expected a Float32Array (a Uint16Array for a float16 or "
                                            "bfloat16 student) or a Tensor, got " + describe(g));
        }
        check_not_detached(env, view.buffer, what);
        grad_is_array[s] = true;
      }
      call.grad_js[s] = g;
    }
  }

  // ---- phase 2: no user JavaScript runs from here on.
  if (has_grad_out && grad_out_js.size() != S) {
    fail_range(kGradOut, "options.gradOut must have one entry per scale (" +
                             std::to_string(S) + "), got " +
                             std::to_string(grad_out_js.size()));
  }
  for (const PendingArray& a : arrays) guard_array_buffer(env, a.buffer, a.what, ".data", async);
  for (size_t s = 0; s < grad_is_array.size(); ++s) {
    if (grad_is_array[s]) guard_array_buffer(env, grad_view[s].buffer, Where(s, "gradOut"), "", async);
  }
  // The new gradient arrays of array students without gradOut, made before any
  // pointer is taken: an array over recycled memory is marked untransferable,
  // which runs JavaScript (native/addon/grad_pool.h). Nobody else can reach
  // them before the call returns or settles. A Float32Array for a float32
  // student, a Uint16Array of the student's dtype for a 16-bit one. Their
  // memory may be a recycled block holding an earlier gradient: every loss path
  // writes every element.
  // (The student's data length is checked first, so that a shape its data
  // does not back allocates nothing.)
  std::vector<void*> new_grad(S, nullptr);
  if (call.opts.grad) {
    const auto needs_new_grad = [&](const PendingArray& a) {
      return a.role == PendingArray::Student && call.grad_js[a.scale].IsUndefined();
    };
    size_t new_bytes = 0;  // the pool's default cap follows it (grad_pool.h)
    for (const PendingArray& a : arrays) {
      if (needs_new_grad(a)) new_bytes += static_cast<size_t>(a.numel()) * (a.dtype != at::kFloat ? 2 : 4);
    }
    if (new_bytes != 0) note_gradient_call(new_bytes);
    for (const PendingArray& a : arrays) {
      if (!needs_new_grad(a)) continue;
      check_data_length(a, bind_float32_array(env, a.value, a.what, ".data").length);  // its pointer is not kept
      const Napi::TypedArray ga =
          new_gradient_array(env, static_cast<size_t>(a.numel()), a.dtype != at::kFloat, &new_grad[a.scale]);
      call.pins.push_back(ga);
      call.grad_js[a.scale] = ga;
    }
  }
  // From here on only Node-API calls that run no JavaScript at all: take the
  // pointers of the caller's arrays, now that nothing can detach them.
  for (const PendingArray& a : arrays) {
    const BoundArray data = bind_float32_array(env, a.value, a.what, ".data");
    check_data_length(a, data.length);
    call.pins.push_back(a.value.As<Napi::Object>());
    (a.role == PendingArray::Student ? call.student : call.teacher)[a.scale] = borrow(data.data, a.shape, a.dtype);
  }
  // Every check of the heads and options, once; gradients are checked next.
  call.plan = yd::make_plan(call.student, call.teacher, call.opts);

  if (call.opts.grad) {
    for (size_t s = 0; s < call.student.size(); ++s) {
      const at::Tensor& st = call.student[s];
      if (grad_is_array[s]) {
        // A Float32Array for a float32 student, a Uint16Array (its raw bits)
        // for a float16 or bfloat16 one: gradients come in the student's dtype.
        const bool half = st.scalar_type() != at::kFloat;
        const bool u16 = grad_view[s].type == napi_uint16_array;  // a view's type never changes
        if (half != u16) {
          fail_type(kGradOut, Where(s, "gradOut") + ": expected a " + (half ? "Uint16Array" : "Float32Array") +
                                  " (gradients come in the student's dtype, " + yd::dtype_name(st.scalar_type()) +
                                  "), got a " + (u16 ? "Uint16Array" : "Float32Array"));
        }
        const BoundArray ga = bind_float32_array(env, call.grad_js[s], Where(s, "gradOut"), "");
        if (static_cast<int64_t>(ga.length) != st.numel()) {
          fail_range(kGradOut, Where(s, "gradOut") + ": expected a " + (half ? "Uint16Array" : "Float32Array") +
                                   " of " + std::to_string(st.numel()) + " elements (the student's size), got " +
                                   std::to_string(ga.length));
        }
        call.pins.push_back(call.grad_js[s].As<Napi::Object>());
        call.grad_out[s] = borrow(ga.data, st.sizes().vec(), st.scalar_type());
      } else if (new_grad[s] != nullptr) {  // made above, before the pointers were taken
        call.grad_out[s] = borrow(new_grad[s], st.sizes().vec(), st.scalar_type());
      }
    }
  }
  yd::attach_grad_out(call.plan, call.grad_out);  // shapes, dtypes, devices, overlaps
  if (!async && facade && info[kTermsArg].IsTypedArray()) call.terms_js = info[kTermsArg];
  return call;
}

Napi::Value build_result(Napi::Env env, const yd::Result& r, const PreparedCall& call) {
  // [terms, grads]: terms = Float64Array [loss, box, obj, cls, then box, obj, cls
  // of every scale]; the facade turns it into the result object (cheaper than
  // setting a dozen named properties from C++). Where the facade passed a
  // Float64Array for them (a sync call: PreparedCall::terms_js), the terms go
  // there and only grads comes back: no new array per call.
  const size_t S = r.scales.size();
  const size_t n_terms = 4 + 3 * S;
  Napi::Float64Array terms;
  double* t = nullptr;
  if (!call.terms_js.IsEmpty()) {
    // Taken now: no JavaScript runs between here and the writes below.
    BoundArray bound{nullptr, 0};
    napi_typedarray_type type;
    if (!try_bind(env, call.terms_js, &bound, &type) || type != napi_float64_array || bound.length < n_terms) {
      fail_type(yd::code::kInternal, "the facade's terms array: expected a Float64Array of at least " +
                                         std::to_string(n_terms) + " elements");
    }
    t = static_cast<double*>(bound.data);
  } else {
    terms = Napi::Float64Array::New(env, n_terms);
    t = terms.Data();
  }
  t[0] = r.loss;
  t[1] = r.total.box;
  t[2] = r.total.obj;
  t[3] = r.total.cls;
  for (size_t s = 0; s < S; ++s) {
    t[4 + 3 * s] = r.scales[s].box;
    t[5 + 3 * s] = r.scales[s].obj;
    t[6 + 3 * s] = r.scales[s].cls;
  }
  Napi::Value grads_js = env.Null();
  if (call.opts.grad) {
    Napi::Array grads = Napi::Array::New(env, r.grads.size());
    for (size_t s = 0; s < r.grads.size(); ++s) {
      const Napi::Value g = call.grad_js[s];
      grads.Set(static_cast<uint32_t>(s), g.IsUndefined() ? TensorWrap::NewInstance(env, r.grads[s]) : g);
    }
    grads_js = grads;
  }
  if (!call.terms_js.IsEmpty()) return grads_js;
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, terms);
  out.Set(1u, grads_js);
  return out;
}

}  // namespace yd_addon
