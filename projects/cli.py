"""`samkit`: the umbrella command for what spans the four tools.

    samkit doctor                      system report and import check
    samkit demo [TOOL]                 train every tool (or one) end to end on generated data
    samkit make-data TOOL DIR          write a tool's synthetic dataset in its real on-disk layout
    samkit bench [TOOL]                speed / memory ratios against in-process baselines
    samkit gpu-check                   every tool at full size on one CUDA GPU (runs/gpu-check/summary.json)
    samkit annotate --images ... --checkpoint ... --annotations ...   the SAM annotation page
                                       (projects/sam_finetune/annotate.py, same flags)

Each tool provides `projects/<tool>/demo.py` (`make_data`, `run_demo`) and
`projects/<tool>/bench.py` (`run_bench`); the shared core has its own toy demo and benchmark.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from types import ModuleType

import typer

from shared.tracking import write_json

TOOLS = ("siglip_sam_dementia", "sam_med3d_ich", "sam_finetune", "dformer_sam_attention")
ALIASES = {"dementia": "siglip_sam_dementia", "med3d": "sam_med3d_ich", "finetune": "sam_finetune",
           "dformer": "dformer_sam_attention", "shared": "shared"}
DEMO_ROOT = Path("runs/demo")
BENCH_ROOT = Path("runs/bench")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def resolve_tool(name: str) -> str:
    tool = ALIASES.get(name, name)
    if tool not in (*TOOLS, "shared"):
        raise typer.BadParameter(f"unknown tool {name!r}: choose from {', '.join((*TOOLS, *ALIASES))}")
    return tool


def tool_module(tool: str, part: str) -> ModuleType | None:
    """`projects.<tool>.<part>`, or None when the tool does not provide it (yet)."""
    try:
        return importlib.import_module(f"projects.{tool}.{part}")
    except ModuleNotFoundError as error:
        if error.name in (f"projects.{tool}", f"projects.{tool}.{part}"):
            return None
        raise


def shared_demo(out_dir: Path) -> dict:
    """SAM vs AdamW on the toy problem of the shared core."""
    from shared.toy_trainer import main as toy_main

    results = {}
    for optimizer in ("adamw", "sam"):
        results[optimizer] = toy_main(["--output_dir", str(out_dir / optimizer), "--optimizer", optimizer,
                                       "--epochs", "20"])
    typer.echo("shared toy problem: optimizer, train acc, test acc, generalization gap")
    for name, summary in results.items():
        typer.echo(f"  {name:6s} {summary['train_acc']:.3f} {summary['test_acc']:.3f} {summary['generalization_gap']:+.3f}")
    return {"dataset": "toy 2-class, 20% label noise", "metric": "test_acc (SAM)",
            "value": results["sam"]["test_acc"], "baseline": 0.5, "output_dir": str(out_dir),
            "adamw_test_acc": results["adamw"]["test_acc"],
            "sam_generalization_gap": results["sam"]["generalization_gap"],
            "adamw_generalization_gap": results["adamw"]["generalization_gap"]}


def run_one_demo(tool: str, root: Path) -> dict | None:
    out_dir = root / tool
    if tool == "shared":
        return shared_demo(out_dir)
    module = tool_module(tool, "demo")
    if module is None:
        typer.echo(f"[{tool}] no demo yet, skipped")
        return None
    return module.run_demo(out_dir)


def update_summary(path: Path, rows: dict[str, dict]) -> dict[str, dict]:
    """Merge rows into `summary.json` (a tool's own demo target adds or replaces only its row)."""
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary)
    return summary


def format_table(summary: dict[str, dict]) -> str:
    header = f"{'tool':24s} {'dataset':32s} {'metric':18s} {'value':>8s} {'baseline':>9s}  output"
    lines = [header, "-" * len(header)]
    for tool, row in summary.items():
        lines.append(f"{tool:24s} {row['dataset'][:32]:32s} {row['metric'][:18]:18s} {row['value']:8.3f} "
                     f"{row['baseline']:9.3f}  {row['output_dir']}")
    return "\n".join(lines)


@app.command()
def doctor() -> None:
    """System report (CPU, RAM, disk, GPUs, CUDA, package versions) and an import check of every tool."""
    from shared.memory import format_system_report, system_report

    typer.echo(format_system_report(system_report()))
    failures = 0
    for tool in TOOLS:
        try:
            found = tool_module(tool, "demo") is not None
            typer.echo(f"[{'ok' if found else '--'}] {tool}{'' if found else ' (not built yet)'}")
        except Exception as error:  # noqa: BLE001 - report any import failure
            failures += 1
            typer.echo(f"[FAIL] {tool}: {type(error).__name__}: {error}")
    raise typer.Exit(1 if failures else 0)


@app.command()
def demo(tool: str = typer.Argument("all", help="a tool name or alias, or 'all'"),
         out: Path = typer.Option(DEMO_ROOT, help="folder for the runs and summary.json")) -> None:
    """Train every tool (or one) end to end on generated data with tiny models; print the table."""
    tools = ("shared", *TOOLS) if tool == "all" else (resolve_tool(tool),)
    rows = {}
    for name in tools:
        start = time.time()
        typer.echo(f"=== demo: {name}")
        row = run_one_demo(name, out)
        if row is not None:
            rows[name] = row
            typer.echo(f"=== {name}: {row['metric']} = {row['value']:.3f} (baseline {row['baseline']:.3f}), "
                       f"{time.time() - start:.0f} s")
    summary = update_summary(out / "summary.json", rows)
    typer.echo("\n" + format_table(summary))
    typer.echo(f"\nwritten: {out / 'summary.json'}")


@app.command("make-data")
def make_data(tool: str, out_dir: Path, seed: int = typer.Option(0, help="random seed")) -> None:
    """Write TOOL's synthetic dataset into OUT_DIR (the same layout as real data)."""
    name = resolve_tool(tool)
    module = tool_module(name, "demo") if name != "shared" else None
    if module is None:
        raise typer.BadParameter(f"{name} has no synthetic data generator")
    path = module.make_data(out_dir, seed=seed)
    typer.echo(f"written: {path}")


@app.command()
def bench(tool: str = typer.Argument("all", help="a tool name or alias, or 'all'"),
          out: Path = typer.Option(BENCH_ROOT, help="folder for bench summary.json")) -> None:
    """Speed and memory, as ratios against baselines measured in the same process."""
    from shared.bench import run_bench as shared_bench

    tools = ("shared", *TOOLS) if tool == "all" else (resolve_tool(tool),)
    results: dict[str, list[dict]] = {}
    for name in tools:
        if name == "shared":
            results[name] = shared_bench()
        else:
            module = tool_module(name, "bench")
            if module is None:
                typer.echo(f"[{name}] no benchmark yet, skipped")
                continue
            results[name] = module.run_bench()
        for row in results[name]:
            typer.echo(f"{name:22s} {row['name'][:60]:60s} {row['value']:12.4g} {row['unit']:12s} {row.get('note', '')}")
    update_summary(out / "summary.json", results)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def annotate(ctx: typer.Context) -> None:
    """Annotate images in the browser with any SAM checkpoint sam_finetune loads (annotate.py's flags; --help)."""
    from projects.sam_finetune.annotate import cli as annotate_cli

    raise typer.Exit(annotate_cli(ctx.args))


GPU_CHECK_ROOT = Path("runs/gpu-check")


def collect_gpu_check_cases(size: str) -> tuple[list, dict[str, str]]:
    """Every tool's `projects/<tool>/gpu_check.py` cases; a tool whose module is missing or fails to
    import or build is reported as not available, with the reason."""
    cases, not_available = [], {}
    for tool in TOOLS:
        try:
            module = tool_module(tool, "gpu_check")
            if module is None:
                not_available[tool] = f"not available: projects/{tool}/gpu_check.py does not exist yet"
                continue
            cases += module.gpu_check_cases(size)
        except Exception as error:  # noqa: BLE001 - one tool's failure must not hide the others' figures
            not_available[tool] = f"not available: {type(error).__name__}: {error}"
    return cases, not_available


@app.command("gpu-check")
def gpu_check(out: Path = typer.Option(GPU_CHECK_ROOT, help="folder for summary.json"),
              device: str = typer.Option("cuda", hidden=True,
                                         help="smoke mode only: 'cpu' with --size tiny runs the loop on tiny models"),
              size: str = typer.Option("full", hidden=True, help="full | tiny (tiny: smoke mode, not a measurement)"),
              ) -> None:
    """Every tool at full size on one CUDA GPU (< 8 minutes): SAM and AdamW/Lion steps in fp32, fp16 +
    GradScaler and bf16, with and without gradient checkpointing; finite losses, AMP vs fp32 loss
    curve, step time, peak CUDA memory, tool extras, shared.sam step/floor. Writes summary.json."""
    import torch

    from shared.gpu_check import run_gpu_check

    if size not in ("full", "tiny"):
        raise typer.BadParameter(f"--size must be full or tiny, got {size!r}")
    if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
        raise typer.BadParameter(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    if device == "cpu" and size != "tiny":
        raise typer.BadParameter("--device cpu is a smoke mode for --size tiny only (full-size models need a GPU)")
    if device != "cpu" and not torch.cuda.is_available():
        typer.echo("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was measured")
        raise typer.Exit(0)
    smoke = size == "tiny" or device == "cpu"
    if smoke and out == GPU_CHECK_ROOT:
        out = GPU_CHECK_ROOT / "smoke"  # a smoke run never replaces a GPU run's summary
    cases, not_available = collect_gpu_check_cases(size)
    run_gpu_check(cases, device, out, not_available=not_available, smoke=smoke, echo=typer.echo)


if __name__ == "__main__":
    app()
