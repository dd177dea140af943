"""The list-wise example (docs/methods.md#record, docs/data.md): one prompt, M >= 2 responses with attributes.

Every loader converts its source into :class:`ListRecord`; every method reads only this
shape. Validation happens on construction from a dict (:meth:`ListRecord.from_dict`) and
raises :class:`RecordError`, whose message names the record and the field and says how to
fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: top-level keys a record may carry; anything else is an error (typos must not pass).
RECORD_KEYS = ("id", "prompt", "responses", "ranking", "scores", "meta", "dynamic_ranking", "apdf", "apdf_row_max")
#: attribute keys with a fixed meaning (docs/methods.md#record, #attributes).
NUMERIC_ATTRIBUTES = ("votes",)
DATE_ATTRIBUTES = ("created",)
#: flags read by :meth:`ListRecord.community_order` and KTO (``desirable``, docs/methods.md#kto-unpaired);
#: a string "false" must not count as true.
BOOL_ATTRIBUTES = ("accepted", "desirable")


class RecordError(ValueError):
    """A record is invalid. The message names the record (id or position) and the field."""

    def __init__(self, where: str, field_name: str, problem: str, fix: str = "") -> None:
        self.where = where
        self.field = field_name
        self.problem = problem
        msg = f"{where}: field '{field_name}': {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


def parse_datetime(value: Any) -> datetime:
    """Parse an ISO 8601 date/time (``2014-11-02T00:52:10``, ``...Z``, ``...+02:00``, or a date).

    Naive times are taken as UTC. Raises ``ValueError`` when the value is not parseable.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError(f"expected an ISO 8601 string, got {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Response:
    """One candidate response: its text and named attributes (votes, created, accepted, ...)."""

    text: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "attributes": dict(self.attributes)}


@dataclass
class ListRecord:
    """One prompt with its list of candidate responses (docs/methods.md#record).

    Attributes:
        id: record identifier (a StackExchange question Id, a tree id, ...).
        prompt: the prompt text (title + question body for community QA).
        responses: M >= 2 candidates (one only when labelled ``desirable``: :meth:`labelled_single`).
        ranking: optional gold order, best first, a permutation of ``range(M)``.
        scores: optional explicit rewards, one per response (higher is better).
        meta: free-form metadata (tags, source, provenance of a ranking, ...).
        dynamic_ranking: the self-supervised SeAdpra order (written by ``rankalign rank``).
        apdf: the multi-APDF matrix (M x M) written by ``rankalign rank``.
        apdf_row_max: per response i, prod_k max_j delta_k(i, j) over the L single-attribute
            APDF matrices (SeAdpra's W_r, Yang et al., arXiv:2502.12189, eq. 7), written by ``rankalign rank``.
    """

    id: str
    prompt: str
    responses: list[Response]
    ranking: list[int] | None = None
    scores: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    dynamic_ranking: list[int] | None = None
    apdf: list[list[float]] | None = None
    apdf_row_max: list[float] | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None) -> ListRecord:
        """Build and validate a record from its JSON form.

        Args:
            data: a mapping in the record shape (docs/data.md).
            where: how to name the record in errors (e.g. ``"train.jsonl line 12"``);
                the record's id is added when present.
        Raises:
            RecordError: naming the record and the offending field.
        """
        loc, rid = _locate(data, where)
        responses = _parse_responses(data.get("responses"), loc)
        meta = data.get("meta")
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise RecordError(loc, "meta", "must be an object")
        rec = cls.__new__(cls)
        rec.id = str(rid)
        rec.prompt = data.get("prompt")  # type: ignore[assignment]
        rec.responses = responses
        rec.ranking = data.get("ranking")
        rec.scores = data.get("scores")
        rec.meta = dict(meta)
        rec.dynamic_ranking = data.get("dynamic_ranking")
        rec.apdf = data.get("apdf")
        rec.apdf_row_max = data.get("apdf_row_max")
        rec.validate(where=loc)
        return rec

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; optional fields are written only when set."""
        out: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "responses": [r.to_dict() for r in self.responses],
        }
        if self.ranking is not None:
            out["ranking"] = list(self.ranking)
        if self.scores is not None:
            out["scores"] = list(self.scores)
        out["meta"] = dict(self.meta)
        if self.dynamic_ranking is not None:
            out["dynamic_ranking"] = list(self.dynamic_ranking)
        if self.apdf is not None:
            out["apdf"] = [list(row) for row in self.apdf]
        if self.apdf_row_max is not None:
            out["apdf_row_max"] = list(self.apdf_row_max)
        return out

    # ------------------------------------------------------------------ validation
    def validate(self, where: str | None = None) -> None:
        """Check every field; raise :class:`RecordError` on the first problem."""
        loc = where or f"record id={self.id!r}"
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise RecordError(loc, "prompt", "missing or empty", "every record needs a non-empty prompt string")
        if len(self.responses) < 2 and not self.labelled_single():
            raise RecordError(
                loc, "responses", f"has {len(self.responses)} response(s); a list needs at least 2",
                "drop this record or add candidates (a single response is allowed only with a "
                "desirable label, for kto)",
            )
        m = len(self.responses)
        for i, r in enumerate(self.responses):
            if not isinstance(r.text, str) or not r.text.strip():
                raise RecordError(loc, f"responses[{i}].text", "missing or empty", "every response needs text")
            for key, value in r.attributes.items():
                _check_attribute(loc, f"responses[{i}].attributes.{key}", key, value)
        for name in ("ranking", "dynamic_ranking"):
            _check_permutation(loc, name, getattr(self, name), m)
        if self.scores is not None:
            self.scores = _checked_scores(loc, self.scores, m)
        _check_apdf(loc, self.apdf, self.apdf_row_max, m)

    def labelled_single(self) -> bool:
        """A list of one response labelled ``desirable`` true/false: unpaired feedback, which only
        KTO trains on (docs/methods.md#kto-unpaired); every other list needs two responses."""
        return len(self.responses) == 1 and self.responses[0].attributes.get("desirable") is not None

    # ------------------------------------------------------------------ orders
    @property
    def num_responses(self) -> int:
        return len(self.responses)

    def community_order(self) -> list[int]:
        """Accepted answer first, then descending votes; stable (ties keep input order)."""
        def key(i: int) -> tuple[int, float]:
            a = self.responses[i].attributes
            votes = a.get("votes")
            return (0 if a.get("accepted") else 1, -(float(votes) if votes is not None else -math.inf))
        return sorted(range(self.num_responses), key=key)

    def preference_order(self, source: str = "auto") -> list[int]:
        """The order a method trains on (docs/methods.md#orders), best first.

        Args:
            source: ``"auto"`` — ``ranking`` when present, else descending ``scores``, else
                the community order (accepted first, then votes) when votes/accepted are
                present, else the input order; ``"gold"`` — ``ranking`` (error if absent);
                ``"scores"``; ``"community"``; ``"dynamic"`` — the SeAdpra ``dynamic_ranking``.
        """
        m = self.num_responses
        if source == "dynamic":
            if self.dynamic_ranking is None:
                raise RecordError(f"record id={self.id!r}", "dynamic_ranking", "missing",
                                  "run `rankalign rank` first or let the trainer compute it")
            return list(self.dynamic_ranking)
        if source == "gold":
            if self.ranking is None:
                raise RecordError(f"record id={self.id!r}", "ranking", "missing", "this source needs a gold ranking")
            return list(self.ranking)
        if source == "scores":
            if self.scores is None:
                raise RecordError(f"record id={self.id!r}", "scores", "missing", "this source needs scores")
            return sorted(range(m), key=lambda i: -self.scores[i])  # type: ignore[index]
        if source == "community":
            return self.community_order()
        if source != "auto":
            raise ValueError(f"unknown order source {source!r}; use auto, gold, scores, community or dynamic")
        if self.ranking is not None:
            return list(self.ranking)
        if self.scores is not None:
            return sorted(range(m), key=lambda i: -self.scores[i])  # type: ignore[index]
        if any("votes" in r.attributes or "accepted" in r.attributes for r in self.responses):
            return self.community_order()
        return list(range(m))

    def labels(self, order: list[int] | None = None) -> list[float]:
        """Labels psi_i for LiPO/SPO/KTO (docs/methods.md#labels): scores when present, else M - position.

        ``order`` defaults to :meth:`preference_order`; the rule is :func:`order_labels`.
        """
        return order_labels(order if order is not None else self.preference_order(), self.scores)


def order_labels(order: Sequence[int], scores: Sequence[float] | None = None) -> list[float]:
    """Labels psi_i of one list, in storage order: ``scores`` when given, else ``M - position``.

    The single owner of the label rule that LiPO (Liu et al., arXiv:2402.01878), SPO and KTO
    (Ethayarajh et al., arXiv:2402.01306) read: ``psi[order[p]] = M - p`` for the 0-based
    position p in the best-first ``order`` of M responses (the best gets M, the last 1).

    Args:
        order: best-first permutation of ``range(M)``.
        scores: explicit rewards, one per response (higher is better), or None.
    Returns:
        ``[M]`` floats, index i = response i.
    """
    if scores is not None:
        return [float(s) for s in scores]
    m = len(order)
    psi = [0.0] * m
    for pos, idx in enumerate(order):
        psi[idx] = float(m - pos)
    return psi


def _locate(data: Any, where: str | None) -> tuple[str, Any]:
    """``(how errors name the record, its id)``; checks the object, its keys and its id.

    Raises:
        RecordError: not an object, an unknown key, a missing/empty id or one of the wrong type.
    """
    loc = where or "record"
    if not isinstance(data, dict):
        raise RecordError(loc, "<record>", f"expected a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if rid is not None:
        loc = f"{loc} (id={rid!r})" if where else f"record id={rid!r}"
    unknown = sorted(set(data) - set(RECORD_KEYS))
    if unknown:
        raise RecordError(
            loc, unknown[0], f"unknown key(s) {unknown}",
            f"valid keys are {list(RECORD_KEYS)}; put extra information under 'meta'",
        )
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        raise RecordError(loc, "id", "missing or empty", "give every record a unique 'id'")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise RecordError(loc, "id", f"must be a string or integer, got {type(rid).__name__}")
    return loc, rid


def _parse_responses(raw_responses: Any, loc: str) -> list[Response]:
    """The ``responses`` list as :class:`Response` objects (a bare string is its text).

    Raises:
        RecordError: not a list, an entry that is not an object, an unknown key, attributes
            that are not an object. Texts and attribute values are checked by ``validate``.
    """
    if not isinstance(raw_responses, list):
        raise RecordError(loc, "responses", "missing or not a list", "expected a list of {text, attributes}")
    responses: list[Response] = []
    for i, r in enumerate(raw_responses):
        if isinstance(r, str):
            r = {"text": r}
        if not isinstance(r, dict):
            raise RecordError(loc, f"responses[{i}]", f"expected an object, got {type(r).__name__}")
        extra = sorted(set(r) - {"text", "attributes"})
        if extra:
            raise RecordError(
                loc, f"responses[{i}]", f"unknown key(s) {extra}",
                "a response has only 'text' and 'attributes'; move the rest into 'attributes'",
            )
        attrs = r.get("attributes")
        attrs = {} if attrs is None else attrs
        if not isinstance(attrs, dict):
            raise RecordError(loc, f"responses[{i}].attributes", "must be an object")
        responses.append(Response(text=r.get("text"), attributes=dict(attrs)))  # type: ignore[arg-type]
    return responses


def _check_attribute(loc: str, fname: str, key: str, value: Any) -> None:
    """Attributes with a fixed meaning: votes a finite number, created a date, accepted a boolean
    (``None`` = absent); any other attribute is free-form."""
    if value is None:
        return
    if key in NUMERIC_ATTRIBUTES:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise RecordError(loc, fname, f"must be a finite number, got {value!r}")
    elif key in DATE_ATTRIBUTES:
        try:
            parse_datetime(value)
        except (ValueError, TypeError) as exc:
            raise RecordError(loc, fname, f"unparseable date {value!r}: {exc}",
                              "use ISO 8601, e.g. 2014-11-02T00:52:10") from None
    elif key in BOOL_ATTRIBUTES:
        if isinstance(value, bool) or (_is_number(value) and value in (0, 1)):
            return
        raise RecordError(loc, fname, f"must be true or false, got {value!r}",
                          "write a JSON boolean, not a string")


def _check_permutation(loc: str, name: str, perm: Any, m: int) -> None:
    """``perm`` (``ranking`` or ``dynamic_ranking``) is None or a permutation of ``range(m)``."""
    if perm is None:
        return
    if (not isinstance(perm, list) or any(not isinstance(x, int) or isinstance(x, bool) for x in perm)
            or sorted(perm) != list(range(m))):
        raise RecordError(
            loc, name, f"{perm!r} is not a permutation of 0..{m - 1}",
            "list every response index exactly once, best first",
        )


def _checked_scores(loc: str, scores: Any, m: int) -> list[float]:
    """One finite number per response, as floats."""
    if not isinstance(scores, list) or len(scores) != m:
        raise RecordError(loc, "scores", f"needs one score per response ({m})")
    for i, s in enumerate(scores):
        if not _is_number(s) or not math.isfinite(float(s)):
            raise RecordError(loc, f"scores[{i}]", f"must be a finite number, got {s!r}")
    return [float(s) for s in scores]


def _check_apdf(loc: str, apdf: Any, row_max: Any, m: int) -> None:
    """``apdf`` an m x m matrix and ``apdf_row_max`` m values, all finite (each may be None)."""
    if apdf is not None:
        ok = isinstance(apdf, list) and len(apdf) == m and all(
            isinstance(row, list) and len(row) == m
            and all(_is_number(v) and math.isfinite(float(v)) for v in row) for row in apdf
        )
        if not ok:
            raise RecordError(loc, "apdf", f"must be an {m}x{m} matrix of finite numbers",
                              "re-run `rankalign rank` to recompute it, or remove the field")
    if row_max is not None:
        if (not isinstance(row_max, list) or len(row_max) != m
                or not all(_is_number(v) and math.isfinite(float(v)) for v in row_max)):
            raise RecordError(loc, "apdf_row_max", f"must be a list of {m} finite numbers",
                              "re-run `rankalign rank` to recompute it, or remove the field")


def pairwise_to_list(row: dict[str, Any], *, where: str = "row", index: int = 0) -> ListRecord:
    """Convert a pairwise row ``{prompt, chosen, rejected[, id]}`` to a list of 2, chosen first.

    The gold ranking is ``[0, 1]``. Extra keys of the row go to ``meta``.
    """
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            raise RecordError(where, key, "missing", "a pairwise row needs prompt, chosen and rejected")
    meta = {k: v for k, v in row.items() if k not in ("id", "prompt", "chosen", "rejected")}
    rid = row.get("id", f"pair-{index}")
    return ListRecord.from_dict(
        {
            "id": rid,
            "prompt": row["prompt"],
            "responses": [{"text": row["chosen"]}, {"text": row["rejected"]}],
            "ranking": [0, 1],
            "meta": meta,
        },
        where=where,
    )
