#!/usr/bin/env python3
"""How many 16-cell groups of the box KL take the KL steps' short path (no
exponential in step 3: native/core/fused_cpu.cpp, kl_group) on the heads that
the benchmarks use (bench/common.js fill(): values in [-3, 3) from the same
linear congruential generator), under the span test the steps used before
(every cell's a_c = T_c - P_c within a span of 0.99 tau) and the reach test
they use now (every a_c within 0.99 tau of the cell's weighted mean), in
float64 and without the margins (which are of order 1e-6 here).
  /usr/bin/python3 bench/kl-near-groups.py [GRID] [TAU]   (default 80, 10: one YOLOv8s-640 image, boxTemperature 10)
"""
import sys

import numpy as np


def fill(n, seed):
    out = np.empty(n, dtype=np.float32)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = (x / 4294967296 - 0.5) * 6
    return out


grid = int(sys.argv[1]) if len(sys.argv) > 1 else 80
tau = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
K, hw = 144, grid * grid
P = fill(K * hw, 1).reshape(K, hw).astype(np.float64)  # bench/common.js heads(): student seed 1, teacher 11
T = fill(K * hw, 11).reshape(K, hw).astype(np.float64)
groups = span_ok = reach_ok = 0
for side in range(4):
    a = T[side * 16:(side + 1) * 16] - P[side * 16:(side + 1) * 16]
    t = T[side * 16:(side + 1) * 16]
    w = np.exp((t - t.max(0)) / tau)
    mid = (w * a).sum(0) / w.sum(0)
    lo, hi = a.min(0), a.max(0)
    span = (hi - lo) / tau
    reach = np.maximum(hi - mid, mid - lo) / tau
    for j in range(0, hw - 15, 16):
        groups += 1
        span_ok += bool((span[j:j + 16] <= 0.99).all())
        reach_ok += bool((reach[j:j + 16] <= 0.99).all())
print(f"{groups} groups of 16 cells (4 sides of a {grid}x{grid} plane, tau {tau}): "
      f"span test {100 * span_ok / groups:.1f} %, reach test {100 * reach_ok / groups:.1f} %")
