// Runs one scale through the CUDA kernels of native/core/fused_cuda.cu under the
// launch-model emulation (cuda_emu.h), for test/cuda-emu.test.js:
//   runner DIR
// DIR/case.txt: "key value" lines (dtype f32|f16|bf16, nahwc, batch, anchors,
// height, width, classes, grad, misalign, variant, coef_box/obj/cls, and the
// variant parameters; anchor_free, reg_max and box_temperature for anchor-free
// heads); DIR/p.f32 and DIR/t.f32: student and teacher as float32
// (rounded here to the dtype, round to nearest even, as torch's .to() does).
// Writes DIR/out.txt (the raw sums box obj cls, launches) and DIR/g.f32 (the
// gradient, widened to float32).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "fused_cuda.h"
// cuda_emu.h is force-included (g++ -include) in this file too.

using namespace yd::cuda;

// The runtime calls of fused_cuda.cu, without a runtime: launches cannot fail here.
extern "C" cudaError_t cudaGetLastError(void) { return cudaSuccess; }
extern "C" const char* cudaGetErrorString(cudaError_t) { return "no error (CUDA emulation)"; }

namespace {

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

// A "device" buffer of n values of the dtype, `misalign` elements past an
// aligned start (exercises the kernels' 1-wide load path).
struct Buffer {
  std::vector<unsigned char> bytes;
  size_t elem, offset;
  Buffer(size_t n, size_t elem_, size_t misalign) : bytes((n + 8) * elem_ + 64), elem(elem_) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(bytes.data());
    offset = ((64 - base % 64) % 64) + misalign * elem;
  }
  void* ptr() { return bytes.data() + offset; }
};

void store(Buffer& b, const std::vector<float>& v, DType dt) {
  for (size_t i = 0; i < v.size(); ++i) {
    unsigned char* at = static_cast<unsigned char*>(b.ptr()) + i * b.elem;
    if (dt == DType::F32) {
      std::memcpy(at, &v[i], 4);
    } else if (dt == DType::F16) {
      const __half h = __float2half_rn(v[i]);
      std::memcpy(at, &h, 2);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(v[i]);
      std::memcpy(at, &h, 2);
    }
  }
}

float load(Buffer& b, size_t i, DType dt) {
  const unsigned char* at = static_cast<unsigned char*>(b.ptr()) + i * b.elem;
  if (dt == DType::F32) {
    float f;
    std::memcpy(&f, at, 4);
    return f;
  }
  if (dt == DType::F16) {
    __half h;
    std::memcpy(&h, at, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, at, 2);
  return __bfloat162float(h);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: runner DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::map<std::string, std::string> kv;
  {
    std::ifstream f(dir + "/case.txt");
    std::string k, v;
    while (f >> k >> v) kv[k] = v;
  }
  auto num = [&](const char* k) { return std::stod(kv.at(k)); };
  ScaleLaunch l;
  const std::string dts = kv.at("dtype");
  l.dtype = dts == "f32" ? DType::F32 : dts == "f16" ? DType::F16 : DType::BF16;
  l.batch = static_cast<int64_t>(num("batch"));
  l.anchors = static_cast<int64_t>(num("anchors"));
  l.height = static_cast<int64_t>(num("height"));
  l.width = static_cast<int64_t>(num("width"));
  l.classes = static_cast<int64_t>(num("classes"));
  l.nahwc = num("nahwc") != 0;
  l.nhwc = kv.count("nhwc") && num("nhwc") != 0;
  l.anchor_free = kv.count("anchor_free") && num("anchor_free") != 0;
  l.reg_max = kv.count("reg_max") ? static_cast<int64_t>(num("reg_max")) : 0;
  l.coefs = yd::TermCoefs{static_cast<float>(num("coef_box")), static_cast<float>(num("coef_obj")),
                          static_cast<float>(num("coef_cls"))};
  const bool grad = num("grad") != 0;
  const size_t misalign = static_cast<size_t>(num("misalign"));
  const size_t elem = l.dtype == DType::F32 ? 4 : 2;

  const std::vector<float> p = read_f32(dir + "/p.f32"), t = read_f32(dir + "/t.f32");
  const size_t n = p.size();
  Buffer bp(n, elem, misalign), bt(n, elem, misalign), bg(n, elem, misalign);
  store(bp, p, l.dtype);
  store(bt, t, l.dtype);
  std::memset(bg.bytes.data(), 0xff, bg.bytes.size());  // NaN everywhere: unwritten values show
  l.p = bp.ptr();
  l.t = bt.ptr();
  l.g = grad ? bg.ptr() : nullptr;

  double sums[3] = {0, 0, 0};
  // The kernels' one entry (launch_scale): the default formula's fused kernels
  // or the variant kernel's instantiation for the kinds below.
  VariantParams v;
  if (num("variant") != 0) {
    v.box = num("box_paper") != 0 ? yd::BoxTarget::Paper : yd::BoxTarget::Logit;
    v.obj = static_cast<yd::Target>(static_cast<int>(num("obj_kind")));
    v.cls = static_cast<yd::Target>(static_cast<int>(num("cls_kind")));
    v.weighted_box = static_cast<int>(num("weighted_box"));
    v.weighted_obj = static_cast<int>(num("weighted_obj"));
    v.weighted_cls = static_cast<int>(num("weighted_cls"));
    v.fm_nms = static_cast<int>(num("fm_nms"));
    v.temperature = static_cast<float>(num("temperature"));
    if (kv.count("box_temperature")) v.box_temperature = static_cast<float>(num("box_temperature"));
    v.cb = num("cb");
    v.co = num("co");
    v.cc = num("cc");
  }
  std::vector<double> ws((scale_workspace_bytes(l, v) + 7) / 8 + 1);
  const int err = launch_scale(l, v, ws.data(), sums, nullptr);
  std::FILE* out = std::fopen((dir + "/out.txt").c_str(), "w");
  std::fprintf(out, "%.17g %.17g %.17g %lld %d\n", sums[0], sums[1], sums[2],
               static_cast<long long>(yd_emu::launches_made()), err);
  std::fclose(out);
  if (grad) {
    std::vector<float> g(n);
    for (size_t i = 0; i < n; ++i) g[i] = load(bg, i, l.dtype);
    std::ofstream f(dir + "/g.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(g.data()), static_cast<std::streamsize>(n * 4));
  }
  return 0;
}
