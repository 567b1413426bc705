#!/usr/bin/env python3
"""GPU baselines for bench/gpu.js: PyTorch eager forward + backward of the loss
(test/reference/torch_reference.py), a device-to-device streaming floor
(torch.sub(a, b, out=c): reads two arrays, writes one), a device-to-device copy
(the card's copy bandwidth, measured in the same run) and, in its own process
(--compile), the loss under torch.compile.

Every row is timed as bench/gpu.js times the fused call: host wall-clock of one
call until its results are on the host (torch.cuda.synchronize()), median of
the runs. CUDA-event times are reported beside them ("events") for reference.
Prints one JSON line.

    python3 bench/torch_gpu.py '{"shapes": [...], "layout": "nchw", "numClasses": 80, "dtype": "float32"}' [--compile]
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import torch  # noqa: E402
from torch_reference import distillation_loss  # noqa: E402


def timed(fn, warmup=3, runs=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    host, events = [], []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        host.append((time.perf_counter() - t0) * 1e3)
        events.append(start.elapsed_time(end))
    host.sort()
    events.sort()
    return {"median": host[len(host) // 2], "min": host[0], "max": host[-1], "events": events[len(events) // 2]}


def main(spec, compile_only):
    dtype = getattr(torch, spec.get("dtype", "float32"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    student = [torch.randn(s, device="cuda", generator=gen).to(dtype).requires_grad_(True) for s in spec["shapes"]]
    teacher = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in spec["shapes"]]
    A, C, layout = spec.get("numAnchors", 3), spec["numClasses"], spec["layout"]

    def loss_fn(st, te):
        return distillation_loss(st, te, A, C, layout, 10.0, 1.0, 1.0, 1.0)[0]

    def step(fn):
        def run():
            for p in student:
                p.grad = None
            fn(student, teacher).backward()
        return run

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if compile_only:
        try:
            compiled = torch.compile(loss_fn)
            out["compile"] = timed(step(compiled), warmup=3)
        except Exception as e:  # report, do not fail the whole benchmark
            out["compile"] = {"error": str(e).splitlines()[0][:200]}
        print(json.dumps(out))
        return
    out["eager"] = timed(step(loss_fn))
    a = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in spec["shapes"]]
    b = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in spec["shapes"]]
    c = [torch.empty_like(x) for x in a]

    def floor():
        for x, y, z in zip(a, b, c):
            torch.sub(x, y, out=z)

    def copy():
        for x, z in zip(a, c):
            z.copy_(x)
    out["floor"] = timed(floor)
    out["copy"] = timed(copy)
    print(json.dumps(out))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), "--compile" in sys.argv[2:])
