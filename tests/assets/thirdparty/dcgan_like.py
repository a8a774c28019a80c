"""A DCGAN generator and discriminator with the interface of pytorch/examples ``dcgan/main.py``, written from scratch
for gradscope's tests (the original builds its models after ``argparse`` at module level, so it cannot be imported
as is; this file keeps only the models, in the original's style).

What it reproduces:

* sizes as module-level constants (``nz``, ``ngf``, ``ndf``, ``nc``) and classes whose constructor takes only
  ``ngpu`` (required);
* ``Generator``: the first layer is ``ConvTranspose2d(nz=100, ngf * 8, 4, 1, 0)`` and expects a latent of shape
  ``(B, 100, 1, 1)``; each later layer doubles the spatial size, so the output is ``(B, 3, 64, 64)``. Fed a
  ``(B, 100, 32, 32)`` "image" instead, it still runs — and produces ``(B, 3, 560, 560)``, about 300× the work;
* ``Discriminator``: ``(B, 3, 64, 64)`` images in, one probability per image out (``(B,)``); its last
  ``Conv2d(ndf * 8, 1, 4, 1, 0)`` needs a 4×4 map, so 32×32 inputs fail;
* ``weights_init(m)``, the N(0, 0.02) initialisation the training script applies with ``model.apply`` (nothing
  here calls it, as in the original's class definitions).
"""

from __future__ import annotations

import torch
from torch import nn

nz = 100  # length of the latent vector z
ngf = 64  # generator feature maps
ndf = 64  # discriminator feature maps
nc = 3  # image channels


def weights_init(m: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02) and zero shifts."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _up(cin: int, cout: int) -> list[nn.Module]:
    """Double the spatial size: 4×4 transposed conv, stride 2, then batch norm and ReLU."""
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
    """Halve the spatial size: 4×4 conv, stride 2, then (optionally) batch norm and LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Generator(nn.Module):
    """z ``(B, nz, 1, 1)`` → 4×4 → 8×8 → 16×16 → 32×32 → image ``(B, nc, 64, 64)`` in [-1, 1]."""

    def __init__(self, ngpu: int) -> None:
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 1×1 latent → 4×4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            *_up(ngf * 8, ngf * 4),
            *_up(ngf * 4, ngf * 2),
            *_up(ngf * 2, ngf),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.is_cuda and self.ngpu > 1:
            return nn.parallel.data_parallel(self.main, input, list(range(self.ngpu)))
        image: torch.Tensor = self.main(input)
        return image


class Discriminator(nn.Module):
    """Image ``(B, nc, 64, 64)`` → 32×32 → 16×16 → 8×8 → 4×4 → one probability per image, shape ``(B,)``."""

    def __init__(self, ngpu: int) -> None:
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            *_down(nc, ndf, norm=False),
            *_down(ndf, ndf * 2),
            *_down(ndf * 2, ndf * 4),
            *_down(ndf * 4, ndf * 8),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # 4×4 → 1×1
            nn.Sigmoid(),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, list(range(self.ngpu)))
        else:
            output = self.main(input)
        return output.view(-1, 1).squeeze(1)
