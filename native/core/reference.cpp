// Reference implementation, see reference.h.
#include "reference.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace yd {

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
    at::Tensor p = student[s].detach().to(at::kFloat).clone().requires_grad_(opts.grad);
    at::Tensor t = teacher[s].detach().to(at::kFloat);
    leaves.push_back(p);
    at::Tensor pv = p, tv = t;
    if (g.layout == Layout::NCHW) {
      // [B, A*(5+C), H, W] -> [B, A, 5+C, H, W] -> [B, A, H, W, 5+C]
      const std::vector<int64_t> v{g.batch, g.anchors, g.per_anchor(), g.height, g.width};
      pv = p.view(v).permute({0, 1, 3, 4, 2});
      tv = t.view(v).permute({0, 1, 3, 4, 2});
    }
    const at::Tensor w = at::sigmoid(tv.narrow(-1, 4, 1));  // teacher objectness, [..., 1]
    auto term = [&](int64_t k0, int64_t n) {
      const at::Tensor d = pv.narrow(-1, k0, n) - tv.narrow(-1, k0, n);
      return at::mean(w * d * d);  // MSELoss(reduction='none') * weight, mean
    };
    const at::Tensor box = term(0, 4), obj = term(4, 1), cls = term(5, g.classes);
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
