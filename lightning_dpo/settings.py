"""Typed groups of settings: dataclasses that a CLI flag, a YAML block, a dict and a checkpoint all map to.

A group (``LossSettings``, ``ReferenceSettings``, ``LogpsOptions``) is defined once, beside the code that
reads it. LightningCLI turns its fields into nested flags (``--model.loss.beta``) with the attribute
docstrings as help; checkpoints store it as a plain dict (so they load with ``weights_only=True``), and
:func:`as_settings` turns such a dict back into the group.

:func:`refuse_renamed` gives arguments that moved into a group an error naming their new place, and
:func:`import_object` resolves the dotted paths that settings name (a loss, a reward, a judge).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def as_settings(cls: type[T], value: T | Mapping[str, Any] | None, owner: str) -> T:
    """``value`` as an instance of the dataclass ``cls``: an instance as it is, a mapping by its keys,
    ``None`` as the defaults. ``owner`` names the argument in errors (``"DPOModule(loss=...)"``)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{owner}: expected {cls.__name__} or a dict of its fields, got {type(value).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise TypeError(f"{owner}: unknown field(s) {unknown} of {cls.__name__}; its fields are {sorted(fields)}")
    return cls(**value)


def as_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass as a plain dict (what checkpoints and logged hyperparameters hold)."""
    return dataclasses.asdict(settings)


def refuse_renamed(renamed: Mapping[str, str], owner: str) -> Callable[[Callable], Callable]:
    """Decorate an ``__init__`` so that a keyword argument that moved (``renamed``: old name -> new place)
    raises a ``TypeError`` naming its new place, rather than Python's bare "unexpected keyword argument".

    The signature is kept (``functools.wraps``), so jsonargparse and ``inspect`` see the real arguments.
    """

    def decorate(init: Callable) -> Callable:
        @functools.wraps(init)
        def checked(self: Any, *args: Any, **kwargs: Any) -> None:
            moved = [name for name in kwargs if name in renamed]
            if moved:
                where = "; ".join(f"{name} is now {renamed[name]}" for name in moved)
                raise TypeError(f"{owner}: {where}")
            init(self, *args, **kwargs)

        return checked

    return decorate


def import_object(path: str) -> Any:
    """``pkg.module.name`` or ``pkg.module:name`` -> the object."""
    module_name, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not a dotted path such as 'my_pkg.rewards.score' or 'my_pkg.rewards:score'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} of {path!r}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj
