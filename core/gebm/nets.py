"""Image base and energy networks of the GEBM CIFAR-10 setting (Arbel et al. 2021, Section 6.1, Appendix).

- `DCGANGenerator` (Radford et al. 2016 as used by SNGAN, Miyato et al. 2018): z (N, d) -> linear to
  4x4x(8w) -> three stride-2 transposed convs with batch norm + ReLU -> 3x3 conv -> tanh, (N, 3, 32, 32).
- `ConvEnergy`: the SNGAN "standard CNN" critic (3x3 / 4x4-stride-2 conv pairs 64-128-256, 3x3 conv 512,
  leaky ReLU 0.1, linear to one scalar). `spectral=True` is the SN-ConvNet (spectral norm on every layer),
  `spectral=False` the DCGAN critic. The scalar output is the energy E(x): low on data. As in the official
  critic, the output is truncated below, E = relu(E + floor) - floor (official max=10), so exp(-E) <= e^floor
  and the critic cannot drive the data energies to -infinity.
- `ResNetGenerator` / `ResNetEnergy`: the official `resnet-sn` networks of configs/training.yaml (SNGAN's CIFAR
  ResNets: three up-sampling residual blocks; four spectral-norm residual critic blocks, mean pool, linear).
- `MLPEnergy`: a small energy for tabular data when the energy is not a flow.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        c = 8 * width
        self.fc = nn.Linear(latent_dim, 4 * 4 * c)
        self.net = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(),
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU(),        # 8x8
            nn.ConvTranspose2d(c // 2, c // 4, 4, 2, 1), nn.BatchNorm2d(c // 4), nn.ReLU(),   # 16x16
            nn.ConvTranspose2d(c // 4, c // 8, 4, 2, 1), nn.BatchNorm2d(c // 8), nn.ReLU(),   # 32x32
            nn.Conv2d(c // 8, 3, 3, 1, 1), nn.Tanh(),
        )
        self._c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], self._c, 4, 4))  # (N, 3, 32, 32)


class ConvEnergy(nn.Module):
    def __init__(self, width: int = 64, spectral: bool = True, floor: float = 10.0):
        super().__init__()
        self.floor = floor
        sn = spectral_norm if spectral else (lambda m: m)
        w = width
        layers = []
        chans = [(3, w, 3, 1), (w, w, 4, 2), (w, 2 * w, 3, 1), (2 * w, 2 * w, 4, 2),
                 (2 * w, 4 * w, 3, 1), (4 * w, 4 * w, 4, 2), (4 * w, 8 * w, 3, 1)]
        for cin, cout, k, s in chans:
            layers += [sn(nn.Conv2d(cin, cout, k, s, 1)), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)       # (N, 8w, 4, 4)
        self.out = sn(nn.Linear(4 * 4 * 8 * w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.out(self.features(x).flatten(1)).squeeze(1)  # (N,)
        return torch.relu(e + self.floor) - self.floor if self.floor > 0 else e


def _xavier(module: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain)
    return module


class ResBlockUp(nn.Module):
    """SNGAN ResNet generator block: BN, ReLU, x2 upsample, 3x3 conv, BN, ReLU, 3x3 conv; upsampled identity bypass."""

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Upsample(scale_factor=2),
                                  _xavier(nn.Conv2d(channels, channels, 3, 1, 1)), nn.BatchNorm2d(channels), nn.ReLU(),
                                  _xavier(nn.Conv2d(channels, channels, 3, 1, 1)))
        self.bypass = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.bypass(x)


class ResNetGenerator(nn.Module):
    """The official `resnet-sn` generator (configs/training.yaml; SNGAN's CIFAR ResNet): z -> linear to 4x4xw ->
    three up-blocks (8, 16, 32) -> BN, ReLU, 3x3 conv to RGB, tanh. Official width 128."""

    def __init__(self, latent_dim: int = 100, width: int = 128):
        super().__init__()
        self.latent_dim, self._c = latent_dim, width
        self.fc = _xavier(nn.Linear(latent_dim, 4 * 4 * width))
        self.net = nn.Sequential(ResBlockUp(width), ResBlockUp(width), ResBlockUp(width), nn.BatchNorm2d(width),
                                 nn.ReLU(), _xavier(nn.Conv2d(width, 3, 3, 1, 1)), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], self._c, 4, 4))  # (N, 3, 32, 32)


class ResBlockDown(nn.Module):
    """SNGAN ResNet critic block, spectral norm on every conv, no batch norm (official bn: False). `first`: no ReLU
    before the first conv and an avg-pool-then-1x1-conv bypass; else ReLU, conv, ReLU, conv (+ avg pool when
    `down`), with a 1x1-conv-then-pool bypass when `down` and the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False):
        super().__init__()
        conv1 = spectral_norm(_xavier(nn.Conv2d(c_in, c_out, 3, 1, 1)))
        conv2 = spectral_norm(_xavier(nn.Conv2d(c_out, c_out, 3, 1, 1)))
        layers = ([] if first else [nn.ReLU()]) + [conv1, nn.ReLU(), conv2] + ([nn.AvgPool2d(2)] if down else [])
        self.main = nn.Sequential(*layers)
        if first:
            self.bypass = nn.Sequential(nn.AvgPool2d(2), spectral_norm(_xavier(nn.Conv2d(c_in, c_out, 1), 2 ** 0.5)))
        elif down:
            self.bypass = nn.Sequential(spectral_norm(_xavier(nn.Conv2d(c_in, c_out, 1), 2 ** 0.5)), nn.AvgPool2d(2))
        else:
            self.bypass = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.bypass(x)


class ResNetEnergy(nn.Module):
    """The official `resnet-sn` critic: blocks 3->w (32->16), w (16->8), w, w; ReLU, 8x8 average pool, spectral-norm
    linear to one scalar, truncated below at -floor as ConvEnergy. Official width 128."""

    def __init__(self, width: int = 128, floor: float = 10.0):
        super().__init__()
        self.floor = floor
        self.features = nn.Sequential(ResBlockDown(3, width, down=True, first=True), ResBlockDown(width, width, True),
                                      ResBlockDown(width, width, False), ResBlockDown(width, width, False),
                                      nn.ReLU(), nn.AvgPool2d(8), nn.Flatten())  # (N, w)
        self.out = spectral_norm(_xavier(nn.Linear(width, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.out(self.features(x)).squeeze(1)  # (N,)
        return torch.relu(e + self.floor) - self.floor if self.floor > 0 else e


class MLPEnergy(nn.Module):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class LatentGaussian(nn.Module):
    """The latent prior N(0, I_d) as a module so image and flow bases share `sample`."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def sample(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator).to(device)


class ImageBase(nn.Module):
    """B = G#N(0, I): `forward(z)` is G(z); no tractable density."""

    def __init__(self, latent_dim: int, width: int, generator: str = "dcgan"):
        super().__init__()
        self.prior = LatentGaussian(latent_dim)
        self.g = (ResNetGenerator if generator == "resnet-sn" else DCGANGenerator)(latent_dim, width)

    @property
    def latent_dim(self) -> int:
        return self.prior.dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z)

    def sample(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        return self.prior.sample(n, generator, device)
