"""MRI-GAN networks and losses: pix2pix U-Net generator, PatchGAN discriminator, weight init.
Layer layout and parameter names match the original checkpoints (so the original's released weights load strictly)."""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import Tensor, nn

__all__ = [
    "EncoderBlock",
    "DecoderBlock",
    "Generator",
    "Discriminator",
    "init_weights",
    "structural_similarity",
    "ssim_loss",
    "MRIGANLoss",
]

INIT_STD = 0.02


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """The only normalisation used: parameter-free and stateless, so it adds no state_dict keys
    and behaves identically in train and eval mode (as in the original checkpoints)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class EncoderBlock(nn.Module):
    """One U-Net down-sampling step: (B, C_in, H, W) -> (B, C_out, H/2, W/2).

        x -> Conv4x4 s2 p1 (no bias) -> [InstanceNorm] -> LeakyReLU(0.2) -> [Dropout] -> y

    The conv sits at `model.0`, the only parameter key (`model.0.weight`).
    """

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        layers = [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)]
        if normalize:
            layers.append(instance_norm(out_channels))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class DecoderBlock(nn.Module):
    """One U-Net up-sampling step with its skip connection:
    (B, C_in, H, W), skip (B, C_skip, 2H, 2W) -> (B, C_out + C_skip, 2H, 2W).

        x -> ConvT4x4 s2 p1 (no bias) -> InstanceNorm -> ReLU -> [Dropout] -> y
                                                                   cat([y, skip], dim=1)

    The order [own output, skip] matters for checkpoint compatibility.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        layers = [
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            instance_norm(out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([self.model(x), skip], dim=1)


class Generator(nn.Module):
    """pix2pix U-Net mapping a face to its MRI: (B, 3, 256, 256) in [-1, 1] -> (B, 3, 256, 256) in
    [-1, 1]. The input side must be 256 (eight halvings down to 1x1). Widths at ngf=64 in brackets.

        face -> down1 (64,128^2) ----------------------------------------------+ skip
                 down2 (128,64^2) -------------------------------------+       |
                  down3 (256,32^2) ----------------------------+       |       |
                   down4..down7 (512, 16^2..2^2) -----+        |       |       |
                    down8 (512,1^2)                   |        |       |       |
                     up1..up4 -> (1024, 2^2..16^2) <--+        |       |       |
                      up5 -> (512,32^2) <----------------------+       |       |
                       up6 -> (256,64^2) <-----------------------------+       |
                        up7 -> (128,128^2) <-----------------------------------+
                         final: Upsample x2 -> ZeroPad(l1,t1) -> Conv4x4 p1 -> tanh -> (3,256^2)

    Norm on down2..down7 only; dropout 0.5 on down4..down8 and up1..up4 (active in train mode only;
    call .eval() for deterministic MRIs). Default width: 54,404,099 parameters.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64):
        super().__init__()
        w1, w2, w4, w8 = ngf, 2 * ngf, 4 * ngf, 8 * ngf
        self.down1 = EncoderBlock(in_channels, w1, normalize=False)
        self.down2 = EncoderBlock(w1, w2)
        self.down3 = EncoderBlock(w2, w4)
        self.down4 = EncoderBlock(w4, w8, dropout=0.5)
        self.down5 = EncoderBlock(w8, w8, dropout=0.5)
        self.down6 = EncoderBlock(w8, w8, dropout=0.5)
        self.down7 = EncoderBlock(w8, w8, dropout=0.5)
        self.down8 = EncoderBlock(w8, w8, normalize=False, dropout=0.5)

        # Each decoder input is the previous decoder output concatenated with its skip.
        self.up1 = DecoderBlock(w8, w8, dropout=0.5)
        self.up2 = DecoderBlock(2 * w8, w8, dropout=0.5)
        self.up3 = DecoderBlock(2 * w8, w8, dropout=0.5)
        self.up4 = DecoderBlock(2 * w8, w8, dropout=0.5)
        self.up5 = DecoderBlock(2 * w8, w4)
        self.up6 = DecoderBlock(2 * w4, w2)
        self.up7 = DecoderBlock(2 * w2, w1)

        # Upsample + asymmetric pad + 4x4 conv with padding 1 gives exactly 2x the up7 size.
        self.final = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(2 * w1, out_channels, 4, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        d5 = self.down5(d4)
        d6 = self.down6(d5)
        d7 = self.down7(d6)
        d8 = self.down8(d7)
        u1 = self.up1(d8, d7)
        u2 = self.up2(u1, d6)
        u3 = self.up3(u2, d5)
        u4 = self.up4(u3, d4)
        u5 = self.up5(u4, d3)
        u6 = self.up6(u5, d2)
        u7 = self.up7(u6, d1)
        return self.final(u7)


class Discriminator(nn.Module):
    """PatchGAN scoring (MRI, face) pairs: img_a, img_b (B, C, H, W) -> raw scores
    (B, 1, H/16, W/16), i.e. (B, 1, 16, 16) for 256x256 inputs; no sigmoid. Called as D(mri, face).

        cat([img_a, img_b], dim=1) (2C ch)
          -> Conv s2 (ndf)  -> LReLU                      model.0, 1
          -> Conv s2 (2ndf) -> IN -> LReLU                model.2, 3, 4
          -> Conv s2 (4ndf) -> IN -> LReLU                model.5, 6, 7
          -> Conv s2 (8ndf) -> IN -> LReLU                model.8, 9, 10
          -> ZeroPad(l1,t1) -> Conv s1 p1 (1, no bias)    model.11, 12

    All convs are 4x4; the stride-2 ones have padding 1 and a bias. `in_channels` is the number of
    channels of one image. Default width: 2,767,808 parameters.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64):
        super().__init__()

        def down(cin: int, cout: int, normalize: bool):
            layers = [nn.Conv2d(cin, cout, 4, stride=2, padding=1)]
            if normalize:
                layers.append(instance_norm(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *down(2 * in_channels, ndf, normalize=False),
            *down(ndf, 2 * ndf, normalize=True),
            *down(2 * ndf, 4 * ndf, normalize=True),
            *down(4 * ndf, 8 * ndf, normalize=True),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(8 * ndf, 1, 4, padding=1, bias=False),
        )

    def forward(self, img_a: Tensor, img_b: Tensor) -> Tensor:
        return self.model(torch.cat([img_a, img_b], dim=1))


def init_weights(module: nn.Module) -> None:
    """Draw conv and transposed-conv weights from Normal(0, 0.02): `model.apply(init_weights)`.

    Biases keep PyTorch's default uniform init, as in the original.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)


def structural_similarity(fake: Tensor, real: Tensor, per_image: bool = False) -> Tensor:
    """SSIM of images (B, C, H, W) in [-1, 1], H and W >= 11: a scalar over the batch, or one value per image
    (B,) with per_image. The images are mapped to [0, 255] (data range 255) and compared with an 11x11 Gaussian
    window (sigma 1.5, valid convolution), K = (0.01, 0.03), per-channel means clipped at 0, averaged over
    channels (and the batch)."""
    return ssim((fake + 1) / 2 * 255, (real + 1) / 2 * 255, data_range=255, size_average=not per_image,
                win_size=11, win_sigma=1.5, K=(0.01, 0.03), nonnegative_ssim=True)


def ssim_loss(fake: Tensor, real: Tensor, eps: float = 1e-8) -> Tensor:
    """sqrt(1 - SSIM + eps) for images (B, C, H, W) in [-1, 1] (structural_similarity); returns a scalar.
    eps keeps the gradient finite at SSIM = 1; the clamp guards against rounding above 1.
    """
    similarity = structural_similarity(fake, real)
    return torch.sqrt(torch.clamp(1 - similarity, min=0) + eps)


class MRIGANLoss:
    """The MRI-GAN objectives (LSGAN + pixel MSE + SSIM), on discriminator patch scores.

        generator:     gan   = MSE(D(G(A), A), 1)
                       pixel = MSE(G(A), B)                  both in [-1, 1]
                       ssim  = sqrt(1 - SSIM(G(A), B) + eps)
                       total = gan + lambda_pixel * (tau * pixel + (1 - tau) * ssim)
        discriminator: total = 0.5 * (MSE(D(B, A), 1) + MSE(D(G(A).detach(), A), 0))

    Patch targets take the shape of the scores, (B, 1, 16, 16) for 256x256 images. The caller runs
    D and must detach G(A) before scoring it for the discriminator loss.
    """

    def __init__(self, lambda_pixel: float = 100.0, tau: float = 0.3, eps: float = 1e-8):
        self.lambda_pixel = lambda_pixel
        self.tau = tau
        self.eps = eps

    def generator_loss(self, pred_fake: Tensor, fake_mri: Tensor,
                       real_mri: Tensor) -> Dict[str, Tensor]:
        """pred_fake = D(G(A), A); fake_mri = G(A); real_mri = B. Returns scalars
        {total, gan, pixel, ssim}."""
        gan = F.mse_loss(pred_fake, torch.ones_like(pred_fake))
        pixel = F.mse_loss(fake_mri, real_mri)
        ssim_term = ssim_loss(fake_mri, real_mri, eps=self.eps)
        total = gan + self.lambda_pixel * (self.tau * pixel + (1 - self.tau) * ssim_term)
        return {"total": total, "gan": gan, "pixel": pixel, "ssim": ssim_term}

    def discriminator_loss(self, pred_real: Tensor,
                           pred_fake: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """pred_real = D(B, A); pred_fake = D(G(A).detach(), A). Returns scalars
        (total, real, fake)."""
        real = F.mse_loss(pred_real, torch.ones_like(pred_real))
        fake = F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
        return 0.5 * (real + fake), real, fake
