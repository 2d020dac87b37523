"""Metrics and the inference modes: single / multi-scale + flip, whole image / sliding window."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from projects.dformer_sam_attention.utils.eval import predict_probabilities, sliding_window_logits
from projects.dformer_sam_attention.utils.metrics import SegmentationMetrics, chance_miou, per_class_table


def test_miou_pixel_accuracy_and_table():
    metrics = SegmentationMetrics(3)
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    prediction = torch.tensor([[0, 1, 1, 1, 0, 2]])
    metrics.update(prediction, target)
    result = metrics.compute()
    # class 0: tp 1, fp 1, fn 1 → 1/3; class 1: tp 2, fp 1 → 2/3; class 2: tp 0 → 0; the 255 pixel is ignored
    assert result["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_acc"] == pytest.approx(3 / 5)
    table = per_class_table(result["per_class_iou"], ["a", "b", "c"])
    assert table["IoU"].tolist() == [33.33, 66.67, 0.0]
    assert chance_miou(5) == pytest.approx(1 / 9)


class Recorder(nn.Module):
    """A pointwise model (1×1 conv on rgb ⊕ depth) that records the input sizes it sees."""

    def __init__(self, position_dependent: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 3, 1)
        self.position_dependent = position_dependent
        self.sizes: list[tuple[int, int]] = []

    def forward(self, rgb, depth):
        self.sizes.append(tuple(rgb.shape[2:]))
        logits = self.conv(torch.cat([rgb, depth], 1))
        if self.position_dependent:  # favours class 0 more and more to the right: not flip-symmetric
            logits = logits + torch.linspace(0, 3, rgb.shape[-1]) * torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        return logits


def test_sliding_window_covers_the_image_and_matches_whole_image_for_a_pointwise_model():
    model = Recorder()
    rgb, depth = torch.randn(1, 3, 40, 70), torch.randn(1, 1, 40, 70)
    logits = sliding_window_logits(model, rgb, depth, 3, crop_hw=(32, 32), stride_rate=2 / 3)
    assert set(model.sizes) == {(32, 32)} and len(model.sizes) == 2 * 3  # rows: 0, 8; cols: 0, 21, 38
    torch.testing.assert_close(logits, model(rgb, depth), atol=1e-5, rtol=1e-5)
    small = sliding_window_logits(model, rgb[..., :20, :20], depth[..., :20, :20], 3, (32, 32), 2 / 3)
    assert small.shape == (1, 3, 20, 20)  # padded to one window, cropped back


@torch.no_grad()
def test_multi_scale_and_flip():
    rgb, depth = torch.randn(1, 3, 32, 48), torch.randn(1, 1, 32, 48)
    model = Recorder()
    single = predict_probabilities(model, rgb, depth, 3)
    torch.testing.assert_close(single.sum(1), torch.ones(1, 32, 48))
    model.sizes.clear()
    multi = predict_probabilities(model, rgb, depth, 3, scales=(0.5, 1.0, 1.5), flip=True)
    assert model.sizes == [(16, 24), (16, 24), (32, 48), (32, 48), (48, 72), (48, 72)]
    torch.testing.assert_close(multi.sum(1), torch.full((1, 32, 48), 6.0))
    # flipping a symmetric (pointwise) model changes nothing; a position-dependent one, something
    torch.testing.assert_close(predict_probabilities(model, rgb, depth, 3, flip=True), 2 * single)
    asymmetric = Recorder(position_dependent=True)
    assert not torch.allclose(predict_probabilities(asymmetric, rgb, depth, 3, flip=True),
                              2 * predict_probabilities(asymmetric, rgb, depth, 3))


def test_infer_rejects_an_overlay_opacity_outside_0_1(capsys):
    from projects.dformer_sam_attention.utils import infer as infer_cli

    common = ["--checkpoint", "c.pth", "--rgb", "a.jpg", "--depth", "a.png", "--output_dir", "out"]
    assert infer_cli.parse_args(common + ["--alpha", "0.25"]).alpha == 0.25
    with pytest.raises(SystemExit):
        infer_cli.parse_args(common + ["--alpha", "1.5"])
    assert "--alpha: must be in [0, 1], got 1.5" in capsys.readouterr().err
