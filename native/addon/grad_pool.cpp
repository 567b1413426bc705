// See grad_pool.h.
#include "grad_pool.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// The gradient buffers made through V8's own API (below, "Buffers V8 does not
// count") need Node's headers: the build adds them where it finds them
// (CMakeLists.txt, binding.gyp) and defines YD_V8_BUFFERS.
#if defined(YD_V8_BUFFERS) && defined(__has_include)
#if __has_include(<v8.h>) && __has_include(<node_version.h>) && __has_include(<dlfcn.h>)
#include <dlfcn.h>
#include <v8.h>
// node_version.h defines NAPI_VERSION as the runtime's own; this file keeps
// the build's (napi.h, included above, was compiled with it).
#pragma push_macro("NAPI_VERSION")
#undef NAPI_VERSION
#include <node_version.h>
#undef NAPI_VERSION
#pragma pop_macro("NAPI_VERSION")
#define YD_HAVE_V8_BUFFERS 1
#endif
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
  // Handed out over a buffer V8 does not count (below): the bytes this block
  // reported to V8 while it is out (0: it was one of the quiet ones).
  bool uncounted = false;
  int64_t reported = 0;
  uint64_t pooled_at = 0;  // the pool's call count when it was last pooled
  enum State { kOut, kPooled, kOrphan } state = kOut;
};

namespace {

constexpr size_t kHuge = size_t{2} << 20;
// A caller that keeps every result of many calls: beyond this many blocks
// handed out by one environment, new arrays are plain ones (no list to walk).
constexpr size_t kMaxOutstanding = 256;

// The cap on what the pool keeps: until gradientPool({ maxBytes }) sets one,
// the larger of kDefaultCap and kCallsPerCap times the largest call's new
// gradient arrays. A collection can hand back two calls' arrays at once (half
// the cap goes out unreported to V8, "Buffers V8 does not count"): under a cap
// of 512 MiB, B = 32 heads (274 MB a call) saw a tenth of their blocks freed
// and allocated afresh every round, and the plain call read 1.20-1.32x the
// gradOut call by median against 0.98-1.25x under this cap (BENCHMARKS.md,
// "The pool's cap follows the calls"). A block that no call has taken for
// kIdleCalls calls is freed, so that a one-off large call leaves nothing
// behind for long.
constexpr size_t kDefaultCap = size_t{512} << 20;
constexpr size_t kCallsPerCap = 4;
constexpr uint64_t kIdleCalls = 100;

struct Pool {
  std::mutex mu;
  std::multimap<size_t, PoolBlock*> free;  // by byte length
  size_t pooled_bytes = 0;
  size_t max_bytes = kDefaultCap;  // the caller's cap, where user_cap
  bool user_cap = false;
  size_t largest_call = 0;  // bytes of new gradient arrays, the largest call's
  uint64_t calls = 0;       // calls that made new gradient arrays
  double reused = 0;
  double allocated = 0;
};

// Process-wide (blocks may pass from a worker's environment to another's) and
// never destroyed: finalizers may run while the process tears down.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

// The cap in force; with the pool's lock held.
size_t cap_locked(const Pool& p) {
  if (p.user_cap) return p.max_bytes;
  const size_t calls = p.largest_call > SIZE_MAX / kCallsPerCap ? SIZE_MAX : p.largest_call * kCallsPerCap;
  return std::max(kDefaultCap, calls);
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
    if (p.pooled_bytes + b->bytes <= cap_locked(p)) {
      b->state = PoolBlock::kPooled;
      b->pooled_at = p.calls;
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

// ---------------------------------------------------------------------------
// Buffers V8 does not count.
//
// V8 counts the memory of every ArrayBuffer it is handed with a deleter as
// new external memory, and once that has grown by 64 MB since its last full
// collection it starts another (Heap::ReportExternalMemoryPressure). Workload
// (a)'s plain call hands out 137 MB of buffers, so every call started a full
// collection, whose marking took the kernel's CPU (1.29-1.43x the gradOut
// call: BENCHMARKS.md "The plain call"). A buffer whose deleter is V8's own
// BackingStore::EmptyDeleter is not counted (V8 frees nothing for it). Our
// blocks need no deleter: a block is taken back when its buffer's weak
// reference is cleared, and none is shared with another buffer (marked
// untransferable; the facade keeps the pool off where transfer() ignores the
// mark), so once that buffer is unreachable nothing can reach the block.
//
// The pool then tells V8 itself what to collect for: the first half of its
// cap handed out and not yet back costs V8 nothing; every block beyond that is
// reported (napi_adjust_external_memory) while it is out, so a collection
// comes after about half the cap's worth of dropped results instead of after
// every 64 MB: on workload (a) one full collection per three plain calls
// instead of one per call, and as many blocks out as the cap holds.
//
// Node-API has no such buffer, so this takes V8's API, which is bound to the
// V8 build: only where the running Node's major version and V8 version are
// those of the headers built against, with every function looked up at run
// time (dlsym) so that a binary loaded under another Node still loads and uses
// Node-API's external buffers (native/addon/grad_pool.h). The environment
// variable YOLO_DISTILL_V8_BUFFERS=0 turns it off too.
// ---------------------------------------------------------------------------
#ifdef YD_HAVE_V8_BUFFERS
struct V8Api {
  using Current = v8::Isolate* (*)();
  using NewStore = std::unique_ptr<v8::BackingStore> (*)(void*, size_t, v8::BackingStore::DeleterCallback, void*);
  using NewBuffer = v8::Local<v8::ArrayBuffer> (*)(v8::Isolate*, std::shared_ptr<v8::BackingStore>);
  using Version = const char* (*)();
  Current current = nullptr;
  NewStore new_store = nullptr;
  NewBuffer new_buffer = nullptr;
  v8::BackingStore::DeleterCallback empty_deleter = nullptr;
  bool usable = false;
};

template <typename F>
F lookup(const char* name) {
  void* f = dlsym(RTLD_DEFAULT, name);
  F out = nullptr;
  static_assert(sizeof out == sizeof f, "function and data pointers differ");
  std::memcpy(&out, &f, sizeof out);
  return out;
}

// Resolved once per process (every environment shares one Node and one V8).
const V8Api& v8_api(napi_env env) {
  static const V8Api api = [env] {
    V8Api a;
    const char* off = std::getenv("YOLO_DISTILL_V8_BUFFERS");
    if (off != nullptr && std::strcmp(off, "0") == 0) return a;
    const napi_node_version* node = nullptr;
    if (napi_get_node_version(env, &node) != napi_ok || node == nullptr || node->major != NODE_MAJOR_VERSION) return a;
    const auto version = lookup<V8Api::Version>("_ZN2v82V810GetVersionEv");  // v8::V8::GetVersion()
    if (version == nullptr) return a;
    const std::string built = std::to_string(V8_MAJOR_VERSION) + "." + std::to_string(V8_MINOR_VERSION) + "." +
                              std::to_string(V8_BUILD_NUMBER) + ".";
    const char* running = version();
    if (running == nullptr || std::strncmp(running, built.c_str(), built.size()) != 0) return a;
    a.current = lookup<V8Api::Current>("_ZN2v87Isolate10GetCurrentEv");
    a.new_store = lookup<V8Api::NewStore>("_ZN2v811ArrayBuffer15NewBackingStoreEPvmPFvS1_mS1_ES1_");
    a.new_buffer = lookup<V8Api::NewBuffer>("_ZN2v811ArrayBuffer3NewEPNS_7IsolateESt10shared_ptrINS_12BackingStoreEE");
    a.empty_deleter = lookup<v8::BackingStore::DeleterCallback>("_ZN2v812BackingStore12EmptyDeleterEPvmS1_");
    a.usable = a.current != nullptr && a.new_store != nullptr && a.new_buffer != nullptr && a.empty_deleter != nullptr;
    return a;
  }();
  return api;
}

// An ArrayBuffer over the block that V8 does not count, as a Node-API value
// (Node's napi_value is its V8 handle's slot, v8impl::JsValueFromV8LocalValue;
// the version check above pins the Node this holds for).
napi_value uncounted_buffer(const V8Api& api, void* mem, size_t bytes) {
  v8::Isolate* isolate = api.current();
  if (isolate == nullptr) return nullptr;
  std::unique_ptr<v8::BackingStore> store = api.new_store(mem, bytes, api.empty_deleter, nullptr);
  if (!store) return nullptr;
  const v8::Local<v8::ArrayBuffer> buffer = api.new_buffer(isolate, std::move(store));
  if (buffer.IsEmpty()) return nullptr;
  return reinterpret_cast<napi_value>(*buffer);
}
#endif

bool uncounted_buffers(napi_env env) {
#ifdef YD_HAVE_V8_BUFFERS
  return v8_api(env).usable;
#else
  (void)env;
  return false;
#endif
}

// The pressure a block handed out over an uncounted buffer puts on V8 (see
// above): nothing while the environment's quiet blocks stay within half the
// pool's cap, its size beyond.
void report_handed_out(napi_env env, AddonData* data, PoolBlock* b, size_t cap) {
  if (!b->uncounted) return;
  if (data->quiet_bytes + b->bytes <= cap / 2) {
    data->quiet_bytes += b->bytes;
    b->reported = 0;
    return;
  }
  int64_t total = 0;
  b->reported = napi_adjust_external_memory(env, static_cast<int64_t>(b->bytes), &total) == napi_ok
                    ? static_cast<int64_t>(b->bytes)
                    : 0;
  if (b->reported == 0) data->quiet_bytes += b->bytes;
}

// b's buffer is gone: what it reported (or its share of the quiet ones) goes.
void report_returned(napi_env env, AddonData* data, PoolBlock* b) {
  if (!b->uncounted) return;
  if (b->reported != 0) {
    int64_t total = 0;
    napi_adjust_external_memory(env, -b->reported, &total);
  } else {
    data->quiet_bytes -= b->bytes;
  }
  b->uncounted = false;
  b->reported = 0;
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
      report_returned(env, data, out[i].first);
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
    if (cap_locked(pool()) == 0) return plain_array(env, n, half, data);
  }
  poll(env, ad);
  if (ad->outstanding.size() >= kMaxOutstanding) return plain_array(env, n, half, data);
  PoolBlock* b = take_pooled(bytes);
  if (b == nullptr) b = new_block(bytes);
  if (b == nullptr) return plain_array(env, n, half, data);

  // Until it is listed as handed out, the block is an orphan: whatever throws
  // below leaves it to the finalizer (or frees it now when no buffer was made).
  // A buffer V8 does not count has no finalizer: the block is V8's until its
  // weak reference is cleared, and an orphan's only other way out is the
  // environment's teardown (release_environment_blocks).
  napi_value ab = nullptr;
#ifdef YD_HAVE_V8_BUFFERS
  if (const V8Api& api = v8_api(env); api.usable) {
    {
      std::lock_guard<std::mutex> lock(pool().mu);
      b->state = PoolBlock::kOrphan;
    }
    ab = uncounted_buffer(api, b->mem, bytes);
    if (ab == nullptr) {
      // Nothing was made over the block: it goes back as it came.
      give_back(b);
      return plain_array(env, n, half, data);
    }
    b->uncounted = true;
  }
#endif
  if (ab == nullptr) {
    {
      std::lock_guard<std::mutex> lock(pool().mu);
      b->state = PoolBlock::kOrphan;
      b->v8_holds += 1;
    }
    if (napi_create_external_arraybuffer(env, b->mem, bytes, on_buffer_released, b, &ab) != napi_ok) {
      // e.g. a runtime that allows no external buffers: no finalizer will run,
      // so the hold taken above is dropped here, as the finalizer would.
      on_buffer_released(env, nullptr, b);
      ad->recycle_gradients = false;
      return plain_array(env, n, half, data);
    }
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
  size_t cap = 0;
  {
    std::lock_guard<std::mutex> lock(pool().mu);
    b->state = PoolBlock::kOut;
    cap = cap_locked(pool());
  }
  report_handed_out(env, ad, b, cap);
  *data = b->mem;
  if (half) return Napi::Uint16Array::New(env, n, buffer, 0);
  return Napi::Float32Array::New(env, n, buffer, 0);
}

void note_gradient_call(size_t bytes) {
  Pool& p = pool();
  std::vector<PoolBlock*> to_free;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.calls += 1;
    p.largest_call = std::max(p.largest_call, bytes);
    for (auto it = p.free.begin(); it != p.free.end();) {
      PoolBlock* b = it->second;
      if (p.calls - b->pooled_at <= kIdleCalls) {
        ++it;
        continue;
      }
      it = p.free.erase(it);
      p.pooled_bytes -= b->bytes;
      if (orphan_locked(b)) to_free.push_back(b);
    }
  }
  for (PoolBlock* b : to_free) free_block(b);
}

void release_environment_blocks(AddonData* data) {
  // The environment is going away: its references are not touched (Node-API
  // frees them with it); its blocks are never reused. A block over a buffer V8
  // does not count is freed now (no finalizer will come): no JavaScript runs
  // in a torn-down environment, and V8 frees nothing for such a buffer.
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
    const bool to_default = info.Length() > 0 && info[0].IsNull();  // back to the default cap
    if (info.Length() > 0 && !info[0].IsUndefined() && !to_default) {
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
      if (max_bytes >= 0 || to_default) {
        p.user_cap = !to_default;
        p.max_bytes = to_default ? kDefaultCap : static_cast<size_t>(max_bytes);
        // Largest blocks go first.
        while (p.pooled_bytes > cap_locked(p) && !p.free.empty()) {
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
      limit = static_cast<double>(cap_locked(p));
    }
    for (PoolBlock* b : to_free) free_block(b);
    r.Set("enabled", Napi::Boolean::New(env, ad->recycle_gradients && limit > 0));
    r.Set("maxBytes", Napi::Number::New(env, limit));
    r.Set("pooledBytes", Napi::Number::New(env, pooled));
    r.Set("pooledBlocks", Napi::Number::New(env, blocks));
    r.Set("outstandingBlocks", Napi::Number::New(env, static_cast<double>(ad->outstanding.size())));
    r.Set("reused", Napi::Number::New(env, reused));
    r.Set("allocated", Napi::Number::New(env, allocated));
    r.Set("buffers", Napi::String::New(env, uncounted_buffers(env) ? "v8" : "node-api"));
    return r;
  });
}

}  // namespace yd_addon
