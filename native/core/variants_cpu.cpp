// See variants_cpu.h. Per-cell math in double; gradients rounded to fp32 once.
#include "variants_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace yd {

namespace {

constexpr int64_t kCellChunk = 256;

// sum_j m_j * loss_j over one channel of a unit's cells (stride `step` between
// cells), writing g_j = coef * m_j * d loss_j / d p_j when g is not null.
template <Target kKind>
double channel_run(const float* __restrict p, const float* __restrict t, float* __restrict g,
                   int64_t step, int64_t len, const double* __restrict m, double coef) {
  double acc = 0.0;
  for (int64_t j = 0; j < len; ++j) {
    double s = 0.0;
    const double d = variant_element<double>(static_cast<int>(kKind), p[j * step], t[j * step], &s);
    acc += m[j] * s;
    if (g) g[j * step] = static_cast<float>(coef * m[j] * d);
  }
  return acc;
}

}  // namespace

void fm_nms_mask(const float* t, const ScaleGeom& g, unsigned char* keep, int threads) {
  const int64_t H = g.height, W = g.width, K = g.per_anchor(), hw = H * W;
  const int64_t planes = g.batch * g.anchors;
  // value k of cell j = y * W + x of plane (b, a), by the layout's strides.
  auto offset = [&](int64_t plane, int64_t j, int64_t k) {
    return g.offset(plane / g.anchors, plane % g.anchors, j / g.width, j % g.width, k);
  };
  auto at = [&](int64_t plane, int64_t j, int64_t k) { return t[offset(plane, j, k)]; };
  run_blocks(planes, threads, hw * K, [&](int64_t p0, int64_t p1) {
    std::vector<int64_t> arg(static_cast<size_t>(hw));
    std::vector<float> best(static_cast<size_t>(hw));
    for (int64_t plane = p0; plane < p1; ++plane) {
      // Classes outer, cells inner: contiguous runs in the nchw layout. The
      // first maximal class wins, and NaN counts as the largest, as in torch.argmax.
      for (int64_t j = 0; j < hw; ++j) {
        arg[j] = 0;
        best[j] = at(plane, j, kClsOffset);
      }
      for (int64_t c = 1; c < g.classes; ++c) {
        for (int64_t j = 0; j < hw; ++j) {
          const float v = at(plane, j, kClsOffset + c);
          if (argmax_takes(v, best[j])) {
            best[j] = v;
            arg[j] = c;
          }
        }
      }
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const bool suppressed = fm_nms_suppressed(
              y, x, H, W, [&](int64_t jj) { return arg[jj]; },
              [&](int64_t jj) { return at(plane, jj, kObjChannel); });
          // Indexed as the variant kernel visits cells (ScaleGeom::cell_index).
          keep[g.cell_index(plane / g.anchors, plane % g.anchors, y, x)] = suppressed ? 0 : 1;
        }
      }
    }
  });
}

RawSums variant_scale_cpu(const float* p, const float* t, float* g, const ScaleGeom& geom,
                          const Options& o, int threads) {
  const Variant& v = o.variant;
  const int64_t cells = geom.cells(), hw = geom.height * geom.width, K = geom.per_anchor();
  const int64_t C = geom.classes;
  // nchw: channel planes; nahwc and nhwc: cells of K contiguous values in memory order.
  const bool nchw = !geom.cell_major();
  // d loss / d (per-element derivative): lambda * g_term * gradScale / (n_term * N).
  const VariantCoefs vc = variant_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, C, cells,
                                        v.cls == Target::Kl);
  const double cb = vc.box, co = vc.obj, cc = vc.cls;
  const double tau = v.temperature;

  std::vector<unsigned char> keep;
  if (v.fm_nms) {
    keep.resize(static_cast<size_t>(cells));
    fm_nms_mask(t, geom, keep.data(), threads);
  }
  // A unit is a run of up to kCellChunk cells (within one (b, a) plane in nchw).
  // Value k of the unit's cell j is at base + k * step_k + j * step_c: channels
  // outer, cells inner, so nchw reads contiguous runs.
  const int64_t chunks_per_plane = nchw ? (hw + kCellChunk - 1) / kCellChunk : 0;
  const int64_t units = nchw ? geom.batch * geom.anchors * chunks_per_plane : (cells + kCellChunk - 1) / kCellChunk;
  const int64_t step_k = nchw ? hw : 1, step_c = nchw ? 1 : K;

  return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    int64_t i0, len, base;  // first cell index, cell count, offset of (cell i0, k = 0)
    if (nchw) {
      const int64_t plane = unit / chunks_per_plane, c0 = (unit % chunks_per_plane) * kCellChunk;
      i0 = plane * hw + c0;
      len = std::min(kCellChunk, hw - c0);
      base = plane * K * hw + c0;
    } else {
      i0 = unit * kCellChunk;
      len = std::min(kCellChunk, cells - i0);
      base = i0 * K;
    }
    double mb[kCellChunk], mo[kCellChunk], mc[kCellChunk];
    for (int64_t j = 0; j < len; ++j) {
      const double keep_j = v.fm_nms ? keep[i0 + j] : 1.0;
      const double w = static_cast<double>(teacher_weight(t[base + kObjChannel * step_k + j * step_c]));
      mb[j] = (v.weighted_box ? w : 1.0) * keep_j;
      mo[j] = (v.weighted_obj ? w : 1.0) * keep_j;
      mc[j] = (v.weighted_cls ? w : 1.0) * keep_j;
    }
    // One channel k over the unit's cells: adds m_j * loss to *sum, writes gradients.
    auto channel = [&](int64_t k, Target kind, const double* m, double coef, double* sum) {
      const int64_t off = base + k * step_k;
      switch (kind) {  // the target kind is fixed per channel: keep it out of the loop
        case Target::Prob: *sum += channel_run<Target::Prob>(p + off, t + off, g ? g + off : nullptr, step_c, len, m, coef); break;
        case Target::Bce: *sum += channel_run<Target::Bce>(p + off, t + off, g ? g + off : nullptr, step_c, len, m, coef); break;
        case Target::Logit: *sum += channel_run<Target::Logit>(p + off, t + off, g ? g + off : nullptr, step_c, len, m, coef); break;
        case Target::Kl: throw Error(ErrorKind::Generic, code::kInternal, "'kl' is a per-cell kind, not per channel");
      }
    };
    for (int64_t k = 0; k < kBoxChannels; ++k) {
      channel(k, v.box == BoxTarget::Paper && k < 2 ? Target::Prob : Target::Logit, mb, cb, &acc.box);
    }
    channel(kObjChannel, v.obj, mo, co, &acc.obj);
    if (v.cls != Target::Kl) {
      for (int64_t c = 0; c < C; ++c) channel(kClsOffset + c, v.cls, mc, cc, &acc.cls);
      return;
    }
    // 'kl': tau^2 * KL(softmax(T/tau) || softmax(P/tau)) per cell, d/dP_k = tau * (p_k - q_k).
    // Pass 1: maxima; pass 2: sums of exponentials; pass 3: value and gradients.
    // log p_k = (x_k/tau - m) - log sum, grouped as log_softmax does: with
    // |x/tau| huge, m + log sum would lose log sum to rounding (a negative KL).
    double mp[kCellChunk], mq[kCellChunk], lsp[kCellChunk], lsq[kCellChunk], kl[kCellChunk];
    for (int64_t j = 0; j < len; ++j) {
      mp[j] = mq[j] = -INFINITY;
      lsp[j] = lsq[j] = kl[j] = 0.0;
    }
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = base + (kClsOffset + c) * step_k;
      for (int64_t j = 0; j < len; ++j) {
        mp[j] = std::max(mp[j], p[off + j * step_c] / tau);
        mq[j] = std::max(mq[j], t[off + j * step_c] / tau);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = base + (kClsOffset + c) * step_k;
      for (int64_t j = 0; j < len; ++j) {
        lsp[j] += std::exp(p[off + j * step_c] / tau - mp[j]);
        lsq[j] += std::exp(t[off + j * step_c] / tau - mq[j]);
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      lsp[j] = std::log(lsp[j]);
      lsq[j] = std::log(lsq[j]);
    }
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = base + (kClsOffset + c) * step_k;
      for (int64_t j = 0; j < len; ++j) {
        const int64_t e = off + j * step_c;
        const double logp = kl_log_prob<double>(p[e], tau, mp[j], lsp[j]);
        const double logq = kl_log_prob<double>(t[e], tau, mq[j], lsq[j]);
        const double q = std::exp(logq);
        kl[j] += kl_class_term(q, logq, logp);
        if (g) g[e] = static_cast<float>(kl_grad(cc * mc[j], tau, logp, q));
      }
    }
    for (int64_t j = 0; j < len; ++j) kl[j] = kl_cell_value(kl[j], tau);  // tau^2 KL, >= 0
    for (int64_t j = 0; j < len; ++j) acc.cls += mc[j] * kl[j];
  });
}

Terms variant_terms(const RawSums& raw, const ScaleGeom& g, const Variant& v) {
  const int64_t n = g.cells();
  return Terms{box_term(raw.box, n), obj_term(raw.obj, n),
               v.cls == Target::Kl ? obj_term(raw.cls, n) : cls_term(raw.cls, g.classes, n)};
}

}  // namespace yd
