"""On-policy tests sample from tiny models: one thread each (as tests/ops does), so that they neither stall
nor stall others when jobs share the cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
