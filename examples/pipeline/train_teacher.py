#!/usr/bin/env python3
"""Trains the pipeline's teacher (a YOLO-style anchor detector) in PyTorch and
exports it to ONNX with raw training-mode heads in the nahwc layout
[B, A, H, W, 5+C] (the form YOLOv5's `export.py --train` gives).

    node examples/pipeline/export-data.js teacher /tmp/yd-teacher-set
    /usr/bin/python3 examples/pipeline/train_teacher.py /tmp/yd-teacher-set [--epochs 24]

writes examples/pipeline/teacher.onnx and teacher.json (how it was made).
The target assignment and the loss are the ones examples/pipeline/targets.js
implements for the students' ground-truth arms (same rule, same terms).
"""
import argparse, json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = json.load(open(os.path.join(HERE, 'config.json')))
S, C = CFG['imageSize'], CFG['numClasses']
STRIDES, ANCHORS = CFG['strides'], CFG['anchors']
A = len(ANCHORS[0])
K = 5 + C


def conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Teacher(nn.Module):
    def __init__(self, w=(32, 64, 96, 160)):
        super().__init__()
        self.stem = nn.Sequential(conv(3, w[0], 2), conv(w[0], w[1], 2), conv(w[1], w[1], 1))  # 16x16
        self.p8 = nn.Sequential(conv(w[1], w[2], 2), conv(w[2], w[2], 1), conv(w[2], w[2], 1))  # 8x8
        self.p16 = nn.Sequential(conv(w[2], w[3], 2), conv(w[3], w[3], 1))  # 4x4
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(w[3], w[2], 1))
        self.fuse = conv(2 * w[2], w[2], 1)
        self.h8 = nn.Conv2d(w[2], A * K, 1)
        self.h16 = nn.Conv2d(w[3], A * K, 1)
        for h in (self.h8, self.h16):  # objectness starts low (most cells are background)
            with torch.no_grad():
                h.bias.view(A, K)[:, 4] = -4.0

    def forward(self, x):
        x = self.stem(x)
        p8 = self.p8(x)
        p16 = self.p16(p8)
        p8 = self.fuse(torch.cat([p8, self.up(p16)], 1))
        outs = []
        for h, p in ((self.h8, p8), (self.h16, p16)):
            y = h(p)
            b, _, hh, ww = y.shape
            outs.append(y.view(b, A, K, hh, ww).permute(0, 1, 3, 4, 2).contiguous())  # nahwc
        return outs


def assign(labels):
    """Per scale: list of (b, a, gy, gx, ox, oy, sw, sh, cls). Rule: every
    (scale, anchor) whose size ratio max(w/aw, aw/w, h/ah, ah/h) is below
    anchorThreshold takes the box at the cell of its centre; if none does, the
    one with the smallest ratio; a later box overwrites an earlier one at the
    same place."""
    out = [dict() for _ in STRIDES]
    for b, boxes in enumerate(labels):
        for cls, x1, y1, x2, y2 in boxes:
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            ratios = [[max(w / aw, aw / w, h / ah, ah / h) for aw, ah in ANCHORS[s]] for s in range(len(STRIDES))]
            picks = [(s, a) for s in range(len(STRIDES)) for a in range(A) if ratios[s][a] < CFG['anchorThreshold']]
            if not picks:
                picks = [min(((s, a) for s in range(len(STRIDES)) for a in range(A)), key=lambda p: ratios[p[0]][p[1]])]
            for s, a in picks:
                st = STRIDES[s]
                g = S // st
                gx, gy = min(g - 1, int(cx // st)), min(g - 1, int(cy // st))
                aw, ah = ANCHORS[s][a]
                out[s][(b, a, gy, gx)] = (cx / st - gx, cy / st - gy, math.sqrt(w / aw), math.sqrt(h / ah), int(cls))
    return out


SMOOTH = 0.1  # class label smoothing: targets 1 - SMOOTH/2 and SMOOTH/2 (YOLOv5's smooth_BCE)


def box_iou_cxcywh(a, b):
    """IoU of boxes given as (cx, cy, w, h) along the last axis."""
    a1, a2 = a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2
    b1, b2 = b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    wh = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def yolo_loss(preds, labels):
    """YOLOv5's terms with a squared-error box loss. box: squared error of
    (2 sigma(t) - 0.5) against the centre's offset in its cell and of 2 sigma(t)
    against sqrt(size / anchor), summed over the 4 values, mean over positives;
    obj: BCE, target at positives the IoU (detached, >= 0) of the predicted box
    with its ground truth, 0 elsewhere, mean over cells, per scale; cls: BCE
    against smoothed one-hot targets, mean over positives and classes."""
    targets = assign(labels)
    box = obj = cls = preds[0].new_zeros(())
    npos = 0
    for s, (p, t) in enumerate(zip(preds, targets)):
        tobj = torch.zeros_like(p[..., 4])
        if t:
            idx = torch.tensor(list(t.keys()), dtype=torch.long)
            val = torch.tensor([v[:4] for v in t.values()], dtype=p.dtype)
            tc = torch.tensor([v[4] for v in t.values()], dtype=torch.long)
            ps = p[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]
            pxy = 2 * torch.sigmoid(ps[:, 0:2]) - 0.5
            pwh = 2 * torch.sigmoid(ps[:, 2:4])
            box = box + ((pxy - val[:, 0:2]) ** 2).sum() + ((pwh - val[:, 2:4]) ** 2).sum()
            onehot = F.one_hot(tc, C).to(p.dtype) * (1 - SMOOTH) + SMOOTH / 2
            cls = cls + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot, reduction='sum')
            anchor = torch.tensor(ANCHORS[s], dtype=p.dtype)[idx[:, 1]] / STRIDES[s]  # in cells
            with torch.no_grad():
                iou = box_iou_cxcywh(torch.cat([pxy, pwh ** 2 * anchor], 1), torch.cat([val[:, 0:2], val[:, 2:4] ** 2 * anchor], 1))
            tobj[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = iou.clamp(min=0).to(p.dtype)
            npos += len(t)
        obj = obj + F.binary_cross_entropy_with_logits(p[..., 4], tobj)
    npos = max(npos, 1)
    return box / npos + 10.0 * obj + cls / (npos * C), (box / npos, obj, cls / (npos * C))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('data', help='prefix written by export-data.js (the teacher set)')
    ap.add_argument('--epochs', type=int, default=24)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--limit', type=int, default=0)
    ap.add_argument('--out', default=os.path.join(HERE, 'teacher.onnx'))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    meta = json.load(open(args.data + '.json'))
    n = meta['n'] if not args.limit else min(args.limit, meta['n'])
    raw = torch.frombuffer(bytearray(open(args.data + '.u8', 'rb').read()), dtype=torch.uint8)
    images = raw.view(meta['n'], S, S, 3)[:n].permute(0, 3, 1, 2).float().div(255.0)
    labels = meta['labels'][:n]
    model = Teacher()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * (n // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n)
        tot = [0.0, 0.0, 0.0]
        for i in range(n // args.batch):
            ix = perm[i * args.batch:(i + 1) * args.batch]
            x = images[ix]
            if torch.rand(()) < 0.5:  # horizontal flip (boxes flipped with it)
                x = x.flip(3)
                lab = [[[c, S - x2, y1, S - x1, y2] for c, x1, y1, x2, y2 in labels[j]] for j in ix.tolist()]
            else:
                lab = [labels[j] for j in ix.tolist()]
            loss, parts = yolo_loss(model(x), lab)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            for k in range(3):
                tot[k] += parts[k].item()
        nb = n // args.batch
        print(f'epoch {epoch + 1}/{args.epochs}  box {tot[0] / nb:.4f}  obj {tot[1] / nb:.4f}  cls {tot[2] / nb:.4f}  '
              f'({time.time() - t0:.0f} s)', flush=True)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, S, S), args.out, input_names=['images'], output_names=['p8', 'p16'],
                      dynamic_axes={'images': {0: 'batch'}, 'p8': {0: 'batch'}, 'p16': {0: 'batch'}}, opset_version=13)
    info = {
        'made_by': 'examples/pipeline/train_teacher.py',
        'command': 'node examples/pipeline/export-data.js teacher /tmp/yd-teacher-set && /usr/bin/python3 '
                   'examples/pipeline/train_teacher.py /tmp/yd-teacher-set' + (f' --epochs {args.epochs}' if args.epochs != 24 else ''),
        'data': f"set 'teacher' of examples/pipeline/config.json (seed {CFG['sets']['teacher']['seed']}, {n} images), written by export-data.js",
        'torch': torch.__version__, 'images': n, 'epochs': args.epochs,
        'batch': args.batch, 'lr': args.lr, 'seconds': round(time.time() - t0), 'final_loss_parts': [t / nb for t in tot],
        'parameters': sum(p.numel() for p in model.parameters()),
        'input': 'images: float32 [B, 3, 64, 64], RGB in [0, 1]',
        'outputs': {'p8': f'[B, {A}, 8, 8, {K}] (nahwc, stride 8)', 'p16': f'[B, {A}, 4, 4, {K}] (nahwc, stride 16)'},
    }
    json.dump(info, open(os.path.splitext(args.out)[0] + '.json', 'w'), indent=2)
    print('wrote', args.out, f'({os.path.getsize(args.out) / 1e6:.1f} MB)')


if __name__ == '__main__':
    main()
