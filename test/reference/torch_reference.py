#!/usr/bin/env python3
"""Independent PyTorch implementation of the objectness-scaled distillation loss
(docs/DESIGN.md section 1), for the test suite. Run with Debian's python3-torch:

    /usr/bin/python3 test/reference/torch_reference.py DIR

DIR/manifest.json lists cases (optionally with "device": "cuda" and "dtype":
"float16" | "bfloat16", whose inputs are rounded to that dtype and computed in fp32); each scale's student and teacher are raw
little-endian float32 files. For every case this writes DIR/<id>.result.json
(loss, terms, per-scale terms) and, when grad is requested, DIR/<id>.s<k>.grad.f32.
Computed in float32 like a PyTorch training loop; the gradient by autograd.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F


def as_cells(x, num_anchors, num_classes, layout):
    """A head as [B, A, H, W, 5+C]: nchw is viewed as (-1, A, 5+C, H, W) and
    permuted (0, 1, 3, 4, 2); nhwc [B, H, W, A*(5+C)] is viewed as
    (-1, H, W, A, 5+C) and permuted (0, 3, 1, 2, 4); nahwc already is."""
    if layout == "nchw":
        _, _, h, w = x.shape
        return x.view(-1, num_anchors, 5 + num_classes, h, w).permute(0, 1, 3, 4, 2)
    if layout == "nhwc":
        _, h, w, _ = x.shape
        return x.view(-1, h, w, num_anchors, 5 + num_classes).permute(0, 3, 1, 2, 4)
    return x


def fm_nms_keep(t):
    """FM-NMS (Mehta & Ozturk 2018) on a teacher in [B, A, H, W, 5+C]: the
    objectness logit is the score, the class argmax the class. Returns
    [B, A, H, W, 1]."""
    return nms_keep(t[..., 4], t[..., 5:].argmax(-1)).unsqueeze(-1)


def nms_keep(score, arg):
    """FM-NMS on per-cell maps [..., H, W]: 1 where a cell is kept, 0 where
    another cell of its 3x3 neighbourhood has the same class argmax and a higher
    score (ties: the earlier cell in row-major order wins)."""
    h, w = score.shape[-2:]
    keep = torch.ones_like(score, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            for yy in range(max(0, y - 1), min(h, y + 2)):
                for xx in range(max(0, x - 1), min(w, x + 2)):
                    if (yy, xx) == (y, x):
                        continue
                    higher = score[..., yy, xx] > score[..., y, x]
                    if yy * w + xx < y * w + x:
                        higher = higher | (score[..., yy, xx] == score[..., y, x])
                    keep[..., y, x] &= ~((arg[..., yy, xx] == arg[..., y, x]) & higher)
    return keep.to(score.dtype)


def element_loss(kind, p, t):
    """Per-element loss of an obj/cls term: 'logit' (p - t)^2, 'prob'
    (sigmoid p - sigmoid t)^2, 'bce' BCE of sigmoid p against sigmoid t."""
    if kind == "prob":
        return (torch.sigmoid(p) - torch.sigmoid(t)) ** 2
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(p, torch.sigmoid(t), reduction="none")
    return torch.nn.MSELoss(reduction="none")(p, t)


PAPER_PRESET = {"boxTarget": "paper", "objTarget": "prob", "clsTarget": "prob", "weighted": {"obj": False}}


def resolve_preset(v, lam):
    """The README's presets: 'paper' (Mehta & Ozturk 2018 as published) starts from
    boxTarget 'paper', objTarget 'prob' not weighted, clsTarget 'prob', lambda 1;
    'yolov5' from the defaults (lambda 10). Explicit options override."""
    paper = v.get("preset") == "paper"
    base = dict(PAPER_PRESET) if paper else {}
    weighted = {**base.get("weighted", {}), **v.get("weighted", {})}
    out = {**base, **{k: x for k, x in v.items() if k != "preset"}, "weighted": weighted}
    return out, (lam if lam is not None else (1.0 if paper else 10.0))


def variant_loss(student, teacher, num_anchors, num_classes, layout, lam, g_box, g_obj, g_cls, v):
    """The loss variants: v has boxTarget, objTarget, clsTarget, weighted {box,
    obj, cls}, temperature, fmNms (and optionally a preset, resolved by the caller)."""
    box = obj = cls = 0.0
    per_scale = []
    weighted = {"box": True, "obj": True, "cls": True, **v.get("weighted", {})}
    tau = v.get("temperature", 1.0)
    for p, t in zip(student, teacher):
        p, t = as_cells(p, num_anchors, num_classes, layout), as_cells(t, num_anchors, num_classes, layout)
        wt = torch.sigmoid(t[..., 4]).unsqueeze(-1)
        keep = fm_nms_keep(t) if v.get("fmNms") else torch.ones_like(wt)
        m = {k: (wt if weighted[k] else 1.0) * keep for k in weighted}
        if v.get("boxTarget", "logit") == "paper":
            box_e = torch.cat([element_loss("prob", p[..., 0:2], t[..., 0:2]),
                               element_loss("logit", p[..., 2:4], t[..., 2:4])], -1)
        else:
            box_e = element_loss("logit", p[..., 0:4], t[..., 0:4])
        box_s = torch.mean(box_e * m["box"])
        obj_s = torch.mean(element_loss(v.get("objTarget", "logit"), p[..., 4:5], t[..., 4:5]) * m["obj"])
        if v.get("clsTarget", "logit") == "kl":
            kl = F.kl_div(F.log_softmax(p[..., 5:] / tau, -1), F.softmax(t[..., 5:] / tau, -1),
                          reduction="none").sum(-1, keepdim=True) * tau * tau
            cls_s = torch.mean(kl * m["cls"])
        else:
            cls_s = torch.mean(element_loss(v.get("clsTarget", "logit"), p[..., 5:], t[..., 5:]) * m["cls"])
        per_scale.append((box_s, obj_s, cls_s))
        box, obj, cls = box + box_s, obj + obj_s, cls + cls_s
    loss = lam * (g_box * box + g_obj * obj + g_cls * cls)
    return loss, box, obj, cls, per_scale


def anchor_free_loss(student, teacher, num_classes, layout, lam, g_box, g_cls, v, reg_max, box_tau):
    """Anchor-free heads (YOLOv8/YOLO11/YOLO26): per cell 4*R box-distribution
    logits (side-major: left, top, right, bottom) then C class logits; the weight
    is the teacher's top class probability; the box term is tau^2 KL of the
    teacher's side distributions against the student's (R > 1, localization
    distillation) or squared differences (R = 1); no objectness term."""
    box = cls = 0.0
    per_scale = []
    weighted = {"box": True, "cls": True, **v.get("weighted", {})}
    tau = v.get("temperature", 1.0)
    R, C = reg_max, num_classes
    for p, t in zip(student, teacher):
        if layout == "nchw":
            p, t = p.permute(0, 2, 3, 1), t.permute(0, 2, 3, 1)  # [B, H, W, 4R+C]
        tc, pc = t[..., 4 * R:], p[..., 4 * R:]
        w = torch.sigmoid(tc).max(-1).values  # [B, H, W]
        keep = nms_keep(w, tc.argmax(-1)) if v.get("fmNms") else torch.ones_like(w)
        m_box = (w if weighted["box"] else 1.0) * keep
        m_cls = (w if weighted["cls"] else 1.0) * keep
        if R > 1:
            kl = 0.0
            for j in range(4):
                ps, ts = p[..., j * R:(j + 1) * R], t[..., j * R:(j + 1) * R]
                kl = kl + F.kl_div(F.log_softmax(ps / box_tau, -1), F.softmax(ts / box_tau, -1),
                                   reduction="none").sum(-1) * box_tau * box_tau
            box_s = torch.mean(m_box * kl) / 4
        else:
            box_s = torch.mean((p[..., 0:4] - t[..., 0:4]) ** 2 * m_box.unsqueeze(-1))
        if v.get("clsTarget", "logit") == "kl":
            kl_c = F.kl_div(F.log_softmax(pc / tau, -1), F.softmax(tc / tau, -1), reduction="none").sum(-1) * tau * tau
            cls_s = torch.mean(m_cls * kl_c)
        else:
            cls_s = torch.mean(element_loss(v.get("clsTarget", "logit"), pc, tc) * m_cls.unsqueeze(-1))
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        per_scale.append((box_s, zero, cls_s))
        box, cls = box + box_s, cls + cls_s
    loss = lam * (g_box * box + g_cls * cls)
    return loss, box, torch.zeros((), dtype=loss.dtype), cls, per_scale


def distillation_loss(student, teacher, num_anchors, num_classes, layout, lam, g_box, g_obj, g_cls):
    mse = torch.nn.MSELoss(reduction="none")
    box = obj = cls = 0.0
    per_scale = []
    for p, t in zip(student, teacher):
        p, t = as_cells(p, num_anchors, num_classes, layout), as_cells(t, num_anchors, num_classes, layout)
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


def load(path, shape, device="cpu", dtype="float32", compute="float32"):
    """A float32 file as a tensor on `device`, its values first rounded to
    `dtype` (so a float16/bfloat16 case is computed in fp32 from the same values
    the addon sees), then widened to `compute` ("float64" for the edge-case tests:
    exact values where float32 intermediates would overflow or cancel)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    t = torch.frombuffer(data, dtype=torch.float32).reshape(shape).clone()
    return t.to(getattr(torch, dtype)).to(device=device, dtype=getattr(torch, compute))


def num(x):
    """A float for JSON: non-finite values as strings ('inf', '-inf', 'nan')."""
    return x if math.isfinite(x) else str(x)


def main(folder):
    torch.set_num_threads(1)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"]:
        cid = case["id"]
        dev, dt = case.get("device", "cpu"), case.get("dtype", "float32")
        cp = case.get("compute", "float32")
        # Student and teacher may be of different dtypes (an fp16 teacher, an fp32 student).
        sdt, tdt = case.get("studentDtype") or dt, case.get("teacherDtype") or dt
        student = [load(os.path.join(folder, f"{cid}.s{k}.student.f32"), s, dev, sdt, cp).requires_grad_(True)
                   for k, s in enumerate(case["shapes"])]
        teacher = [load(os.path.join(folder, f"{cid}.s{k}.teacher.f32"), s, dev, tdt, cp)
                   for k, s in enumerate(case["shapes"])]
        wts = case.get("weights", {})
        variant, lam = resolve_preset(case.get("variant") or {}, case.get("lambda"))
        args = (student, teacher, case["numAnchors"], case["numClasses"], case["layout"],
                lam, wts.get("box", 1.0), wts.get("obj", 1.0), wts.get("cls", 1.0))
        if case.get("head") == "anchorFree":
            loss, box, obj, cls, per_scale = anchor_free_loss(
                student, teacher, case["numClasses"], case["layout"], lam, wts.get("box", 1.0),
                wts.get("cls", 1.0), variant, case.get("regMax", 16), case.get("boxTemperature", 10.0))
        elif case.get("variant"):
            loss, box, obj, cls, per_scale = variant_loss(*args, variant)
        else:
            loss, box, obj, cls, per_scale = distillation_loss(*args)
        out = {
            "loss": num(loss.item()), "box": num(box.item()), "obj": num(obj.item()), "cls": num(cls.item()),
            "scales": [{"box": num(b.item()), "obj": num(o.item()), "cls": num(c.item())} for b, o, c in per_scale],
        }
        if case.get("grad", True):
            loss.backward()
            for k, p in enumerate(student):
                # The upstream scale multiplies the (float64 when asked) gradient
                # before its one rounding to float32.
                g = (p.grad * case.get("gradScale", 1.0)).contiguous().cpu().to(torch.float32)
                with open(os.path.join(folder, f"{cid}.s{k}.grad.f32"), "wb") as f:
                    f.write(g.numpy().astype("<f4").tobytes())
        with open(os.path.join(folder, f"{cid}.result.json"), "w") as f:
            json.dump(out, f)
    print(f"torch {torch.__version__}: {len(manifest['cases'])} cases")


if __name__ == "__main__":
    main(sys.argv[1])
