#!/usr/bin/env python3
"""Independent PyTorch implementation of the objectness-scaled distillation loss
(DESIGN.md section 1), for the test suite. Run with Debian's python3-torch:

    /usr/bin/python3 test/reference/torch_reference.py DIR

DIR/manifest.json lists cases (optionally with "device": "cuda" and "dtype":
"float16" | "bfloat16", whose inputs are rounded to that dtype and computed in fp32); each scale's student and teacher are raw
little-endian float32 files. For every case this writes DIR/<id>.result.json
(loss, terms, per-scale terms) and, when grad is requested, DIR/<id>.s<k>.grad.f32.
Computed in float32 like a PyTorch training loop; the gradient by autograd.
"""
import json
import os
import sys

import torch


def distillation_loss(student, teacher, num_anchors, num_classes, layout, lam, g_box, g_obj, g_cls):
    mse = torch.nn.MSELoss(reduction="none")
    box = obj = cls = 0.0
    per_scale = []
    for p, t in zip(student, teacher):
        if layout == "nchw":
            _, _, h, w = p.shape
            p = p.view(-1, num_anchors, 5 + num_classes, h, w).permute(0, 1, 3, 4, 2)
            t = t.view(-1, num_anchors, 5 + num_classes, h, w).permute(0, 1, 3, 4, 2)
        weight = torch.sigmoid(t[..., 4]).unsqueeze(-1)
        box_s = torch.mean(mse(p[..., 0:4], t[..., 0:4]) * weight)
        obj_s = torch.mean(mse(p[..., 4:5], t[..., 4:5]) * weight)
        cls_s = torch.mean(mse(p[..., 5:], t[..., 5:]) * weight)
        per_scale.append((box_s, obj_s, cls_s))
        box = box + box_s
        obj = obj + obj_s
        cls = cls + cls_s
    loss = lam * (g_box * box + g_obj * obj + g_cls * cls)
    return loss, box, obj, cls, per_scale


def load(path, shape, device="cpu", dtype="float32"):
    """A float32 file as a float32 tensor on `device`, its values first rounded to
    `dtype` (so a float16/bfloat16 case is computed in fp32 from the same values
    the addon sees)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    t = torch.frombuffer(data, dtype=torch.float32).reshape(shape).clone()
    return t.to(getattr(torch, dtype)).to(device=device, dtype=torch.float32)


def main(folder):
    torch.set_num_threads(1)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"]:
        cid = case["id"]
        dev, dt = case.get("device", "cpu"), case.get("dtype", "float32")
        student = [load(os.path.join(folder, f"{cid}.s{k}.student.f32"), s, dev, dt).requires_grad_(True)
                   for k, s in enumerate(case["shapes"])]
        teacher = [load(os.path.join(folder, f"{cid}.s{k}.teacher.f32"), s, dev, dt)
                   for k, s in enumerate(case["shapes"])]
        wts = case.get("weights", {})
        loss, box, obj, cls, per_scale = distillation_loss(
            student, teacher, case["numAnchors"], case["numClasses"], case["layout"],
            case["lambda"], wts.get("box", 1.0), wts.get("obj", 1.0), wts.get("cls", 1.0))
        out = {
            "loss": loss.item(), "box": box.item(), "obj": obj.item(), "cls": cls.item(),
            "scales": [{"box": b.item(), "obj": o.item(), "cls": c.item()} for b, o, c in per_scale],
        }
        if case.get("grad", True):
            loss.backward()
            for k, p in enumerate(student):
                g = (p.grad * case.get("gradScale", 1.0)).contiguous().cpu()
                with open(os.path.join(folder, f"{cid}.s{k}.grad.f32"), "wb") as f:
                    f.write(g.numpy().astype("<f4").tobytes())
        with open(os.path.join(folder, f"{cid}.result.json"), "w") as f:
            json.dump(out, f)
    print(f"torch {torch.__version__}: {len(manifest['cases'])} cases")


if __name__ == "__main__":
    main(sys.argv[1])
