"""Name -> loss class registry. A new method is one module plus one decorator line."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from rankalign.losses.base import ListwiseLoss

_REGISTRY: dict[str, type[ListwiseLoss]] = {}
T = TypeVar("T", bound=type[ListwiseLoss])


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`ListwiseLoss` under ``name``; duplicates are refused."""

    def deco(cls: T) -> T:
        key = _key(name)
        if key in _REGISTRY:
            raise ValueError(f"loss name {name!r} is already registered by {_REGISTRY[key].__module__}")
        if not (isinstance(cls, type) and issubclass(cls, ListwiseLoss)):
            raise TypeError(f"{cls!r} is not a ListwiseLoss subclass")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return deco


def available_losses() -> list[str]:
    """Sorted names of every registered loss."""
    return sorted(_REGISTRY)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_loss_class(name: str) -> type[ListwiseLoss]:
    key = _key(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(available_losses())}")
    return _REGISTRY[key]


def loss_parameters(name: str) -> list[str]:
    """The hyper-parameter names the loss ``name`` accepts."""
    sig = inspect.signature(get_loss_class(name).__init__)
    return [p for p in sig.parameters if p != "self"]


def build_loss(name: str, **hparams: Any) -> ListwiseLoss:
    """Build the loss ``name``; unknown hyper-parameters are an error listing the valid ones."""
    valid = loss_parameters(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f"loss {name!r} got unknown hyper-parameter(s) {unknown}; valid: {valid}")
    return get_loss_class(name)(**hparams)


def build_loss_from_config(name: str, config: Any) -> ListwiseLoss:
    """Build ``name`` taking the hyper-parameters it accepts from a config dataclass."""
    values = asdict(config) if not isinstance(config, dict) else config
    return build_loss(name, **{k: values[k] for k in loss_parameters(name) if k in values})
