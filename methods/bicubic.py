"""Bicubic interpolation, MATLAB ``imresize`` convention: the classical reference row."""
from __future__ import annotations

import torch

from bench.adapter import Method, MethodInfo, register_method


@register_method
class Bicubic(Method):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    info = MethodInfo(
        name="bicubic",
        title="Bicubic interpolation (MATLAB imresize)",
        citation="Keys, Cubic convolution interpolation for digital image processing, IEEE TASSP 1981",
        family="classical",
        scales=(2, 3, 4, 8),
        notes=("MATLAB imresize bicubic (a = -0.5); identical to the LR/SR rows of RCAN/EDSR tables.",),
    )

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        from bench.degrade.resize import imresize_torch

        return imresize_torch(lr.to(torch.float32), self.scale).clamp(0, 1)
