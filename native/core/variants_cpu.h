// The loss variants on the CPU: one pass per scale, like the fused kernel, for
// any combination of per-term targets, weighting and FM-NMS. The default
// formula never comes here (it keeps its own, faster kernel).
#pragma once

#include "fused_cpu.h"
#include "loss.h"

namespace yd {

// Raw sums per term: box and obj/cls before their normalisers (see
// variant_terms). p, t: contiguous fp32; g: gradient output or nullptr.
RawSums variant_scale_cpu(const float* p, const float* t, float* g, const ScaleGeom& geom,
                          const Options& opts, int threads);

// The per-scale terms from variant_scale_cpu's raw sums: box / (4 N),
// obj / N, cls / (C N), or cls / N for 'kl'.
Terms variant_terms(const RawSums& raw, const ScaleGeom& geom, const Variant& v);

// FM-NMS keep mask (1 keep, 0 suppressed) per cell (b, a, y, x) of one scale:
// a cell is suppressed when another cell of its 3x3 neighbourhood (same image
// and anchor) has the same teacher class argmax and a higher teacher
// objectness logit, ties going to the earlier cell in row-major order.
void fm_nms_mask(const float* t, const ScaleGeom& geom, unsigned char* keep, int threads);

}  // namespace yd
