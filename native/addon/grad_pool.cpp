// See grad_pool.h.
#include "grad_pool.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "addon_data.h"
#include "convert.h"
#include "js_errors.h"
#include "names.h"

namespace yd_addon {

// A block is in one of three states: handed out (listed in one environment's
// AddonData::outstanding), pooled (in the free list), or orphaned (in neither:
// freed as soon as no external ArrayBuffer over it remains).
struct PoolBlock {
  void* mem = nullptr;
  size_t bytes = 0;
  int v8_holds = 0;  // external ArrayBuffers over it whose finalizer has not run
  enum State { kOut, kPooled, kOrphan } state = kOut;
};

namespace {

constexpr size_t kHuge = size_t{2} << 20;
// A caller that keeps every result of many calls: beyond this many blocks
// handed out by one environment, new arrays are plain ones (no list to walk).
constexpr size_t kMaxOutstanding = 256;

struct Pool {
  std::mutex mu;
  std::multimap<size_t, PoolBlock*> free;  // by byte length
  size_t pooled_bytes = 0;
  size_t max_bytes = size_t{512} << 20;
  double reused = 0;
  double allocated = 0;
};

// Process-wide (blocks may pass from a worker's environment to another's) and
// never destroyed: finalizers may run while the process tears down.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

void free_block(PoolBlock* b) {
  std::free(b->mem);
  delete b;
}

// Marks b orphaned; whether it can be freed now (no external ArrayBuffer over
// it left). Called with the pool's lock held; the caller frees after unlocking.
bool orphan_locked(PoolBlock* b) {
  b->state = PoolBlock::kOrphan;
  return b->v8_holds == 0;
}

// Takes a block of exactly `bytes` from the free list, or nullptr.
PoolBlock* take_pooled(size_t bytes) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.free.find(bytes);
  if (it == p.free.end()) return nullptr;
  PoolBlock* b = it->second;
  p.free.erase(it);
  p.pooled_bytes -= bytes;
  b->state = PoolBlock::kOut;
  p.reused += 1;
  return b;
}

PoolBlock* new_block(size_t bytes) {
  // 2 MiB alignment: the block can be backed by transparent huge pages (one
  // fault per 2 MiB on its first touch instead of one per 4 KiB).
  const size_t len = (bytes + 4095) & ~size_t{4095};
  void* mem = nullptr;
  if (posix_memalign(&mem, kHuge, len) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (len >= kHuge) madvise(mem, len & ~(kHuge - 1), MADV_HUGEPAGE);
#endif
  auto* b = new (std::nothrow) PoolBlock();
  if (b == nullptr) {
    std::free(mem);
    return nullptr;
  }
  b->mem = mem;
  b->bytes = bytes;
  std::lock_guard<std::mutex> lock(pool().mu);
  pool().allocated += 1;
  return b;
}

// A block nobody can reach from JavaScript any more: into the free list if it
// fits under the limit, else orphaned (freed now or by the last finalizer).
void give_back(PoolBlock* b) {
  Pool& p = pool();
  bool release = false;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.pooled_bytes + b->bytes <= p.max_bytes) {
      b->state = PoolBlock::kPooled;
      p.free.emplace(b->bytes, b);
      p.pooled_bytes += b->bytes;
    } else {
      release = orphan_locked(b);
    }
  }
  if (release) free_block(b);
}

// The finalizer of an external ArrayBuffer over a block (run by Node-API on
// the event loop, or at the environment's teardown).
void on_buffer_released(napi_env /*env*/, void* /*data*/, void* hint) {
  auto* b = static_cast<PoolBlock*>(hint);
  bool release = false;
  {
    std::lock_guard<std::mutex> lock(pool().mu);
    b->v8_holds -= 1;
    release = b->state == PoolBlock::kOrphan && b->v8_holds == 0;
  }
  if (release) free_block(b);
}

// Blocks whose ArrayBuffer the collector has found unreachable go back.
// Reading a weak reference whose buffer is still alive makes a local handle to
// it, which would keep it alive through any collection until the current call
// returns: each read happens in its own handle scope, closed at once.
void poll(napi_env env, AddonData* data) {
  auto& out = data->outstanding;
  size_t keep = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    napi_handle_scope scope = nullptr;
    if (napi_open_handle_scope(env, &scope) != napi_ok) {
      out[keep++] = out[i];
      continue;
    }
    napi_value v = nullptr;
    const bool gone = napi_get_reference_value(env, out[i].second, &v) == napi_ok && v == nullptr;
    napi_close_handle_scope(env, scope);
    if (gone) {
      napi_delete_reference(env, out[i].second);
      give_back(out[i].first);
    } else {
      out[keep++] = out[i];
    }
  }
  out.resize(keep);
}

// A plain new array is fresh memory: every 4 KiB page of it faults in when the
// kernel first writes it. Asking for transparent huge pages before that first
// touch makes it one fault per 2 MiB (a no-op where the kernel lacks them).
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~uintptr_t{kHuge - 1};
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~uintptr_t{kHuge - 1};
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

Napi::TypedArray plain_array(Napi::Env env, size_t n, bool half, void** data) {
  if (half) {
    Napi::Uint16Array a = Napi::Uint16Array::New(env, n);
    *data = a.Data();
    advise_huge_pages(*data, a.ByteLength());
    return a;
  }
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  *data = a.Data();
  advise_huge_pages(*data, a.ByteLength());
  return a;
}

}  // namespace

Napi::TypedArray new_gradient_array(Napi::Env env, size_t n, bool half, void** data) {
  const size_t bytes = n * (half ? 2 : 4);
  AddonData* ad = AddonData::Of(env);
  if (!ad->recycle_gradients || bytes < kMinPooledBytes || ad->mark_untransferable.IsEmpty()) {
    return plain_array(env, n, half, data);
  }
  {
    std::lock_guard<std::mutex> lock(pool().mu);
    if (pool().max_bytes == 0) return plain_array(env, n, half, data);
  }
  poll(env, ad);
  if (ad->outstanding.size() >= kMaxOutstanding) return plain_array(env, n, half, data);
  PoolBlock* b = take_pooled(bytes);
  if (b == nullptr) b = new_block(bytes);
  if (b == nullptr) return plain_array(env, n, half, data);

  // Until it is listed as handed out, the block is an orphan: whatever throws
  // below leaves it to the finalizer (or frees it now when no buffer was made).
  {
    std::lock_guard<std::mutex> lock(pool().mu);
    b->state = PoolBlock::kOrphan;
    b->v8_holds += 1;
  }
  napi_value ab = nullptr;
  if (napi_create_external_arraybuffer(env, b->mem, bytes, on_buffer_released, b, &ab) != napi_ok) {
    // e.g. a runtime that allows no external buffers: no finalizer will run,
    // so the hold taken above is dropped here, as the finalizer would.
    on_buffer_released(env, nullptr, b);
    ad->recycle_gradients = false;
    return plain_array(env, n, half, data);
  }
  const Napi::ArrayBuffer buffer(env, ab);
  ad->mark_untransferable.Value().Call({buffer});  // throws on a JS exception: the block stays orphaned
  napi_ref weak = nullptr;
  if (napi_create_reference(env, ab, 0, &weak) != napi_ok) {
    throw Napi::Error::New(env, "yolo-distill: could not watch a gradient buffer");
  }
  try {
    ad->outstanding.emplace_back(b, weak);
  } catch (...) {
    napi_delete_reference(env, weak);
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(pool().mu);
    b->state = PoolBlock::kOut;
  }
  *data = b->mem;
  if (half) return Napi::Uint16Array::New(env, n, buffer, 0);
  return Napi::Float32Array::New(env, n, buffer, 0);
}

void release_environment_blocks(AddonData* data) {
  // The environment is going away: its references are not touched (Node-API
  // frees them with it); its blocks are never reused.
  for (auto& entry : data->outstanding) {
    PoolBlock* b = entry.first;
    bool release = false;
    {
      std::lock_guard<std::mutex> lock(pool().mu);
      release = orphan_locked(b);
    }
    if (release) free_block(b);
  }
  data->outstanding.clear();
}

Napi::Value GradientPool(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    AddonData* ad = AddonData::Of(env);
    double max_bytes = -1;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      // The facade checks the option; this is the last line of defence.
      if (!info[0].IsNumber()) {
        fail_type(yd::code::kInvalidArgType, "gradientPool: maxBytes must be a number, got " + describe(info[0]));
      }
      max_bytes = info[0].As<Napi::Number>().DoubleValue();
      if (!(max_bytes >= 0 && max_bytes <= 9007199254740991.0) || std::floor(max_bytes) != max_bytes) {
        fail_range(yd::code::kInvalidOption,
                   "gradientPool: maxBytes must be an integer from 0 to 2^53 - 1, got " + describe(info[0]));
      }
    }
    poll(env, ad);
    Pool& p = pool();
    std::vector<PoolBlock*> to_free;
    Napi::Object r = Napi::Object::New(env);
    double pooled = 0, blocks = 0, reused = 0, allocated = 0, limit = 0;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      if (max_bytes >= 0) {
        p.max_bytes = static_cast<size_t>(max_bytes);
        // Largest blocks go first.
        while (p.pooled_bytes > p.max_bytes && !p.free.empty()) {
          auto it = std::prev(p.free.end());
          PoolBlock* b = it->second;
          p.free.erase(it);
          p.pooled_bytes -= b->bytes;
          if (orphan_locked(b)) to_free.push_back(b);
        }
      }
      pooled = static_cast<double>(p.pooled_bytes);
      blocks = static_cast<double>(p.free.size());
      reused = p.reused;
      allocated = p.allocated;
      limit = static_cast<double>(p.max_bytes);
    }
    for (PoolBlock* b : to_free) free_block(b);
    r.Set("enabled", Napi::Boolean::New(env, ad->recycle_gradients && limit > 0));
    r.Set("maxBytes", Napi::Number::New(env, limit));
    r.Set("pooledBytes", Napi::Number::New(env, pooled));
    r.Set("pooledBlocks", Napi::Number::New(env, blocks));
    r.Set("outstandingBlocks", Napi::Number::New(env, static_cast<double>(ad->outstanding.size())));
    r.Set("reused", Napi::Number::New(env, reused));
    r.Set("allocated", Napi::Number::New(env, allocated));
    return r;
  });
}

}  // namespace yd_addon
