"""The demo's data generator and the benchmark's FLOP accounting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from projects.dformer_sam_attention import bench, demo


def test_demo_data_layout(tmp_path):
    root = demo.make_data(tmp_path / "data", seed=1)
    assert len((root / "train.txt").read_text().splitlines()) == 96
    assert len((root / "test.txt").read_text().splitlines()) == 24
    assert len(list((root / "Depth").glob("*.png"))) == 120


def test_fused_cpu_attention_is_counted_like_the_explicit_matmuls():
    q, k, v = torch.randn(1, 2, 50, 16), torch.randn(1, 2, 30, 16), torch.randn(1, 2, 30, 16)
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: bench.sdpa_cpu_flops}
    with FlopCounterMode(display=False, custom_mapping=custom) as fused:
        F.scaled_dot_product_attention(q, k, v)
    with FlopCounterMode(display=False) as explicit:
        (q @ k.transpose(-1, -2)).softmax(-1) @ v
    assert fused.get_total_flops() == explicit.get_total_flops() == 2 * 2 * 50 * 30 * (16 + 16)
    with FlopCounterMode(display=False) as uncounted:  # what flop_counter alone sees of the fused kernel
        F.scaled_dot_product_attention(q, k, v)
    assert uncounted.get_total_flops() == 0


def test_bench_compares_the_same_model_with_and_without_alignment():
    with_alignment, without = bench.settings("tiny", True), bench.settings("tiny", False)
    assert with_alignment.text_guidance and not without.text_guidance
    assert with_alignment.__dict__ | {"text_guidance": False} == without.__dict__
    assert bench.params(bench.build("tiny", True)) > bench.params(bench.build("tiny", False))
