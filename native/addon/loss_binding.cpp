// The loss entry points: distillationLoss (sync) and distillationLossAsync
// (a Napi::AsyncWorker resolving a Promise; the work runs off the event loop).
#include "loss_binding.h"

#include "convert.h"
#include "js_errors.h"
#include "loss.h"

namespace yd_addon {

namespace {

class LossWorker : public Napi::AsyncWorker {
 public:
  LossWorker(Napi::Env env, PreparedCall call)
      : Napi::AsyncWorker(env, "yolo-distill:loss"),
        call_(std::move(call)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    // Keep every borrowed Float32Array (inputs and gradient outputs) alive until
    // the call settles, even if the caller drops all references.
    pins_.reserve(call_.pins.size());
    for (const Napi::Object& o : call_.pins) pins_.push_back(Napi::Persistent(o));
    grad_refs_.reserve(call_.grad_js.size());
    for (const Napi::Value& g : call_.grad_js) {
      grad_refs_.push_back(g.IsObject() ? Napi::Persistent(g.As<Napi::Object>()) : Napi::ObjectReference());
    }
    // Tensor handles are held by the at::Tensor copies inside call_ (refcounted),
    // so disposing a handle mid-call is safe.
    call_.pins.clear();
    call_.grad_js.clear();
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = yd::run(call_.plan);
    } catch (...) {
      error_ = current_exception_info();
      SetError(error_.message);
    }
  }

  // Both completions run on the main thread of the env that queued the call. If
  // that env is shutting down (a worker terminated mid-call), N-API calls fail
  // and throw: there is nobody left to tell, so such errors are dropped rather
  // than allowed to escape into Node.
  void OnOK() override {
    try {
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      try {
        for (const Napi::ObjectReference& r : grad_refs_) {
          call_.grad_js.push_back(r.IsEmpty() ? env.Undefined() : r.Value());
        }
        deferred_.Resolve(build_result(env, result_, call_));
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      } catch (...) {
        const ErrorInfo info = current_exception_info();
        deferred_.Reject(make_error(env, info.kind, info.code, info.message).Value());
      }
    } catch (...) {
    }
  }

  void OnError(const Napi::Error&) override {
    try {
      Napi::HandleScope scope(Env());
      deferred_.Reject(make_error(Env(), error_.kind, error_.code, error_.message).Value());
    } catch (...) {
    }
  }

 private:
  PreparedCall call_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> pins_;
  std::vector<Napi::ObjectReference> grad_refs_;
  yd::Result result_;
  ErrorInfo error_;
};

}  // namespace

Napi::Value DistillationLoss(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const PreparedCall call = prepare_call(info, false);
    const yd::Result r = yd::run(call.plan);
    return build_result(info.Env(), r, call);
  });
}

Napi::Value DistillationLossAsync(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto* worker = new LossWorker(info.Env(), prepare_call(info, true));
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  });
}

}  // namespace yd_addon
