"""Baseline for bench_extract: decode with PIL and run torchvision's SSD backbone, nothing else."""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import ssd300_vgg16

folder, batch = Path(sys.argv[1]), int(sys.argv[2])
files = sorted(p for p in folder.rglob("*.png"))
torch.manual_seed(0)
model = ssd300_vgg16(weights=None, weights_backbone=None).eval()
fwd = 0.0
with torch.inference_mode():
    for i in range(0, len(files), batch):
        imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
                for f in files[i:i + batch]]
        t = time.perf_counter()
        out = model.backbone(model.transform(imgs)[0].tensors)
        fwd += time.perf_counter() - t
print(f"forward_s={fwd:.3f}")
