// Reference implementation, see reference.h.
#include "reference.h"

#include "cell_math.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace yd {

namespace {

// One obj/cls element's loss for a target kind (not Kl), elementwise.
at::Tensor element_loss(Target kind, const at::Tensor& p, const at::Tensor& t) {
  switch (kind) {
    case Target::Prob: {
      const at::Tensor d = at::sigmoid(p) - at::sigmoid(t);
      return d * d;
    }
    case Target::Bce:
      return at::binary_cross_entropy_with_logits(p, at::sigmoid(t), {}, {}, at::Reduction::None);
    case Target::Logit: {
      const at::Tensor d = p - t;
      return d * d;
    }
    case Target::Kl:  // per cell over the classes: computed where the cls term is
      break;
  }
  throw Error(ErrorKind::Generic, code::kInternal, "element_loss: 'kl' is not elementwise");
}

// FM-NMS keep mask [B, A, H, W, 1] (1 keep, 0 suppressed) from a score map
// [B, A, H, W] and the teacher's class argmax [B, A, H, W], built from shifted
// copies of both: suppressed where a 3x3 neighbour has the same argmax and a
// higher score (ties: the earlier cell in row-major order).
at::Tensor fm_nms_keep(const at::Tensor& obj, const at::Tensor& arg) {
  const int64_t H = obj.size(2), W = obj.size(3);
  const at::Tensor obj_pad = at::constant_pad_nd(obj, {1, 1, 1, 1}, -INFINITY);
  const at::Tensor arg_pad = at::constant_pad_nd(arg, {1, 1, 1, 1}, -1);
  at::Tensor suppressed = at::zeros_like(obj, obj.options().dtype(at::kBool));
  for (int64_t dy = -1; dy <= 1; ++dy) {
    for (int64_t dx = -1; dx <= 1; ++dx) {
      if (dy == 0 && dx == 0) continue;
      const at::Tensor o2 = obj_pad.narrow(2, 1 + dy, H).narrow(3, 1 + dx, W);
      const at::Tensor a2 = arg_pad.narrow(2, 1 + dy, H).narrow(3, 1 + dx, W);
      const bool earlier = dy < 0 || (dy == 0 && dx < 0);  // row-major before this cell
      at::Tensor wins = o2 > obj;
      if (earlier) wins = at::logical_or(wins, o2 == obj);
      suppressed = at::logical_or(suppressed, at::logical_and(a2 == arg, wins));
    }
  }
  return at::logical_not(suppressed).to(obj.scalar_type()).unsqueeze(-1);
}

// tau^2 KL(softmax(T/tau) || softmax(P/tau)) over the last dim, keepdim.
at::Tensor kl_last(const at::Tensor& p, const at::Tensor& t, double tau) {
  const at::Tensor lp = at::log_softmax(p / tau, -1);
  const at::Tensor lq = at::log_softmax(t / tau, -1);
  return (at::exp(lq) * (lq - lp)).sum(-1, /*keepdim=*/true) * (tau * tau);
}

// The terms of an anchor-free scale (docs/DESIGN.md §1b) on pv, tv viewed as
// [B, 1, H, W, 4R+C]: box (distribution KL per side, or squared differences for
// R = 1), cls (any clsTarget), weighted by w = max_c sigmoid(T_cls).
void anchor_free_terms(const at::Tensor& pv, const at::Tensor& tv, const ScaleGeom& g, const Options& o,
                       at::Tensor* box, at::Tensor* cls) {
  const Variant& v = o.variant;
  const int64_t R = g.reg_max, C = g.classes;
  const at::Tensor tc = tv.narrow(-1, 4 * R, C);
  const at::Tensor w = std::get<0>(at::sigmoid(tc).max(-1, /*keepdim=*/true));  // [B, 1, H, W, 1]
  const at::Tensor keep =
      v.fm_nms ? fm_nms_keep(w.squeeze(-1), tc.argmax(-1)) : at::ones_like(w);
  const at::Tensor m_box = v.weighted_box ? w * keep : keep;
  const at::Tensor m_cls = v.weighted_cls ? w * keep : keep;
  if (R > 1) {
    at::Tensor kl;
    for (int64_t j = 0; j < 4; ++j) {
      const at::Tensor side = kl_last(pv.narrow(-1, j * R, R), tv.narrow(-1, j * R, R), o.box_temperature);
      kl = j == 0 ? side : kl + side;
    }
    *box = at::mean(m_box * kl) / 4.0;
  } else {
    const at::Tensor d = pv.narrow(-1, 0, 4) - tv.narrow(-1, 0, 4);
    *box = at::mean(m_box * d * d);
  }
  const at::Tensor pc = pv.narrow(-1, 4 * R, C);
  *cls = v.cls == Target::Kl ? at::mean(m_cls * kl_last(pc, tc, v.temperature))
                             : at::mean(m_cls * element_loss(v.cls, pc, tc));
}

}  // namespace

Result reference_loss(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
                      const std::vector<ScaleGeom>& geoms, const Options& opts,
                      const std::vector<at::Tensor>& grad_out) {
  torch::autograd::AutoGradMode enable_grad(true);
  std::vector<at::Tensor> leaves;
  at::Tensor box_sum, obj_sum, cls_sum;
  Result r;
  for (size_t s = 0; s < student.size(); ++s) {
    const ScaleGeom& g = geoms[s];
    // Leaf copy in fp32 (the student stays untouched), teacher as a constant.
    // fp32 like a PyTorch training loop for the default formula; the variants'
    // transcendental terms (KL of near-equal distributions above all) lose digits
    // to cancellation in fp32, so they are computed in fp64.
    const at::ScalarType work =
        opts.variant.is_default() && opts.head == Head::Anchor ? at::kFloat : at::kDouble;
    at::Tensor p = student[s].detach().to(work).clone().requires_grad_(opts.grad);
    at::Tensor t = teacher[s].detach().to(work);
    leaves.push_back(p);
    at::Tensor pv = p, tv = t;  // as [B, A, H, W, 5+C]
    switch (g.layout) {
      case Layout::NCHW: {  // [B, A*(5+C), H, W] -> [B, A, 5+C, H, W] -> [B, A, H, W, 5+C]
        const std::vector<int64_t> v{g.batch, g.anchors, g.per_anchor(), g.height, g.width};
        pv = p.view(v).permute({0, 1, 3, 4, 2});
        tv = t.view(v).permute({0, 1, 3, 4, 2});
        break;
      }
      case Layout::NHWC: {  // [B, H, W, A*(5+C)] -> [B, H, W, A, 5+C] -> [B, A, H, W, 5+C]
        const std::vector<int64_t> v{g.batch, g.height, g.width, g.anchors, g.per_anchor()};
        pv = p.view(v).permute({0, 3, 1, 2, 4});
        tv = t.view(v).permute({0, 3, 1, 2, 4});
        break;
      }
      case Layout::NAHWC:
        break;
    }
    at::Tensor box, obj, cls;
    if (g.head == Head::AnchorFree) {
      anchor_free_terms(pv, tv, g, opts, &box, &cls);
      obj = at::zeros({}, p.options().requires_grad(false));  // no objectness channel
    } else {
      const at::Tensor w = at::sigmoid(tv.narrow(-1, 4, 1));  // teacher objectness, [..., 1]
      const Variant& v = opts.variant;
      if (v.is_default()) {
        auto term = [&](int64_t k0, int64_t n) {
          const at::Tensor d = pv.narrow(-1, k0, n) - tv.narrow(-1, k0, n);
          return at::mean(w * d * d);  // MSELoss(reduction='none') * weight, mean
        };
        box = term(0, 4);
        obj = term(4, 1);
        cls = term(5, g.classes);
      } else {
        const at::Tensor keep =
            v.fm_nms ? fm_nms_keep(tv.select(-1, kObjChannel), tv.narrow(-1, kClsOffset, g.classes).argmax(-1))
                     : at::ones_like(w);
        auto weight = [&](bool weighted) { return weighted ? w * keep : keep; };
        auto P = [&](int64_t k0, int64_t n) { return pv.narrow(-1, k0, n); };
        auto T = [&](int64_t k0, int64_t n) { return tv.narrow(-1, k0, n); };
        const at::Tensor box_e =
            v.box == BoxTarget::Paper
                ? at::cat({element_loss(Target::Prob, P(0, 2), T(0, 2)), element_loss(Target::Logit, P(2, 2), T(2, 2))}, -1)
                : element_loss(Target::Logit, P(0, 4), T(0, 4));
        box = at::mean(weight(v.weighted_box) * box_e);
        obj = at::mean(weight(v.weighted_obj) * element_loss(v.obj, P(4, 1), T(4, 1)));
        if (v.cls == Target::Kl) {
          const at::Tensor kl = kl_last(P(5, g.classes), T(5, g.classes), v.temperature);
          cls = at::mean(weight(v.weighted_cls) * kl);  // over the N cells
        } else {
          cls = at::mean(weight(v.weighted_cls) * element_loss(v.cls, P(5, g.classes), T(5, g.classes)));
        }
      }
    }
    r.scales.push_back(Terms{box.item<double>(), obj.item<double>(), cls.item<double>()});
    box_sum = s == 0 ? box : box_sum + box;
    obj_sum = s == 0 ? obj : obj_sum + obj;
    cls_sum = s == 0 ? cls : cls_sum + cls;
  }
  const at::Tensor loss =
      opts.lambda * (opts.w_box * box_sum + opts.w_obj * obj_sum + opts.w_cls * cls_sum);
  r.total = Terms{box_sum.item<double>(), obj_sum.item<double>(), cls_sum.item<double>()};
  r.loss = loss.item<double>();
  if (opts.grad) {
    const auto grads = torch::autograd::grad({loss}, leaves, /*grad_outputs=*/{},
                                             /*retain_graph=*/false, /*create_graph=*/false,
                                             /*allow_unused=*/true);
    for (size_t s = 0; s < student.size(); ++s) {
      at::Tensor gs = grads[s].defined() ? grads[s] : at::zeros_like(leaves[s]);
      if (opts.grad_scale != 1.0) gs = gs * opts.grad_scale;
      gs = gs.to(student[s].scalar_type());
      if (!grad_out.empty() && grad_out[s].defined()) {
        grad_out[s].copy_(gs);
        r.grads.push_back(grad_out[s]);
      } else {
        r.grads.push_back(gs);
      }
    }
  }
  return r;
}

}  // namespace yd
