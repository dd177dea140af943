"""Name -> loss class registry, and the flat namespace of every loss's hyper-parameters.

A new method is one module with one decorated class (and, when it has hyper-parameters,
their dataclass next to it: see :mod:`rankalign.losses.params`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from rankalign.losses.base import ListwiseLoss

_REGISTRY: dict[str, type[ListwiseLoss]] = {}
_RESERVED: dict[str, str] = {}  # names a hyper-parameter may not take -> who holds them
T = TypeVar("T", bound=type[ListwiseLoss])


@dataclass(frozen=True)
class HyperParam:
    """One hyper-parameter of the flat namespace.

    Attributes:
        field: the dataclass field (default, ``metadata["help"]``).
        annotation: its resolved type.
        owner: the dataclass that declares it (a loss's own, or a shared one like ``Beta``).
        methods: the registered losses that take it, sorted.
    """

    field: dataclasses.Field
    annotation: Any
    owner: type
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def default(self) -> Any:
        return self.field.default


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`ListwiseLoss` under ``name``.

    Refused (``ValueError``): a name already taken; a hyper-parameter whose name another
    loss declares in a different dataclass (share it by inheriting that dataclass), or that
    a training-config field already uses; a hyper-parameter without a default or help.
    """

    def deco(cls: T) -> T:
        key = _key(name)
        if key in _REGISTRY:
            raise ValueError(f"loss name {name!r} is already registered by {_REGISTRY[key].__module__}")
        if not (isinstance(cls, type) and issubclass(cls, ListwiseLoss)):
            raise TypeError(f"{cls!r} is not a ListwiseLoss subclass")
        _check_hyperparams(key, cls.hyperparams)
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return deco


def unregister_loss(name: str) -> None:
    """Remove ``name`` from the registry (for plug-ins defined in tests)."""
    _REGISTRY.pop(_key(name), None)


def reserve_names(names: Iterable[str], holder: str) -> None:
    """Forbid hyper-parameters named like ``names`` (the training config's own fields).

    Raises:
        ValueError: a registered loss already declares one of them.
    """
    names = set(names)
    clash = sorted(n for n in names if n in _all_fields())
    if clash:
        raise ValueError(f"hyper-parameter(s) {clash} clash with fields of {holder}; rename them")
    for n in names:
        _RESERVED[n] = holder


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
    return [f.name for f in dataclasses.fields(get_loss_class(name).hyperparams)]


def default_hparams(name: str) -> dict[str, Any]:
    """The loss ``name``'s hyper-parameters at their defaults."""
    return dataclasses.asdict(get_loss_class(name).hyperparams())


def build_loss(name: str, **hparams: Any) -> ListwiseLoss:
    """Build the loss ``name``; unknown hyper-parameters are an error listing the valid ones."""
    return get_loss_class(name)(**hparams)


def hyperparameters() -> dict[str, HyperParam]:
    """Every registered loss's hyper-parameters, by name (the flat namespace)."""
    from rankalign.cli_fields import type_hints

    out: dict[str, HyperParam] = {}
    for field_, owner, methods in _all_fields().values():
        out[field_.name] = HyperParam(field_, type_hints(owner).get(field_.name), owner, tuple(sorted(methods)))
    return dict(sorted(out.items()))


def _owner(params: type, name: str) -> type:
    """The class in ``params``' bases (base first) that declares the field ``name``."""
    for klass in reversed(params.__mro__):
        if name in inspect.get_annotations(klass):
            return klass
    return params  # pragma: no cover - a dataclass field always has an annotation


def _all_fields() -> dict[str, tuple[dataclasses.Field, type, list[str]]]:
    """name -> (field, owner, methods) over the registered losses."""
    out: dict[str, tuple[dataclasses.Field, type, list[str]]] = {}
    for key, cls in _REGISTRY.items():
        for f in dataclasses.fields(cls.hyperparams):
            out.setdefault(f.name, (f, _owner(cls.hyperparams, f.name), []))[2].append(key)
    return out


def _check_hyperparams(key: str, params: type) -> None:
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"loss {key!r}: hyperparams must be a dataclass, got {params!r}")
    known = _all_fields()
    for f in dataclasses.fields(params):
        where = f"loss {key!r}: hyper-parameter {f.name!r}"
        if f.name in _RESERVED:
            raise ValueError(f"{where} clashes with a field of {_RESERVED[f.name]}; rename it")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where} has no default")
        if not f.metadata.get("help"):
            raise ValueError(f"{where} has no help text (declare it with rankalign.losses.params.hparam)")
        owner = _owner(params, f.name)
        if f.name in known:
            _, first_owner, methods = known[f.name]
            if first_owner is not owner:
                raise ValueError(f"{where} is declared again by {owner.__qualname__}, but "
                                 f"{first_owner.__qualname__} (used by {', '.join(methods)}) declares it "
                                 f"already; inherit {first_owner.__qualname__} instead")
        if not dataclasses.is_dataclass(owner):
            raise TypeError(f"{where} is declared by {owner.__qualname__}, which is not a dataclass")
        base_default = owner.__dataclass_fields__[f.name].default
        if f.default != base_default:
            raise ValueError(f"{where} changes the default of {owner.__qualname__} ({base_default!r} -> "
                             f"{f.default!r}); a hyper-parameter has one default")
