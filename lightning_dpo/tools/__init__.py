"""Tools built on the library: the reward–KL frontier (``lightning-dpo evaluate``), what it can load, and plots.

- :mod:`~lightning_dpo.tools.frontier`: reward against KL and win rates over several models (CSV, JSONL, PNG).
- :mod:`~lightning_dpo.tools.model_sources`: checkpoints, run directories, HF directories and Hub ids to evaluate.
- :mod:`~lightning_dpo.tools.plotting`: a run's metrics and the frontier as PNGs (``lightning-dpo plot``).
"""
