"""Bundled preference tasks; see :mod:`lightning_dpo.tasks.politeness` for the default one."""

from __future__ import annotations

from lightning_dpo.tasks.politeness import (
    Question,
    build_splits,
    format_prompt,
    is_polite,
    politeness_judge,
    politeness_reward,
    politeness_score,
    question_bank,
)

__all__ = [
    "Question",
    "build_splits",
    "format_prompt",
    "is_polite",
    "politeness_judge",
    "politeness_reward",
    "politeness_score",
    "question_bank",
]
