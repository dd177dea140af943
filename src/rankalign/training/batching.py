"""Micro-batches filled to a token budget (``max_tokens_per_batch``) instead of a fixed list count.

Lists differ a lot in length (a one-line answer next to a page of code), and a micro-batch is
padded to its longest member, so a fixed number of lists per micro-batch either pads a lot
or leaves memory unused. Here the lists are sorted by their padded size and cut greedily into
micro-batches whose forward input stays within the budget:

* prefix sharing on: a list is one packed row of ``P + sum_j R_j`` tokens; a micro-batch of
  B lists costs ``B * max_b(row_b)`` tokens;
* prefix sharing off: a list is M rows of ``max_j(P_j + R_j)`` tokens; a micro-batch costs
  ``(B * max_b M_b) * max_b,j(P_j + R_j)``.

A list over the budget by itself is a micro-batch alone (``min_lists`` lists at least, e.g. 2
for KTO, whose z0 pairs each list with another). The micro-batches are fixed for the run
(lists of similar length together); their order is shuffled every epoch (seed + epoch), so a
resumed run sees the same order. The forward's real and padded token counts are logged per
step (``batch/tokens``, ``batch/padded_tokens``, ``batch/padding_fraction`` in
``train_log.jsonl``), with or without a budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from rankalign.training.logps import EncodedList


def packed_width(item: EncodedList) -> int:
    """Tokens of the list as one packed row: each distinct prompt once, plus every response."""
    return sum(len(p) for p in {tuple(p) for p in item.prompt_ids}) + sum(len(r) for r in item.response_ids)


def batch_cost(items: Sequence[EncodedList], prefix_sharing: bool) -> int:
    """Padded tokens of the forward input of a micro-batch of ``items``."""
    if prefix_sharing:
        return len(items) * max(packed_width(it) for it in items)
    m = max(len(it.response_ids) for it in items)
    width = max(len(p) + len(r) for it in items for p, r in zip(it.prompt_ids, it.response_ids))
    return len(items) * m * width


def token_budget_batches(items: Sequence[EncodedList], max_tokens: int, *, prefix_sharing: bool,
                         min_lists: int = 1) -> list[list[int]]:
    """Indices of ``items`` cut into micro-batches of at most ``max_tokens`` padded tokens.

    Lists are taken shortest first (by their own padded size), so each micro-batch holds lists
    of similar length; a batch is closed when the next list would pass the budget and it
    already holds ``min_lists`` lists. The last batch takes the remainder; if it has fewer than
    ``min_lists`` lists it is merged into the one before.
    """
    order = sorted(range(len(items)), key=lambda i: (batch_cost([items[i]], prefix_sharing), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and len(current) >= min_lists and \
                batch_cost([items[k] for k in [*current, i]], prefix_sharing) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        if len(current) < min_lists and batches:
            batches[-1].extend(current)
        else:
            batches.append(current)
    return batches


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields the micro-batches of :func:`token_budget_batches`, in a new order every epoch.

    Args:
        items: the dataset's lists.
        max_tokens: the budget (padded tokens of a micro-batch's forward input).
        prefix_sharing: whether the collator packs lists (changes the cost).
        min_lists: fewest lists in a micro-batch.
        shuffle: shuffle the micro-batches' order each epoch (seed + epoch); else by length.
        seed: the shuffle seed.
    """

    def __init__(self, items: Sequence[EncodedList], max_tokens: int, *, prefix_sharing: bool = True,
                 min_lists: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        self.batches = token_budget_batches(items, max_tokens, prefix_sharing=prefix_sharing, min_lists=min_lists)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.sampler = self  # accelerate's BatchSamplerShard forwards set_epoch to `.sampler`

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from (list(b) for b in self.batches)
            return
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        for k in torch.randperm(len(self.batches), generator=g).tolist():
            yield list(self.batches[k])


def padding_metrics(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Real and padded tokens of a collated batch's forward input (packed rows when present);
    empty for a batch without the collator's keys."""
    if "list_mask" not in batch:
        return {}
    if "packed_segment" in batch:
        real = (batch["packed_segment"] >= 0).sum()
        padded = batch["packed_segment"].numel()
    else:
        real = batch["attention_mask"][batch["list_mask"].reshape(-1)].sum()  # padded candidates are padding
        padded = batch["attention_mask"].numel()
    real_t = torch.as_tensor(real, dtype=torch.float32)
    padded_t = torch.tensor(float(padded))
    return {"batch/tokens": real_t, "batch/padded_tokens": padded_t,
            "batch/padding_fraction": 1.0 - real_t / padded_t, "batch/lists": torch.tensor(float(batch["list_mask"].shape[0]))}
