"""Early fusion's camera network: per-class scores of the images, read at the painted points.

`PaintScorer` runs a small image encoder (the camera branch's `ImageEncoder`) and a 1x1 classifier
over every camera image, giving logits of the detection classes and background at the encoder's
stride, and reads them bilinearly at each painted point's pixel (the lookup columns `collate`
writes, `fusion.paint`). The softmax scores of the classes replace the lookup columns in the
point features the lidar encoder sees; a point no camera saw gets zeros. Training supervises the
logits at the points with the class of the box each point lies in (`fusion.losses.paint_loss`),
so the scores are the camera's per-class belief at that point, as PointPainting's segmentation
scores are.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.camera import ImageEncoder
from avfusion.fusion.config import PAINT_CHANNELS, CameraConfig

_PAINTED = 5 + PAINT_CHANNELS  # the cloud's columns and the colour paint, before the lookup


class PaintScorer(nn.Module):
    def __init__(self, camera: CameraConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = ImageEncoder(camera.encoder_channels)
        self.classifier = nn.Conv2d(self.encoder.out_channels, num_classes + 1, 1)
        self.stride = camera.feature_stride
        self.num_classes = num_classes

    def forward(
        self, features: torch.Tensor, coords_bij: torch.Tensor, images: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point features with the lookup columns replaced by the scores, and the logits there.

        Args:
            features: `(V, P, 5 + PAINT_CHANNELS + PAINT_LOOKUP_CHANNELS)` pillar points.
            coords_bij: `(V, 3)` each pillar's sample (and grid cell).
            images: `(B, K, 3, h, w)` network-input images.
            present: `(B, K)` bool: only present cameras are encoded (no point names another).

        Returns:
            `(V, P, 5 + PAINT_CHANNELS + num_classes)` features and `(V, P, num_classes + 1)`
            logits (meaningful where the point was seen).
        """
        cameras = images.shape[1]
        camera, u, v = features[..., _PAINTED], features[..., _PAINTED + 1], features[..., _PAINTED + 2]
        seen = camera >= 0
        chosen = torch.nonzero(present.reshape(-1), as_tuple=False).view(-1)  # (N,) flat b * K + k
        if chosen.numel() == 0:
            scores = features.new_zeros((*features.shape[:2], self.num_classes))
            logits = features.new_zeros((*features.shape[:2], self.num_classes + 1))
            return torch.cat([features[..., :_PAINTED], scores], dim=-1), logits
        logits_map = self.classifier(self.encoder(images.flatten(0, 1)[chosen]))  # (N, C + 1, h', w')
        _, channels, height, width = logits_map.shape
        table = logits_map.permute(0, 2, 3, 1).reshape(-1, channels)
        # Each flat camera's row in `logits_map` (0 for cameras not encoded: no point reads them).
        encoded = torch.zeros(present.numel(), dtype=torch.int64, device=features.device)
        encoded[chosen] = torch.arange(chosen.numel(), device=features.device)
        image = encoded[coords_bij[:, :1] * cameras + camera.clamp(min=0).long()]  # (V, P)
        # Pixel centres: network-input pixel i is at i, feature pixel j at (j + 0.5) * stride - 0.5.
        x = ((u + 0.5) / self.stride - 0.5).clamp(0, width - 1)
        y = ((v + 0.5) / self.stride - 0.5).clamp(0, height - 1)
        x0, y0 = x.floor().long(), y.floor().long()
        x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
        fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
        base = image * (height * width)

        def at(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
            return table[base + row * width + column]  # (V, P, C + 1)

        logits = (at(y0, x0) * (1 - fx) + at(y0, x1) * fx) * (1 - fy) + (at(y1, x0) * (1 - fx) + at(y1, x1) * fx) * fy
        scores = torch.softmax(logits, dim=-1)[..., : self.num_classes] * seen.unsqueeze(-1).to(logits.dtype)
        return torch.cat([features[..., :_PAINTED], scores], dim=-1), logits
