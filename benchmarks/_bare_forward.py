"""Baseline for bench_extract: decode with PIL and run the bare library network, nothing else.

    _bare_forward.py FOLDER BATCH [ssd300_vgg16|efficientnet_lite0] [cpu|cuda] [default|channels_last]

ssd300_vgg16: torchvision's SSD backbone on ``model.transform``; efficientnet_lite0: timm's
``tf_efficientnet_lite0`` with ``features_only`` (stride 4-32 stages) on timm's own transform at
320 px. Seeded random weights: the same arithmetic as trained ones. PNG and JPEG files, decoded,
resized and run one batch after another in one thread (what a plain script does). The last
argument runs the network in channels-last memory layout, as fakesegment_nb's backbones do
(oneDNN's convolutions are faster so): the stricter baseline.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

folder, batch = Path(sys.argv[1]), int(sys.argv[2])
model_name = sys.argv[3] if len(sys.argv) > 3 else "ssd300_vgg16"
device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
layout = torch.channels_last if len(sys.argv) > 5 and sys.argv[5] == "channels_last" else torch.contiguous_format


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
torch.manual_seed(0)
fwd = 0.0
if model_name == "ssd300_vgg16":
    from torchvision.models.detection import ssd300_vgg16

    model = ssd300_vgg16(weights=None, weights_backbone=None).eval().to(device, memory_format=layout)
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1).to(device).float() / 255
                    for f in files[i:i + batch]]
            t = time.perf_counter()
            x = model.transform(imgs)[0].tensors.contiguous(memory_format=layout)
            out = [v.cpu() for v in model.backbone(x).values()]
            fwd += time.perf_counter() - t
else:
    import timm
    import timm.data

    model = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    model = model.to(device, memory_format=layout)
    cfg = timm.data.resolve_data_config({}, model=model)
    cfg.update(input_size=(3, 320, 320), crop_pct=1.0, crop_mode="squash")
    transform = timm.data.create_transform(**cfg)
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[i:i + batch]]).to(device)
            t = time.perf_counter()
            out = [v.cpu() for v in model(x.contiguous(memory_format=layout))]  # features back on the CPU, as extraction needs them
            fwd += time.perf_counter() - t
print(f"forward_s={fwd:.3f}")
