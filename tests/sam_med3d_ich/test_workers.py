"""Loader worker processes change where crops are made, never which: `--num_workers 2` trains on
exactly the batches of `--num_workers 0` in every epoch (persistent workers included) and ends with
the same weights, and a run resumed with workers replays the uninterrupted run's epochs."""

import pytest
import torch

import projects.sam_med3d_ich.trainer as trainer_module
from projects.sam_med3d_ich.train import main as train_main
from projects.sam_med3d_ich.trainer import Trainer

FLAGS = ["--model_type", "tiny", "--visual_tokens", "8", "--visual_token_dim", "32", "--num_clicks", "2",
         "--batch_size", "2", "--lr", "2e-3", "--prompt_decoder_lr_scale", "1", "--augmentation_prob", "1",
         "--scheduler_type", "cosine", "--device", "cpu", "--val_clicks", "1", "--target_spacing", "native"]


class BatchRecordingTrainer(Trainer):
    """The real trainer; every micro-batch it trains on is also kept (cases and crop tensors)."""

    batches: list
    stop_after_epoch: int | None = None  # simulates a run killed after this epoch

    def train(self, stop_after_epoch=None):
        return super().train(stop_after_epoch=type(self).stop_after_epoch)

    def _loss(self, batch, generator):
        type(self).batches.append((tuple(batch["case_id"]), batch["image"].clone(), batch["label"].clone(),
                                   batch["ich"].clone()))
        return super()._loss(batch, generator)

    def close(self):
        type(self).final_weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        super().close()


def train(monkeypatch, root, out, num_workers, stop_after_epoch=None, resume=None):
    """Run train.py's main() for 3 epochs -> (micro-batches trained on, final weights, summary)."""
    recorder = type("Recorder", (BatchRecordingTrainer,), {"batches": [], "stop_after_epoch": stop_after_epoch})
    monkeypatch.setattr(trainer_module, "Trainer", recorder)
    argv = ["--train_csv", str(root / "small_train.csv"), "--val_csv", str(root / "small_val.csv"),
            "--mask_dir", str(root / "masks"), "--output_dir", str(out), "--epochs", "3",
            "--num_workers", str(num_workers), *FLAGS] + (["--resume", str(resume)] if resume else [])
    summary = train_main(argv)
    return recorder.batches, recorder.final_weights, summary


def assert_same_batches(got, expected):
    assert [cases for cases, *_ in got] == [cases for cases, *_ in expected]
    for step, (a, b) in enumerate(zip(got, expected)):
        for x, y in zip(a[1:], b[1:]):
            assert torch.equal(x, y), f"micro-batch {step} differs"


def assert_same_weights(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@pytest.fixture(scope="module")
def without_workers(small_root, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return train(monkeypatch, small_root, tmp_path_factory.mktemp("med3d_nw0") / "run", num_workers=0)


def test_two_workers_train_on_the_same_batches_and_weights_as_none(without_workers, small_root, tmp_path,
                                                                   monkeypatch):
    batches, weights, _ = train(monkeypatch, small_root, tmp_path / "run", num_workers=2)
    reference_batches, reference_weights, _ = without_workers
    assert len(batches) == 3 * 2  # 3 epochs of 4 cases in batches of 2
    # the order and the crops change from epoch to epoch: the equality is not that of one repeated epoch
    epochs = [[cases for cases, *_ in batches[e * 2:(e + 1) * 2]] for e in range(3)]
    crops = [torch.cat([image for _, image, *_ in batches[e * 2:(e + 1) * 2]]) for e in range(3)]
    assert len({str(e) for e in epochs}) > 1 or not torch.equal(crops[0], crops[1])
    assert_same_batches(batches, reference_batches)
    assert_same_weights(weights, reference_weights)


def test_resume_with_workers_replays_the_uninterrupted_epochs(without_workers, small_root, tmp_path, monkeypatch):
    first, _, summary = train(monkeypatch, small_root, tmp_path / "run", num_workers=2, stop_after_epoch=1)
    out = summary["output_dir"]
    rest, weights, _ = train(monkeypatch, small_root, out, num_workers=2, resume=f"{out}/latest_model.pth")
    reference_batches, reference_weights, _ = without_workers
    assert_same_batches(first + rest, reference_batches)
    assert_same_weights(weights, reference_weights)
