"""Anthropic HH-RLHF: ``{chosen, rejected}`` dialogues -> lists of 2.

Bai et al., "Training a Helpful and Harmless Assistant with Reinforcement Learning from
Human Feedback", arXiv:2204.05862.
"""

from __future__ import annotations

from typing import Any

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources.base import (
    Skip,
    Source,
    convert_rows,
    file_stem,
    get_field,
    require_distinct,
    row_number,
)
from rankalign.data.sources.registry import NoOptions, register_source

_ASSISTANT = "\n\nAssistant:"


def split_dialogue(text: str, where: str, field_name: str) -> tuple[str, str]:
    """Split an HH dialogue at its last ``"\\n\\nAssistant:"``: (dialogue so far + marker, reply)."""
    cut = text.rfind(_ASSISTANT)
    if cut < 0:
        raise RecordError(where, field_name, f"has no {_ASSISTANT!r} turn",
                          "HH-RLHF dialogues alternate '\\n\\nHuman:' and '\\n\\nAssistant:' turns")
    end = cut + len(_ASSISTANT)
    return text[:end], text[end:].strip()


@register_source("hh_rlhf")
def load_hh_rlhf(
    source: Source, options: NoOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """Anthropic HH-RLHF ``{chosen, rejected}`` dialogues -> lists of 2, chosen first.

    Each dialogue is split at its last ``"\\n\\nAssistant:"``: ``prompt`` is the dialogue up
    to and including that marker (the model is cued to answer, as in the data set's own
    convention and the ``"\\n\\nHuman: ...\\n\\nAssistant:"`` prefixes of PRO, Song et al.,
    arXiv:2306.17492), the response is the text after it, stripped. Both dialogues must
    give the same prompt, else the row is a counted skip ``"prompts differ"``. ``ranking``
    is ``[0, 1]`` (chosen first). ``id`` = ``<file stem>-<line or row number>`` (the data
    set has no ids). An empty reply fails validation (``"empty response text"``);
    identical replies are skipped (``"identical responses"``).
    """
    stem = file_stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        chosen = get_field(row, "chosen", str, where)
        rejected = get_field(row, "rejected", str, where)
        p_chosen, r_chosen = split_dialogue(chosen, where, "chosen")
        p_rejected, r_rejected = split_dialogue(rejected, where, "rejected")
        if p_chosen != p_rejected:
            raise Skip("prompts differ", f"{where}: chosen and rejected differ before the last assistant turn")
        if r_chosen and r_chosen == r_rejected:
            require_distinct([r_chosen, r_rejected], where)
        return [ListRecord.from_dict({
            "id": row.get("id", f"{stem}-{row_number(where)}"),
            "prompt": p_chosen,
            "responses": [{"text": r_chosen}, {"text": r_rejected}],
            "ranking": [0, 1],
            "meta": {"source": "hh_rlhf"},
        }, where=where)]

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
