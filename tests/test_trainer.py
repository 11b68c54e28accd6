"""The Trainer's resume and stop logic on a tiny task (a linear model on an in-memory data set): an exact resume
from a mid-epoch checkpoint, a signal that saves at the next step, a non-finite loss that saves nothing."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from utils.checkpoint import read_checkpoint
from utils.errors import Interrupted, NonFiniteLoss
from utils.names import PERIODIC
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader
from utils.train.trainer import Trainer

EPOCHS, ITEMS, BATCH, EVERY = 2, 8, 2, 3  # 4 batches an epoch; a periodic checkpoint every 3 steps
STEP_COLUMNS = ["epoch", "batch", "step", "loss"]


class Points(Dataset):
    """ITEMS fixed points x with targets y = x . (1, -2) + 0.5; each item also carries its index."""

    def __init__(self):
        self.x = torch.linspace(-1, 1, ITEMS * 2).reshape(ITEMS, 2)
        self.y = self.x @ torch.tensor([1.0, -2.0]) + 0.5

    def __len__(self):
        return ITEMS

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index], "index": index}


class LinearTask:
    """A shuffled, seeded loader per epoch and one SGD step per batch; `seen` records each step's item indices."""

    def __init__(self, run_dir, nan_at_step: int | None = None, signal_at_step: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.ctx, self.data, self.seen = DistContext(), Points(), []
        self.nan_at_step, self.signal_at_step = nan_at_step, signal_at_step
        self.trainer = Trainer(self.ctx, run_dir, {"model_state_dict": self.model},
                               {"optimizer_state_dict": self.optimizer}, config={"runtime": {"loader_workers": 0}},
                               checkpoint_every=EVERY, loss_keys=("loss",), step_log=("steps.csv", STEP_COLUMNS),
                               checkpoint_entries=lambda: {"seen_so_far": len(self.seen)})

    def epoch_loader(self, epoch, skip_batches):
        return make_loader(self.data, BATCH, self.ctx, seed=7, epoch=epoch, shuffle=True, skip_batches=skip_batches)

    def train_step(self, batch):
        self.seen.append(batch["index"].tolist())
        self.optimizer.zero_grad()
        loss = ((self.model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        loss.backward()
        self.optimizer.step()
        step = self.trainer.position.step + 1
        if step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the Trainer's handler: stop at this step's end
        return {"loss": torch.tensor(float("nan")) if step == self.nan_at_step else loss.detach()}

    def run(self, history_dir=None, max_steps=None):
        self.trainer.open_logs(history_dir)
        try:
            return self.trainer.run(EPOCHS, self.epoch_loader, self.train_step, lambda epoch: None, max_steps)
        finally:
            self.trainer.close_logs()


def weights(task: LinearTask) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in task.model.parameters()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    task = LinearTask(tmp_path_factory.mktemp("uninterrupted"))
    assert task.run() is True
    return task


def test_a_resume_from_a_mid_epoch_checkpoint_skips_the_finished_batches_and_ends_with_the_same_weights(
        uninterrupted, tmp_path):
    first = LinearTask(tmp_path / "first")
    assert first.run(max_steps=7) is False  # stopped as if interrupted; the last checkpoint is step 6's
    checkpoint = read_checkpoint(tmp_path / "first" / PERIODIC)
    assert (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_step"]) == (1, 2, 6)
    assert checkpoint["seen_so_far"] == 6  # the constructor's checkpoint entries are saved with it

    second = LinearTask(tmp_path / "first")
    second.trainer.restore(checkpoint, tmp_path / "first" / PERIODIC)
    assert second.run() is True
    assert second.seen == uninterrupted.seen[6:]  # the finished batches are not trained again
    for resumed, straight in zip(weights(second), weights(uninterrupted)):
        assert torch.equal(resumed, straight)
    steps = (tmp_path / "first" / "steps.csv").read_text().splitlines()
    assert [int(line.split(",")[2]) for line in steps[1:]] == list(range(1, EPOCHS * ITEMS // BATCH + 1))
    assert second.trainer.resume_record["exact"]


def test_a_signal_saves_at_the_next_step_and_stops_the_run(tmp_path):
    task = LinearTask(tmp_path, signal_at_step=2)
    with pytest.raises(Interrupted) as stopped:
        task.run()
    assert stopped.value.signum == signal.SIGTERM and "at step 2" in str(stopped.value)
    assert len(task.seen) == 2  # no step after the one the signal arrived in
    checkpoint = read_checkpoint(tmp_path / PERIODIC)
    assert (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_step"]) == (0, 2, 2)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "stopped by SIGTERM"


def test_a_non_finite_loss_stops_without_overwriting_the_good_checkpoint(tmp_path):
    task = LinearTask(tmp_path, nan_at_step=EVERY * 2)  # a step that would save a periodic checkpoint
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 6 .*the last good checkpoint is .* \\(step 4\\)"):
        task.run()
    assert len(task.seen) == 6
    assert read_checkpoint(tmp_path / PERIODIC)["global_step"] == 4  # the end of epoch 1, not the bad step
    assert "stopped: loss is nan at step 6" in json.loads((tmp_path / "summary.json").read_text())["status"]
