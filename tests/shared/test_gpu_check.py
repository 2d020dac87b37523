"""The gpu-check runner: one line and exit 0 without a GPU; on CPU (smoke) the loop runs a tiny
ViT-like case over optimizers x precisions x gradient checkpointing and writes the summary."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import projects.cli as cli
from shared.bench import ViTLike
from shared.gpu_check import AMP_ATOL, AMP_RTOL, ROW_COLUMNS, GpuCheckCase, run_gpu_check


def tiny_vit_case(name: str = "tiny ViT-like", fail: bool = False) -> GpuCheckCase:
    def make_batch(device):
        g = torch.Generator().manual_seed(3)
        return torch.randn(4, 8, 12, generator=g).to(device), torch.randint(0, 10, (4,), generator=g).to(device)

    def loss(model, batch):
        if fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        return F.cross_entropy(model(batch[0]), batch[1])

    return GpuCheckCase(tool="shared", name=name, lr=1e-2, steps=3, make_batch=make_batch, loss=loss,
                        build_model=lambda checkpointing: ViTLike(dim=16, depth=2, heads=2, tokens=8, patch_dim=12,
                                                                  gradient_checkpointing=checkpointing),
                        extra=lambda device: {"tokens": 8})


def test_runner_loop_on_cpu_writes_the_summary(tmp_path):
    summary = run_gpu_check([tiny_vit_case(), tiny_vit_case("failing case", fail=True)], "cpu", tmp_path,
                            not_available={"some_tool": "not available: no module"}, smoke=True, echo=lambda s: None)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["rows"] == json.loads(json.dumps(summary["rows"]))
    assert written["smoke"] and written["not_available"] == {"some_tool": "not available: no module"}
    assert written["extra"]["shared / tiny ViT-like"] == {"tokens": 8}
    assert written["amp_tolerance"]["rtol"] == AMP_RTOL and written["amp_tolerance"]["atol"] == AMP_ATOL
    ratio = written["shared_sam_step_over_floor"][0]
    assert ratio["sam"] > 0 and ratio["reference"] > 0 and ratio["floor_ms"] > 0

    rows = {(r["case"], r["optimizer"], r["precision"], r["gradient_checkpointing"]): r for r in written["rows"]}
    assert len(rows) == 2 * 2 * 3 * 2  # cases x (sam, adamw) x (fp32, fp16, bf16) x checkpointing off/on
    assert all(list(r) == list(ROW_COLUMNS) for r in written["rows"])
    for (case, optimizer, precision, checkpointing), row in rows.items():
        if case == "failing case":  # recorded, and the run went on
            assert row["error"] == "RuntimeError: CUDA out of memory (simulated)" and row["losses"] is None
            continue
        assert row["error"] is None and row["finite"] and len(row["losses"]) == 3
        assert row["mean_step_ms"] > 0 and row["peak_cuda_mb"] is None  # no CUDA memory on a CPU
        assert row["losses"][-1] < row["losses"][0]  # lr 1e-2 on one batch: it learns
        fp32 = rows[(case, optimizer, "fp32", checkpointing)]["losses"]
        if precision == "fp32":
            assert row["amp_max_abs_diff"] is None
            # same initial weights and batch with and without checkpointing: the same fp32 curve
            torch.testing.assert_close(row["losses"], rows[(case, optimizer, "fp32", not checkpointing)]["losses"])
        else:
            assert row["amp_max_abs_diff"] == pytest.approx(max(abs(a - b) for a, b in zip(row["losses"], fp32)))
            assert row["amp_within_tolerance"] is True


def test_no_gpu_prints_one_line_and_exits_0(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "collect_gpu_check_cases", lambda size: pytest.fail("nothing to collect without a GPU"))
    result = CliRunner().invoke(cli.app, ["gpu-check"])
    assert result.exit_code == 0
    assert result.output.count("\n") == 1 and "no CUDA GPU" in result.output


def test_cli_smoke_mode_and_unavailable_tools(monkeypatch, tmp_path):
    def fake_tool_module(tool, part):
        if tool == "sam_finetune":
            raise ImportError("cannot import name 'x'")
        return None

    monkeypatch.setattr(cli, "tool_module", fake_tool_module)
    cases, not_available = cli.collect_gpu_check_cases("tiny")
    assert cases == [] and set(not_available) == set(cli.TOOLS)
    assert not_available["sam_finetune"] == "not available: ImportError: cannot import name 'x'"
    assert "gpu_check.py does not exist yet" in not_available["sam_med3d_ich"]

    monkeypatch.setattr(cli, "collect_gpu_check_cases", lambda size: ([tiny_vit_case()], not_available))
    result = CliRunner().invoke(cli.app, ["gpu-check", "--device", "cpu", "--size", "tiny", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "SMOKE" in result.output and "sam_finetune" in result.output
    assert json.loads((tmp_path / "summary.json").read_text())["smoke"] is True
    monkeypatch.chdir(tmp_path)  # the default folder: a smoke run keeps out of a GPU run's summary
    assert CliRunner().invoke(cli.app, ["gpu-check", "--device", "cpu", "--size", "tiny"]).exit_code == 0
    assert (tmp_path / "runs/gpu-check/smoke/summary.json").is_file()
    assert not (tmp_path / "runs/gpu-check/summary.json").exists()
    refused = CliRunner().invoke(cli.app, ["gpu-check", "--device", "cpu", "--size", "full"])
    assert refused.exit_code == 2 and "smoke mode" in refused.output


def test_configurations_past_the_time_budget_are_reported_not_run(tmp_path):
    summary = run_gpu_check([tiny_vit_case()], "cpu", tmp_path, time_budget_s=0.0, smoke=True,
                            sam_batches={}, echo=lambda s: None)
    assert len(summary["rows"]) == 2 * 3 * 2
    assert all(row["error"] == "not run: the time budget was spent" and row["losses"] is None
               for row in summary["rows"])
    assert summary["extra"] == {"shared / tiny ViT-like": {"error": "not run: the time budget was spent"}}


def test_amp_curve_is_compared_after_the_same_number_of_updates():
    from shared.gpu_check import amp_difference

    fp32 = {"losses": [1.4079, 1.0476, 1.0140, 1.0031], "updates_before": [0, 1, 2, 3]}
    # fp16 whose GradScaler skipped the first step (scale search): one update behind, same curve
    fp16 = {"losses": [1.4080, 1.4080, 1.0474, 1.0139], "updates_before": [0, 0, 1, 2]}
    largest, within = amp_difference(fp16, fp32)
    assert within and largest == pytest.approx(2e-4, abs=1e-6)
    diverged = {"losses": [1.4080, 1.2, 1.1, 1.1], "updates_before": [0, 1, 2, 3]}
    largest, within = amp_difference(diverged, fp32)
    assert not within and largest == pytest.approx(1.2 - 1.0476)
