"""The numeric precision of training steps: which one a trainer uses (the paper's FP32 unless asked), and the
autocast and gradient scaling that apply it."""
from __future__ import annotations

import logging

import torch

from utils.runtime import Precision, choose_precision

log = logging.getLogger(__name__)


def training_precision(cfg, device: torch.device, fp16: bool = False, opt_level: str = "O0") -> Precision:
    """A trainer's precision. runtime.precision (--precision) fp32, bf16 or fp16 is used as given; with 'auto'
    (the default) training reproduces the paper: the original trained with apex, whose opt_level O0 is plain
    FP32 even with fp16: true, so only fp16 with O1/O2/O3 gives mixed precision (runtime 'auto': bf16 on a CPU
    with native bf16, mixed precision on CUDA). The MRI-GAN had no such keys: FP32."""
    requested = cfg["runtime.precision"]
    if requested != "auto":
        return choose_precision(requested, device)
    if fp16 and opt_level != "O0":
        return choose_precision("auto", device)
    choice = Precision("fp32", device.type, f"the paper's training precision (FP32; apex opt_level {opt_level})")
    log.info("training precision %s: %s", choice.name, choice.reason)
    return choice


class MixedPrecision:
    """Autocast and gradient scaling for training steps at a Precision: fp16 gets a gradient scaler, bf16 and
    fp32 need none. One object per trainer; its scaler is saved in the checkpoints."""

    def __init__(self, precision: Precision):
        self.precision = precision
        self.scaler = torch.amp.GradScaler(precision.device_type) if precision.name == "fp16" else None

    def autocast(self):
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per training step, after every optimizer of the step has stepped."""
        if self.scaler is not None:
            self.scaler.update()


def classifier_precision(cfg, device: torch.device) -> MixedPrecision:
    """The classifier's: the original's apex keys decide (fp16: true with opt_level O0 is FP32, as the paper
    trained), unless --precision says otherwise; training and testing use the same."""
    return MixedPrecision(training_precision(cfg, device, cfg["deep_fake.training.model_params.fp16"],
                                             cfg["deep_fake.training.model_params.opt_level"]))
