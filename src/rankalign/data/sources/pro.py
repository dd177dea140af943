"""PRO's own training files: ``{prefix, suffix, reward, sft_index}`` lists, ranked by reward.

Song et al., "Preference Ranking Optimization for Human Alignment", arXiv:2306.17492
(AAAI 2024); the file format is that of its public code (DAMO-ConvAI/PRO,
``train/*_preprocess_data``).
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
    to_number,
)
from rankalign.data.sources.registry import NoOptions, register_source


def _prefix_text(prefix: Any, where: str, i: int) -> str:
    """One PRO prefix as text: a string, or a list of turns joined with the ``<|prompter|>``/
    ``<|assistant|>`` markers replaced by HH's ``"\\n\\nHuman: "``/``"\\n\\nAssistant: "``."""
    if isinstance(prefix, list) and all(isinstance(p, str) for p in prefix):
        text = "".join(prefix)
    elif isinstance(prefix, str):
        text = prefix
    else:
        raise RecordError(where, f"prefix[{i}]", "expected a string or a list of strings")
    return text.replace("<|prompter|>", "\n\nHuman: ").replace("<|assistant|>", "\n\nAssistant: ").rstrip()


@register_source("pro")
def load_pro(
    source: Source, options: NoOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """PRO's prefix/suffix/reward training files -> scored lists in the file's (reward) order.

    Each line is ``{"prefix": [p_1..p_n], "suffix": [s_1..s_n], "reward": [r_1..r_n],
    "sft_index": 0, "meta": <source>}``: candidate ``k`` is ``prefix[k] + suffix[k]``; a
    prefix is a string or a list of turn strings marked ``<|prompter|>``/``<|assistant|>``
    (rendered as ``"\\n\\nHuman: "``/``"\\n\\nAssistant: "``, trailing space stripped, as
    PRO's data collator does). Every candidate must share the prefix (else a counted skip
    ``"prefixes differ"``). PRO trains on the file order (y^1 best; its preprocessing
    sorts candidates by reward), so ``ranking`` = ``[0..n-1]`` and ``scores`` = ``reward``
    (the temperatures of PRO's eq. 8-9; files made without a reward model carry all 1.0).
    ``sft_index`` and the source go to ``meta``. ``id`` = ``<stem>-<line>``.
    """
    stem = file_stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        prefixes = get_field(row, "prefix", list, where)
        suffixes = get_field(row, "suffix", list, where)
        if len(prefixes) != len(suffixes):
            raise RecordError(where, "suffix", f"has {len(suffixes)} items for {len(prefixes)} prefixes",
                              "prefix and suffix need one entry per candidate")
        prompts = {_prefix_text(p, where, i) for i, p in enumerate(prefixes)}
        if len(prompts) > 1:
            raise Skip("prefixes differ", f"{where}: candidates have {len(prompts)} different prefixes")
        reward = row.get("reward")
        scores = None
        if reward is not None:
            if not isinstance(reward, list) or len(reward) != len(suffixes):
                raise RecordError(where, "reward", f"needs one number per candidate ({len(suffixes)})")
            scores = [to_number(r, where, f"reward[{i}]") for i, r in enumerate(reward)]
        for i, s in enumerate(suffixes):
            if not isinstance(s, str):
                raise RecordError(where, f"suffix[{i}]", f"expected a string, got {type(s).__name__}")
        require_distinct(suffixes, where)
        meta: dict[str, Any] = {"source": "pro"}
        if row.get("sft_index") is not None:
            meta["sft_index"] = row["sft_index"]
        if isinstance(row.get("meta"), str):
            meta["origin"] = row["meta"]
        rec: dict[str, Any] = {
            "id": row.get("id", f"{stem}-{row_number(where)}"),
            "prompt": prompts.pop() if prompts else "",
            "responses": [{"text": s.strip()} for s in suffixes],
            "ranking": list(range(len(suffixes))),
            "meta": meta,
        }
        if scores is not None:
            rec["scores"] = scores
        return [ListRecord.from_dict(rec, where=where)]

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
