"""Micro-batches filled to a token budget; padding reported; the prompt tokenised once per list."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.errors import ConfigError
from rankalign.training.batching import (
    TokenBudgetBatchSampler,
    batch_cost,
    packed_width,
    padding_metrics,
    token_budget_batches,
)
from rankalign.training.logps import EncodedList, ListCollator, encode_list
from training_tiny import tiny_model, tiny_records, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(prompt_len: int, response_lens: list[int]) -> EncodedList:
    p = list(range(1, prompt_len + 1))
    return EncodedList(prompt_ids=[p] * len(response_lens), response_ids=[[9] * n for n in response_lens],
                       order=list(range(len(response_lens))), psi=[0.0] * len(response_lens))


def test_costs_by_hand() -> None:
    a, b = _item(4, [2, 3]), _item(2, [1, 1, 5])
    assert packed_width(a) == 4 + 2 + 3 and packed_width(b) == 2 + 7
    assert batch_cost([a, b], prefix_sharing=True) == 2 * 9
    # flat: 2 lists x 3 rows (b has 3 responses) x the longest sequence (4 + 3 = 7)
    assert batch_cost([a, b], prefix_sharing=False) == 2 * 3 * 7
    tails = EncodedList(prompt_ids=[[1, 2, 3], [2, 3]], response_ids=[[9], [9, 9]], order=[0, 1], psi=[0.0, 0.0])
    assert packed_width(tails) == 3 + 2 + 1 + 2  # two distinct prompts, each packed once


def test_batches_fill_the_budget_shortest_first() -> None:
    widths = [10, 3, 7, 3, 12, 5]  # packed widths (prompt 1 + one response)
    items = [_item(1, [w - 1]) for w in widths]
    batches = token_budget_batches(items, 12, prefix_sharing=True)
    # sorted: 3(1) 3(3) 5(5) 7(2) 10(0) 12(4); [3,3,5]: 3*5 = 15 > 12 -> [1,3] (2*3 = 6), [5,2] (2*7 = 14 > 12) ...
    assert batches == [[1, 3], [5], [2], [0], [4]]
    assert all(batch_cost([items[i] for i in b], True) <= 12 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(6))
    big = token_budget_batches(items, 40, prefix_sharing=True)
    assert big == [[1, 3, 5, 2], [0, 4]]  # 4 * 7 = 28 <= 40; + 10 -> 5 * 10 = 50 > 40


def test_min_lists_and_an_oversized_list() -> None:
    items = [_item(1, [50]), _item(1, [2]), _item(1, [2])]
    assert token_budget_batches(items, 8, prefix_sharing=True) == [[1, 2], [0]]  # 51 > 8: alone
    # KTO: two lists at least, even over the budget; a short remainder joins the batch before
    assert token_budget_batches(items, 8, prefix_sharing=True, min_lists=2) == [[1, 2, 0]]


def test_sampler_order_changes_per_epoch_and_covers_every_list_once() -> None:
    items = [_item(1, [w]) for w in range(1, 21)]
    sampler = TokenBudgetBatchSampler(items, 30, prefix_sharing=True, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) > 3
    assert sorted(i for b in first for i in b) == list(range(20))
    assert list(sampler) == first  # the same epoch: the same order (a resumed run skips the same batches)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(map(tuple, second)) == sorted(map(tuple, first))  # same batches, new order
    ordered = TokenBudgetBatchSampler(items, 30, shuffle=False)
    assert list(ordered) == ordered.batches


def test_padding_metrics_by_hand() -> None:
    items = [_item(2, [1, 3]), _item(1, [1])]  # packed rows of 6 and 2 tokens
    batch = ListCollator(0)(items)
    got = {k: float(v) for k, v in padding_metrics(batch).items()}
    assert got == {"batch/tokens": 8.0, "batch/padded_tokens": 12.0, "batch/padding_fraction": pytest.approx(1 / 3),
                   "batch/lists": 2.0}
    flat = ListCollator(0, prefix_sharing=False)(items)  # 4 rows x 5 tokens; real 3 + 5 + 2 (+ a padded candidate)
    got = {k: float(v) for k, v in padding_metrics(flat).items()}
    assert got["batch/tokens"] == 10.0 and got["batch/padded_tokens"] == 20.0


def test_prompt_tokenised_once_per_list() -> None:
    tok = tiny_tokenizer()
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(tok, name)

        def __call__(self, text: str, **kw: Any) -> Any:
            calls.append(text)
            return tok(text, **kw)

    prompts, _ = encode_list(Counting(), "how to brew coffee ?", ["use hot water", "no", "yes"],
                                     max_length=64, max_prompt_length=32)
    assert len(calls) == 4  # the prompt part once + 3 responses
    assert prompts[0] is prompts[1] is prompts[2]  # one shared prompt object
    assert prompts[0] == tok(calls[0], add_special_tokens=False)["input_ids"]


def test_training_with_a_token_budget_logs_padding(tmp_path: Path) -> None:
    from rankalign.data.record import ListRecord
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    tok = tiny_tokenizer()
    records = [ListRecord.from_dict(r) for r in tiny_records(6)]
    cfg = ListwiseConfig(method="seadpra", output_dir=str(tmp_path / "run"), num_train_epochs=1, max_tokens_per_batch=80,
                         learning_rate=1e-3, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                         max_length=40, max_prompt_length=20, seed=0, logging_steps=1)
    res = train(cfg, records, model=tiny_model(len(tok)), tokenizer=tok)
    steps = [row for row in res.log if row.get("type") == "train" and "loss" in row]
    metrics = [row["metrics"] for row in steps]
    assert all(m["batch/padded_tokens"] <= 80 for m in metrics)
    assert sum(m["batch/lists"] for m in metrics) == 6  # every list once in the epoch
    assert len({m["batch/lists"] for m in metrics}) > 1  # the list count varies with length
    assert all(0 <= m["batch/padding_fraction"] < 1 for m in metrics)
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert any("batch/padding_fraction" in row.get("metrics", {}) for row in lines)


def test_budget_below_max_length_is_a_config_error(tmp_path: Path) -> None:
    from rankalign.training.config import ListwiseConfig

    with pytest.raises(ConfigError, match="max_tokens_per_batch: 100 must be >= max_length"):
        ListwiseConfig(method="seadpra", output_dir=str(tmp_path), max_length=128, max_prompt_length=64,
                       max_tokens_per_batch=100)


def test_padding_metrics_equal_the_mask_count() -> None:
    """Against a naive count: every packed column with segment >= 0 is a real token."""
    tok = tiny_tokenizer()
    items = []
    for r in tiny_records(4):
        p, resp = encode_list(tok, r["prompt"], [x["text"] for x in r["responses"]], max_length=40, max_prompt_length=20)
        items.append(EncodedList(prompt_ids=p, response_ids=resp, order=list(range(len(resp))), psi=[0.0] * len(resp)))
    batch = ListCollator(tok.pad_token_id)(items)
    want = sum(packed_width(it) for it in items)
    assert float(padding_metrics(batch)["batch/tokens"]) == want
    assert batch["packed_input_ids"].shape == (4, max(packed_width(it) for it in items))
    assert torch.equal(batch["packed_segment"] >= 0,
                       torch.arange(batch["packed_input_ids"].shape[1])[None] <
                       torch.tensor([packed_width(it) for it in items])[:, None])
