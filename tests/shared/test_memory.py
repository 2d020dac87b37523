import mmap

import torch

from shared.memory import MemoryMonitor, format_system_report, system_report


def test_system_report_has_the_essentials():
    report = system_report()
    assert report["cpu_count"] >= 1 and report["ram_total_gb"] > 0 and report["disk_free_gb"] > 0
    assert report["packages"]["torch"] == torch.__version__.split("+")[0] or report["packages"]["torch"]
    assert report["cuda_available"] == torch.cuda.is_available()
    text = format_system_report(report)
    assert "CPU cores" in text and "torch" in text


def test_cpu_monitor_sees_a_peak_and_resets():
    monitor = MemoryMonitor("cpu")
    monitor.reset_peak()
    baseline = monitor.peak()["peak_rss_mb"]
    # fresh anonymous pages, touched: an allocator could hand back memory that is already resident
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    block.write(b"\x01" * len(block))
    assert monitor.peak()["peak_rss_mb"] - baseline > 48
    block.close()
    monitor.reset_peak()
    assert monitor.peak()["peak_rss_mb"] < baseline + 32


def test_saved_activation_bytes_counts_activations_not_parameters():
    from torch.utils.checkpoint import checkpoint

    from shared.memory import saved_activation_bytes

    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh()) for _ in range(4)])
    x = torch.randn(64, 256)
    plain, out = saved_activation_bytes(lambda: layers(x))
    # the input and the four tanh outputs (each also the next linear's saved input), 64 x 256 fp32 each
    assert plain == 5 * 64 * 256 * 4
    checkpointed, out_ckpt = saved_activation_bytes(lambda: checkpoint(layers, x, use_reentrant=False))
    assert checkpointed < plain / 4
    torch.testing.assert_close(out, out_ckpt)


def test_cpu_threads_sets_and_restores():
    from shared.memory import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
