import pytest
import torch

from projects.sam_med3d_ich.clicks import clicks_to_map, map_to_points, sample_error_clicks
from projects.sam_med3d_ich.interaction import ClickRoundsForward
from projects.sam_med3d_ich.model import build_ich_model


def volume(*voxels, size=8):
    v = torch.zeros(1, 1, size, size, size, dtype=torch.bool)
    for d, h, w in voxels:
        v[0, 0, d, h, w] = True
    return v


def test_missed_voxel_becomes_a_positive_click():
    coords, labels = sample_error_clicks(volume(), volume((1, 2, 3)))
    assert coords.tolist() == [[[1, 2, 3]]] and labels.tolist() == [[1]]


def test_false_positive_voxel_becomes_a_negative_click():
    coords, labels = sample_error_clicks(volume((4, 5, 6)), volume())
    assert coords.tolist() == [[[4, 5, 6]]] and labels.tolist() == [[0]]


def test_empty_masks_and_perfect_predictions_give_padding_not_a_crash():
    both_empty = sample_error_clicks(volume(), volume())
    perfect = sample_error_clicks(volume((1, 1, 1)), volume((1, 1, 1)))
    assert both_empty[1].tolist() == [[-1]] and perfect[1].tolist() == [[-1]]


def test_clicks_are_drawn_uniformly_from_the_whole_error_region():
    pred, truth = volume((0, 0, 0)), volume((7, 7, 7))
    generator = torch.Generator().manual_seed(0)
    labels = [int(sample_error_clicks(pred, truth, generator)[1]) for _ in range(200)]
    assert 60 < labels.count(1) < 140 and labels.count(0) == 200 - labels.count(1)


def test_click_rounds_train_on_empty_and_full_masks():
    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32)
    rounds = ClickRoundsForward(model, num_clicks=3)
    images = torch.randn(2, 1, 32, 32, 32)
    labels = torch.zeros(2, 1, 32, 32, 32)
    labels[1] = 1.0  # one empty crop, one that is all haemorrhage
    logits, ich_logit = rounds(images, labels, torch.Generator().manual_seed(1))
    assert len(logits) == 4 and all(torch.isfinite(x).all() for x in logits)
    sum(x.mean() for x in logits).backward()
    assert torch.isfinite(model.prompt_encoder.not_a_point_embed.weight.grad).all()


def test_num_clicks_sets_the_number_of_decoder_passes():
    model = build_ich_model("tiny", 8, 32)
    images, labels = torch.randn(1, 1, 32, 32, 32), torch.zeros(1, 1, 32, 32, 32)
    assert len(ClickRoundsForward(model, 1)(images, labels)[0]) == 2  # automatic round + 1 click round
    assert len(ClickRoundsForward(model, 6)(images, labels)[0]) == 7


def test_first_click_round_starts_from_an_empty_mask_with_a_click_inside_the_lesion(monkeypatch):
    """As SAM-Med3D: click round 1 samples from the error region of an empty prediction (so a
    positive click inside the lesion) and gets all-zero low-res logits as its mask prompt."""
    import projects.sam_med3d_ich.interaction as interaction

    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32)
    labels = torch.zeros(1, 1, 32, 32, 32)
    labels[0, 0, 10:14, 10:14, 10:14] = 1
    seen_priors, seen_clicks = [], []
    decode = model.decode

    def recording_decode(embeddings, points=None, prior=None):
        seen_priors.append(None if prior is None else prior.clone())
        seen_clicks.append(points)
        return decode(embeddings, points, prior)

    monkeypatch.setattr(model, "decode", recording_decode)
    interaction.ClickRoundsForward(model, 1)(torch.randn(1, 1, 32, 32, 32), labels, torch.Generator().manual_seed(0))
    assert seen_priors[0] is None and seen_clicks[0] is None  # the automatic round: no prompt at all
    assert torch.equal(seen_priors[1], torch.zeros(1, 1, 16, 16, 16))
    coords, click_labels = seen_clicks[1]
    assert click_labels.tolist() == [[1]] and labels[0, 0][tuple(coords[0, 0])] == 1


def test_click_map_round_trip_and_bounds():
    click_map = clicks_to_map([(1, 2, 3, 1), (4, 4, 4, 0)], (8, 8, 8))
    coords, labels = map_to_points(torch.stack([click_map, torch.zeros(8, 8, 8)]))
    assert coords[0].tolist() == [[1, 2, 3], [4, 4, 4]] and labels[0].tolist() == [1, 0]
    assert labels[1].tolist() == [-1, -1]  # a window without clicks gets padding only
    assert map_to_points(torch.zeros(1, 8, 8, 8)) is None
    with pytest.raises(ValueError, match=r"click \(9, 0, 0\) lies outside the volume of shape \(8, 8, 8\)"):
        clicks_to_map([(9, 0, 0, 1)], (8, 8, 8))
