#!/usr/bin/env python3
"""PyTorch eager forward + backward of the distillation loss, for `npm run bench`.

Uses the test suite's independent reference (test/reference/torch_reference.py),
on random inputs of the given shapes, with the given thread count. Prints one
JSON line: per-run milliseconds and the process's peak RSS.

    /usr/bin/python3 bench/torch_eager.py '{"shapes": [[16,255,80,80]], "layout": "nchw",
        "numClasses": 80, "numAnchors": 3, "threads": 2, "warmup": 1, "runs": 5, "inner": 1}'
"""
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import torch  # noqa: E402
from torch_reference import distillation_loss  # noqa: E402


def main(spec):
    torch.set_num_threads(spec["threads"])
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(s, generator=gen).requires_grad_(True) for s in spec["shapes"]]
    teacher = [torch.randn(s, generator=gen) * 3 for s in spec["shapes"]]
    inner = spec.get("inner", 1)

    def step():
        for _ in range(inner):
            for p in student:
                p.grad = None
            loss = distillation_loss(student, teacher, spec["numAnchors"], spec["numClasses"],
                                     spec["layout"], 10.0, 1.0, 1.0, 1.0)[0]
            loss.backward()

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000.0 / inner)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"ms": times, "peakRssMb": peak_mb, "torch": torch.__version__}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
