#!/usr/bin/env python3
"""GPU baselines for bench/gpu.js, workload (a) of the CPU benchmark: PyTorch eager
forward + backward of the loss (test/reference/torch_reference.py), the same
function under torch.compile, and a device-to-device streaming floor
(torch.sub(a, b, out=c): reads two arrays, writes one, 12 bytes per fp32 value).
Times with CUDA events; prints one JSON line.

    python3 bench/torch_gpu.py '{"shapes": [...], "layout": "nchw", "numClasses": 80, "dtype": "float32"}'
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import torch  # noqa: E402
from torch_reference import distillation_loss  # noqa: E402


def timed(fn, warmup=3, runs=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return {"median": times[len(times) // 2], "min": times[0], "max": times[-1]}


def main(spec):
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

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    out["eager"] = timed(step(loss_fn))
    try:
        compiled = torch.compile(loss_fn)
        out["compile"] = timed(step(compiled), warmup=3)
    except Exception as e:  # report, do not fail the whole benchmark
        out["compile"] = {"error": str(e).splitlines()[0][:200]}
    a = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in spec["shapes"]]
    b = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in spec["shapes"]]
    c = [torch.empty_like(x) for x in a]

    def floor():
        for x, y, z in zip(a, b, c):
            torch.sub(x, y, out=z)
    out["floor"] = timed(floor)
    print(json.dumps(out))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
