"""benchmarks/bench_listwise.py and benchmarks/listwise_parity.py run end to end (a small size), and report
a ratio and the K = 2 parity figures; timings are printed, never asserted."""

from __future__ import annotations

import re

import torch


def test_the_step_time_benchmark_prints_a_ratio(load_script, capsys):
    threads = torch.get_num_threads()
    try:
        load_script("benchmarks/bench_listwise.py").main(["--prompts", "2", "--batches", "1", "--repeats", "2"])
    finally:
        torch.set_num_threads(threads)
    assert re.search(r"ratio listwise / two pairwise: \d+\.\d\d", capsys.readouterr().out)


def test_the_parity_figures_are_at_rounding_level(load_script):
    parity = load_script("benchmarks/listwise_parity.py")
    values, grads = parity.pure(torch.float64, n=1000)
    assert values < 1e-12 and grads < 1e-12
