"""benchmarks/bench_tokenization_fidelity.py end to end on a small HH-shaped set: every family's ids are the
whole text's, every record is kept at 4096, and no cut prompt belongs to a pair that would have fit."""

from __future__ import annotations

import re


def test_the_benchmark_reports_zero_differences_and_every_record_kept(load_script, tmp_path, capsys):
    bench = load_script("benchmarks/bench_tokenization_fidelity.py")
    bench.main(["--pairs", "60", "--fidelity-pairs", "40", "--tokenizer-pairs", "150", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    rows = re.findall(r"^   (.+?)\s+(\d+)\s+(\d+)\s+(\d+)$", out, flags=re.M)
    assert len(rows) == 4 and all(int(n) > 30 for _, n, _, _ in rows)
    assert all((differ, stray) == ("0", "0") for _, _, differ, stray in rows), out
    assert "read 60, kept 60" in out and "{'chosen': 4, 'rejected': 0}" in out
    assert re.search(r"of_which_would_fit\s+0$", out, flags=re.M)
