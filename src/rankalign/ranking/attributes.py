"""Attribute gain functions G_k(i) (SeAdpra, Yang et al., arXiv:2502.12189, §2.2.2).

Formulas and the project's decisions: docs/methods.md#attributes.

* ``semantic``: G_Se(i) = 2**phi(i) - 1, phi(i) = cos(E(prompt), E(text_i)) (the project's
  decision: the NDCG gain; the paper's 2**(phi-1) differs by a factor 1/2 that cancels in the loss).
* ``popularity``: G_Po(i) = log10(max(votes_i, 0) * decay(age_i) + 1),
  decay(age) = 0.5 ** (age / half_life) with age in days measured from the newest ``created``
  among the list's responses (or from a configured reference date). A response without a date
  gets no decay. A response without ``votes`` counts 0 votes; a list in which *no* response has
  votes is an error (popularity cannot be computed for it).
* ``scores``: the record's explicit ``scores`` (reward data sets).
* any other name: the numeric response attribute of that name (e.g. ``helpfulness``,
  ``rating``, ``is_safe``), gain = its value (booleans count 1/0). As for votes, a response
  lacking it gets 0 and a list where no response has it is an error.

Gains of one list are a float64 vector ``[M]``; the vectorised forms take arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord, RecordError, parse_datetime

SEMANTIC = "semantic"
POPULARITY = "popularity"
SCORES = "scores"
#: attribute names with a built-in gain; any numeric response attribute is accepted besides.
BUILTIN_ATTRIBUTES = (SEMANTIC, POPULARITY, SCORES)
SECONDS_PER_DAY = 86400.0


def semantic_gain(phi: np.ndarray) -> np.ndarray:
    """G_Se = 2**phi - 1 (SeAdpra §2.2.2; docs/methods.md#attributes); phi in [-1, 1] gives G in [-0.5, 1]."""
    return np.exp2(np.asarray(phi, dtype=np.float64)) - 1.0


def time_decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """decay = 0.5 ** (age / half_life); a NaN age (no date) gives 1 (no decay)."""
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    age = np.asarray(age_days, dtype=np.float64)
    return np.where(np.isnan(age), 1.0, np.power(0.5, np.nan_to_num(age) / half_life_days))


def popularity_gain(votes: np.ndarray, age_days: np.ndarray | None = None, half_life_days: float = 365.0) -> np.ndarray:
    """G_Po = log10(max(votes, 0) * decay(age) + 1) (SeAdpra §2.2.2; docs/methods.md#attributes).

    Args:
        votes: any shape; negative votes clamp to 0.
        age_days: same shape; NaN = no date = no decay; ``None`` = no decay anywhere.
        half_life_days: the decay's half life.
    """
    v = np.maximum(np.asarray(votes, dtype=np.float64), 0.0)
    if age_days is not None:
        v = v * time_decay(age_days, half_life_days)
    return np.log10(v + 1.0)


def ages_in_days(created: Sequence[datetime | None], reference: datetime | None = None) -> np.ndarray:
    """Age of each response in days: reference minus its creation time.

    The reference is ``reference`` when given, else the newest creation time in the list.
    Missing dates give NaN (no decay). Responses newer than a fixed reference get age 0.
    """
    known = [t for t in created if t is not None]
    if not known:
        return np.full(len(created), np.nan)
    ref = reference if reference is not None else max(known)
    ages = [((ref - t).total_seconds() / SECONDS_PER_DAY) if t is not None else math.nan for t in created]
    arr = np.asarray(ages, dtype=np.float64)
    return np.where(np.isnan(arr), np.nan, np.maximum(arr, 0.0))


def _numeric(rec: ListRecord, i: int, name: str, value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    raise RecordError(
        f"record id={rec.id!r}", f"responses[{i}].attributes.{name}",
        f"must be a finite number (or true/false) to serve as the {name!r} gain, got {value!r}",
    )


def attribute_values(rec: ListRecord, name: str) -> np.ndarray:
    """The numeric attribute ``name`` of every response; missing -> 0 (error if missing in all)."""
    present = [name in r.attributes and r.attributes[name] is not None for r in rec.responses]
    if not any(present):
        raise RecordError(
            f"record id={rec.id!r}", f"responses[*].attributes.{name}",
            f"no response of this list has the attribute {name!r}",
            f"give at least one response an '{name}' value, drop the record (--on-error skip), "
            f"or remove {name!r} from the attributes",
        )
    return np.array(
        [_numeric(rec, i, name, r.attributes[name]) if ok else 0.0
         for i, (r, ok) in enumerate(zip(rec.responses, present))],
        dtype=np.float64,
    )


def response_dates(rec: ListRecord) -> list[datetime | None]:
    """Parsed ``created`` of every response (None where absent)."""
    out: list[datetime | None] = []
    for r in rec.responses:
        value = r.attributes.get("created")
        out.append(parse_datetime(value) if value is not None else None)
    return out


def record_gains(
    rec: ListRecord,
    name: str,
    *,
    phi: np.ndarray | None = None,
    half_life_days: float = 365.0,
    reference_date: datetime | None = None,
) -> np.ndarray:
    """Gains ``[M]`` of one attribute for one record (module docstring lists the attributes).

    Args:
        rec: the record.
        name: ``semantic``, ``popularity``, ``scores`` or a numeric response attribute.
        phi: ``[M]`` cosine similarities prompt/response, needed for ``semantic``.
        half_life_days: popularity decay half life.
        reference_date: fixed "now" for popularity ages (default: the newest response).
    Raises:
        RecordError: the record lacks what the attribute needs (names record and field).
    """
    m = rec.num_responses
    if name == SEMANTIC:
        if phi is None:
            raise ValueError("the semantic gain needs phi (cosine similarities of prompt and responses)")
        phi = np.asarray(phi, dtype=np.float64)
        if phi.shape != (m,):
            raise ValueError(f"record id={rec.id!r}: phi has shape {phi.shape}, expected ({m},)")
        return semantic_gain(phi)
    if name == POPULARITY:
        votes = attribute_values(rec, "votes")
        ages = ages_in_days(response_dates(rec), reference_date)
        return popularity_gain(votes, ages, half_life_days)
    if name == SCORES:
        if rec.scores is None:
            raise RecordError(f"record id={rec.id!r}", "scores", "missing, but 'scores' is among the attributes",
                              "give the record scores or remove 'scores' from the attributes")
        return np.asarray(rec.scores, dtype=np.float64)
    return attribute_values(rec, name)


def numeric_attribute_names(records: Sequence[ListRecord]) -> list[str]:
    """Names of response attributes holding numbers or booleans somewhere in ``records``."""
    names: set[str] = set()
    for rec in records:
        for r in rec.responses:
            for key, value in r.attributes.items():
                if isinstance(value, (int, float)) and not isinstance(value, str):
                    names.add(key)
    return sorted(names)


def check_attribute_names(names: Sequence[str], records: Sequence[ListRecord]) -> None:
    """Reject attribute names that neither have a built-in gain nor occur as a numeric attribute.

    Raises:
        ValueError: naming the unknown attribute(s) and listing the known ones.
    """
    known = numeric_attribute_names(records)
    unknown = [n for n in names if n not in BUILTIN_ATTRIBUTES and n not in known]
    if unknown:
        raise ValueError(
            f"unknown attribute(s) {unknown}: known are {list(BUILTIN_ATTRIBUTES)} and the numeric "
            f"response attributes found in the data {known or '(none)'}"
        )
