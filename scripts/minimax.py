#!/usr/bin/env python3
"""The fitted polynomials of native/core/vec_math.h, and what they cost in accuracy.

  /usr/bin/python3 scripts/minimax.py        (Debian's python3-mpmath and numpy; about a minute)

1. exp(r) on |r| <= ln 2 / 2 (vexpf_impl), degree 6: minimax in relative error
   with c0 = c1 = 1 held, then the other coefficients rounded to float one at a
   time, lowest first, the rest refitted after each (so the rounding of one is
   absorbed by those above it).
2. (exp(x) - 1 - x) / x^2 on [-1, 1] (expm1_tail_poly), degree 7: minimax in
   relative error, every coefficient rounded to float.

The fit is Remez's exchange: solve for the polynomial that alternates an error
of equal size at n points, move the points to the extrema of the new error,
repeat. For each polynomial it prints the coefficients as vec_math.h spells them, the
polynomial's relative error with those float coefficients (in mpmath, 40
digits), and the error of its evaluation in float by Horner's rule with fused
multiply-adds (each step one rounding, as the kernels compile it) over 2 million
points, in units of 2^-24, next to the Taylor polynomial each replaced.
"""
import math

import mpmath as mp
import numpy as np

mp.mp.dps = 40


def to_float(v):
    return mp.mpf(float(np.float32(float(v))))


def remez(f, a, b, deg, fixed=(), iters=20, points=3000):
    """Coefficients c_0..c_deg minimizing max |p/f - 1| on [a, b], c_0..c_{m-1} = fixed."""
    m = len(fixed)
    nq = deg + 1 - m
    n = nq + 1
    fixed_part = lambda x: sum(fixed[j] * x ** j for j in range(m))
    xs = [(a + b) / 2 + (b - a) / 2 * mp.cos(mp.pi * (n - 1 - i + mp.mpf(1) / 2) / n) for i in range(n)]
    grid = [a + (b - a) * mp.mpf(k) / points for k in range(points + 1)]
    c = None
    for _ in range(iters):
        A = mp.matrix(n, n)
        rhs = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            for j in range(nq):
                A[i, j] = x ** (m + j)
            A[i, nq] = (-1) ** i * f(x)
            rhs[i] = f(x) - fixed_part(x)
        sol = mp.lu_solve(A, rhs)
        c = list(fixed) + [sol[j] for j in range(nq)]
        err = [(mp.polyval(c[::-1], x) - f(x)) / f(x) for x in grid]
        runs, cur = [], [0]
        for k in range(1, len(grid)):
            if err[k] == 0:
                continue
            if (err[k] > 0) == (err[cur[-1]] > 0):
                cur.append(k)
            else:
                runs.append(cur)
                cur = [k]
        runs.append(cur)
        peaks = [max(r, key=lambda k: abs(err[k])) for r in runs]
        while len(peaks) > n:
            peaks.pop(0 if abs(err[peaks[0]]) < abs(err[peaks[-1]]) else -1)
        if len(peaks) < n:
            break
        xs = [grid[k] for k in peaks]
    return c


def max_rel(f, c, a, b, points=4000):
    return max(abs((mp.polyval(c[::-1], x) - f(x)) / f(x)) for x in (a + (b - a) * mp.mpf(k) / points for k in range(points + 1)))


def horner_ulps(c, xs, truth):
    """Max relative error, in units of 2^-24, of Horner's rule in float with FMAs."""
    x64 = xs.astype(np.float64)
    p = np.full_like(xs, np.float32(float(c[-1])))
    for cj in c[-2::-1]:
        # the product of two floats is exact in double; one rounding to float
        p = (p.astype(np.float64) * x64 + float(np.float32(float(cj)))).astype(np.float32)
    return float(np.max(np.abs(p.astype(np.float64) - truth) / truth) / 2.0 ** -24)


def show(name, c, f, a, b, xs, truth, taylor):
    print(f"{name}: degree {len(c) - 1}")
    for j, cj in enumerate(c):
        v = np.float32(float(cj))
        print(f"  c{j} = {float(v).hex()} ({v!r})")
    print(f"  relative error with these float coefficients: {mp.nstr(max_rel(f, c, a, b), 3)}"
          f" (the Taylor polynomial of degree {len(taylor) - 1}: {mp.nstr(max_rel(f, [mp.mpf(t) for t in taylor], a, b), 3)})")
    print(f"  evaluated in float (Horner, FMA): {horner_ulps(c, xs, truth):.3f} ulp"
          f" (the Taylor polynomial: {horner_ulps(taylor, xs, truth):.3f} ulp)")


# 1. exp(r), |r| <= ln 2 / 2
a, b = -mp.log(2) / 2, mp.log(2) / 2
fixed = [mp.mpf(1), mp.mpf(1)]
while len(fixed) < 7:
    c = remez(mp.exp, a, b, 6, fixed)
    fixed.append(to_float(c[len(fixed)]))
xs = np.linspace(float(a), float(b), 2_000_001).astype(np.float32)
show("exp(r) on |r| <= ln 2 / 2 (vexpf_impl)", fixed, mp.exp, a, b, xs, np.exp(xs.astype(np.float64)),
     [float(np.float32(1 / math.factorial(k))) for k in range(8)])

# 2. (exp(x) - 1 - x) / x^2, |x| <= 1
series = [1 / mp.factorial(k + 2) for k in range(40)]
tail = lambda x: mp.polyval(series[::-1], x)
a, b = mp.mpf(-1), mp.mpf(1)
c = [to_float(v) for v in remez(tail, a, b, 7)]
xs = np.linspace(-1.0, 1.0, 2_000_001).astype(np.float32)
x64 = xs.astype(np.float64)
truth = np.zeros_like(x64)
for k in range(25, -1, -1):
    truth = truth * x64 + 1.0 / math.factorial(k + 2)
show("(exp(x) - 1 - x) / x^2 on |x| <= 1 (expm1_tail_poly)", c, tail, a, b, xs, truth,
     [float(np.float32(1 / math.factorial(k + 2))) for k in range(10)])
