"""The training engine: schedule, a tiny run, resume equality, the kNN monitor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_scenes
from oacl.augment.views import AugmentSettings, two_view_pipeline
from oacl.data.datasets import make_sample
from oacl.models.byol import BYOL
from oacl.models.moco import MoCo
from oacl.schedules import lr_at
from oacl.train.engine import EpochRecord, IndexedViews, TrainResult, TrainSettings, item_seed, train
from oacl.train.monitor import KnnMonitor, KnnProbe, knn_predict, knn_top1


class Items(torch.utils.data.Dataset):
    """n item dicts of 32×32 synthetic scenes (conftest), in memory."""

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        s = make_scenes(n=n, size=32, seed=seed)
        self.items = [
            make_sample(s.images[i], int(s.labels[i]), s.boxes_of(i), s.box_labels_of(i), s.masks[i], s.ids[i])
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def tiny_moco() -> MoCo:
    torch.manual_seed(0)
    return MoCo("resnet18", "standard", proj_hidden=32, proj_dim=16, queue_size=8, momentum=0.9)


VIEWS = two_view_pipeline(AugmentSettings(size=32))
SETTINGS = TrainSettings(epochs=2, batch_size=8, base_lr=0.3, seed=1)


def test_item_views_seeded_on_the_cpu_generator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An item's views are a function of (seed, epoch, index) alone; the global CPU RNG is left as it
    was, and no CUDA generator is seeded (torch.manual_seed would queue a stack trace per item)."""

    def refuse(*args, **kwargs):
        raise AssertionError("per-item seeding touched the CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    data = IndexedViews(Items(4), VIEWS.per_item, seed=3)
    torch.default_generator.manual_seed(123)
    before = torch.get_rng_state()
    i, (a1, a2) = data[2]
    assert i == 2 and torch.equal(torch.get_rng_state(), before)
    torch.default_generator.manual_seed(999)  # another global state: the same views
    _, (b1, b2) = data[2]
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    with torch.random.fork_rng(devices=[]):  # what the item's seed gives when drawn by hand
        torch.default_generator.manual_seed(item_seed(3, 0, 2))
        c1, c2 = VIEWS.per_item(data.dataset[2])
    assert torch.equal(a1, c1) and torch.equal(a2, c2)
    data.epoch = 1
    _, (d1, _) = data[2]
    assert not torch.equal(a1, d1)


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"batch_size": 1}, {"base_lr": 0.0}, {"warmup_epochs": 3}])
def test_bad_settings(kw) -> None:
    with pytest.raises(ValueError, match="TrainSettings"):
        TrainSettings(**{"epochs": 2, "batch_size": 8, "base_lr": 0.1, **kw})


def test_tiny_run_logs_and_checkpoints(tmp_path: Path) -> None:
    seen: list[EpochRecord] = []
    result = train(
        tiny_moco(),
        Items(),
        VIEWS,
        SETTINGS,
        checkpoint_path=tmp_path / "last.pt",
        on_epoch_end=lambda r, res: seen.append(r),
        progress=False,
    )
    assert [r.epoch for r in seen] == [1, 2]
    assert result.steps_per_epoch == 2 and len(result.step_losses) == 4
    assert result.effective_lr == pytest.approx(0.3 * 8 / 256)
    assert seen[0].lr > seen[1].lr  # cosine decay
    assert result.step_lrs == pytest.approx([lr_at(i, 4, 0.3 * 8 / 256) for i in range(4)])
    assert all(torch.isfinite(torch.tensor(result.step_losses)))
    assert set(seen[0].stats) == {"inst_acc", "pair_cos"}
    assert (tmp_path / "last.pt").exists()
    assert result.model.queue_index.min() >= 0  # 4 steps x 8 keys filled the 8 slots with real keys


def _kill_after_first_epoch(record: EpochRecord, result: TrainResult) -> None:
    if record.epoch == 1:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "make",
    [tiny_moco, lambda: (torch.manual_seed(0), BYOL("resnet18", proj_hidden=32, proj_dim=16, pred_hidden=32))[1]],
)
def test_resume_ends_with_the_same_weights(tmp_path: Path, make) -> None:
    full = train(make(), Items(), VIEWS, SETTINGS, checkpoint_path=tmp_path / "a.pt", resume_key="k", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(
            make(),
            Items(),
            VIEWS,
            SETTINGS,
            checkpoint_path=tmp_path / "b.pt",
            resume_key="k",
            on_epoch_end=_kill_after_first_epoch,
            progress=False,
        )
    resumed = train(make(), Items(), VIEWS, SETTINGS, checkpoint_path=tmp_path / "b.pt", resume_key="k", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert resumed.step_losses == full.step_losses
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_key_mismatch_starts_fresh(tmp_path: Path) -> None:
    one = TrainSettings(epochs=1, batch_size=8, base_lr=0.3)
    train(tiny_moco(), Items(), VIEWS, one, checkpoint_path=tmp_path / "c.pt", resume_key="old", progress=False)
    again = train(tiny_moco(), Items(), VIEWS, one, checkpoint_path=tmp_path / "c.pt", resume_key="new", progress=False)
    assert again.resumed_from_epoch == 0 and len(again.history) == 1


def test_corrupt_resume_checkpoint_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_bytes(b"\x00" * 100)
    one = TrainSettings(epochs=1, batch_size=8, base_lr=0.3)
    out = train(tiny_moco(), Items(), VIEWS, one, checkpoint_path=tmp_path / "c.pt", progress=False)
    assert out.resumed_from_epoch == 0


def test_dataset_smaller_than_a_batch() -> None:
    with pytest.raises(ValueError, match="smaller than one batch"):
        train(tiny_moco(), Items(4), VIEWS, SETTINGS, progress=False)


def test_byol_predictor_lr_multiplier() -> None:
    """One step from the same init: the predictor moves pred_lr_mult times as far, the encoder as far."""

    def one_step(mult: float) -> tuple[BYOL, BYOL]:
        torch.manual_seed(0)
        model = BYOL("resnet18", "standard", proj_hidden=16, proj_dim=8, pred_hidden=16, pred_lr_mult=mult)
        before = copy.deepcopy(model)
        settings = TrainSettings(epochs=1, batch_size=8, base_lr=0.3, seed=1)
        return before, train(model, Items(n=8), VIEWS, settings, progress=False).model

    def moved(a: torch.nn.Module, b: torch.nn.Module) -> torch.Tensor:
        return torch.cat([(q - p).flatten() for p, q in zip(a.parameters(), b.parameters())])

    b1, a1 = one_step(1.0)
    b8, a8 = one_step(8.0)
    torch.testing.assert_close(moved(b8.predictor, a8.predictor), 8 * moved(b1.predictor, a1.predictor))
    torch.testing.assert_close(moved(b8.encoder_online, a8.encoder_online), moved(b1.encoder_online, a1.encoder_online))
    groups = a8.optimizer_groups()
    assert [g["lr_mult"] for g in groups] == [1.0, 8.0]
    assert sum(len(g["params"]) for g in groups) == len(a8.online_parameters())
    with pytest.raises(ValueError, match="pred_lr_mult"):
        BYOL("resnet18", "standard", pred_lr_mult=0.0)


def test_amp_and_channels_last_run() -> None:
    fast = TrainSettings(epochs=1, batch_size=8, base_lr=0.3, amp=True, channels_last=True)
    out = train(tiny_moco(), Items(), VIEWS, fast, progress=False)
    assert out.model.encoder_q.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert out.model.encoder_q.conv1.weight.dtype == torch.float32  # autocast, weights stay fp32
    assert all(torch.isfinite(torch.tensor(out.step_losses)))


def test_knn_predict_known_answer() -> None:
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    query = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.1]]), dim=1)
    assert knn_predict(query, bank, labels, 3, k=1).tolist() == [0, 1, 2]
    # k = 5 weighted votes: the two near neighbours outweigh the far ones.
    assert knn_predict(query, bank, labels, 3, k=5).tolist() == [0, 1, 2]
    assert knn_top1(query, torch.tensor([0, 1, 0]), bank, labels, k=1) == pytest.approx(200 / 3)


def test_knn_monitor_schedule_and_values() -> None:
    data = Items(16)
    probe = KnnProbe.from_datasets("tiny", data, Items(16, seed=1), max_bank=12, max_query=8)
    assert probe.bank_images.shape == (12, 3, 32, 32) and probe.query_labels.shape == (8,)
    monitor = KnnMonitor([probe], mean=(0.5,) * 3, std=(0.25,) * 3, every=2, last_epoch=3)
    model = tiny_moco()
    model.train()
    assert monitor(model, 1) == {}
    out = monitor(model, 2)
    assert set(out) == {"knn/tiny"} and 0.0 <= out["knn/tiny"] <= 100.0
    assert monitor(model, 3) != {}  # the last epoch always runs
    assert model.training  # mode restored
