// Recycled memory for the gradient arrays of a call without gradOut.
//
// A new Float32Array is fresh memory: the operating system faults in and zeroes
// every page on the kernel's first write, a full extra pass over the gradients
// (BENCHMARKS.md "The plain call"). The addon therefore hands out gradient
// arrays over blocks it owns (external ArrayBuffers) and takes a block back
// once the garbage collector has found its ArrayBuffer unreachable:
//
//  - each block handed out is watched through a weak reference to its
//    ArrayBuffer (a Node-API reference with count 0). V8 clears it in the
//    collection that finds the buffer unreachable, so the next call of the same
//    environment sees it gone (Node-API's finalizers would only run when the
//    event loop turns, and a training loop may never yield);
//  - a view keeps its buffer alive, so no typed array over the block remains;
//  - the buffer is marked untransferable before JavaScript sees it, so its
//    memory cannot move to another ArrayBuffer that outlives it. Where the
//    runtime's ArrayBuffer.prototype.transfer() ignores that mark the facade
//    does not enable the pool (lib/binding.ts probes it at load);
//  - V8 never reads or writes the contents of an external buffer; a block is
//    freed only once every external ArrayBuffer made over it has run its
//    finalizer (which Node-API defers to the event loop) and the pool does not
//    keep it. Where the buffers are made through V8's API instead (grad_pool.cpp,
//    "Buffers V8 does not count": V8 then neither counts nor frees them), there
//    is no finalizer: the block is free once its buffer's weak reference is
//    cleared (or its environment is torn down), since no other buffer shares it;
//  - V8 counts the memory of a Node-API external buffer as new with every call,
//    and 137 MB of them started a full collection per call; over V8's own
//    buffers the pool reports only what is out past half its cap, so a
//    collection comes every few calls (BENCHMARKS.md "The plain call").
//
// A recycled block holds an earlier call's gradient: only callers that write
// every element (the loss kernels do; test/grad-pool.test.js checks it) may use
// these arrays. Blocks under kMinPooledBytes are not pooled.
#pragma once

#include <napi.h>

#include <cstddef>

namespace yd_addon {

struct AddonData;

constexpr size_t kMinPooledBytes = size_t{1} << 20;

// A new Float32Array (half == false) or Uint16Array of n elements whose
// contents are unspecified; *data receives its memory. Falls back to a plain
// new (zeroed) array where pooling is off or not possible.
Napi::TypedArray new_gradient_array(Napi::Env env, size_t n, bool half, void** data);

// A call is about to make new gradient arrays of `bytes` in all: the pool's
// default cap follows the largest such call, and blocks idle for many calls
// are freed (grad_pool.cpp, kCallsPerCap and kIdleCalls).
void note_gradient_call(size_t bytes);

// Called from ~AddonData: the environment's blocks still handed out will never
// be polled again; they are freed once V8 lets go of them.
void release_environment_blocks(AddonData* data);

// gradientPool([{ maxBytes }]) → { enabled, maxBytes, pooledBytes, pooledBlocks,
// outstandingBlocks, reused, allocated, buffers }. maxBytes: the cap in force
// (until one is set, 512 MiB or four times the largest call's new gradient
// arrays, whichever is larger). A maxBytes lower than what is pooled frees the
// excess at once; 0 turns recycling off; null goes back to the default cap.
Napi::Value GradientPool(const Napi::CallbackInfo& info);

}  // namespace yd_addon
