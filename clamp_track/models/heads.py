"""Deconvolution heatmap head (SimpleBaseline / mmpose TopdownHeatmapSimpleHead)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DeconvHead(nn.Module):
    """Deconvolutions (kernel 4, stride 2, no bias, BN, ReLU), then a 1x1 conv to K heatmaps.

    Args:
        in_channels: Input channels (e.g. layer4 + K score-map channels for CLAMP).
        channels: Output channels of each deconv layer; each doubles the resolution.
        out_channels: Heatmaps K.
        init_std: Std of the normal init of the conv weights (mmpose: 0.001); ``None`` keeps
            PyTorch's default init (CLAMP's ``upconv_head`` is built after ``init_weights``).
    """

    def __init__(
        self, in_channels: int, channels, out_channels: int, init_std: float | None = 0.001
    ):
        super().__init__()
        layers = []
        for c in channels:
            layers += [
                nn.ConvTranspose2d(in_channels, c, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            in_channels = c
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        if init_std is not None:
            for m in self.modules():
                if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                    nn.init.normal_(m.weight, std=init_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) -> (B, K, h * 2**n, w * 2**n)."""
        return self.final_layer(self.deconv_layers(x))

    def forward_parts(self, *parts: torch.Tensor) -> torch.Tensor:
        """``forward(torch.cat(parts, dim=1))`` without building the concatenation.

        The first deconvolution is linear in its input channels, so it is the sum of each
        part's deconvolution with its slice of the weights (equal to float rounding). This
        keeps a 2048-channel map apart from a few extra channels: CLAMP's layer4 plus K score
        channels would otherwise make one 2048 + K channel input, copied, at an odd channel
        count, which the CPU convolution library ran about 9 % slower (measured at batch 8).
        """
        first = self.deconv_layers[0] if len(self.deconv_layers) else None
        if not isinstance(first, nn.ConvTranspose2d) or len(parts) == 1:
            return self.forward(torch.cat(parts, dim=1))
        out, start = None, 0
        for part in parts:
            weight = first.weight[start:start + part.shape[1]]
            bias = first.bias if start == 0 else None
            y = F.conv_transpose2d(part, weight, bias, stride=first.stride, padding=first.padding)
            out = y if out is None else out.add_(y)
            start += part.shape[1]
        return self.final_layer(self.deconv_layers[1:](out))
