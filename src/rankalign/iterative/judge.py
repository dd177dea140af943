"""The implicit-reward judge: ``beta * (logp_policy(y) - logp_ref(y))`` for responses, in batches.

SPA labels its self-generated pairs with it (Kim et al., arXiv:2406.04412, eq. 7-8), and
:func:`judge_agreement` measures how often it agrees with held-out gold labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankalign.data.record import ListRecord


def implicit_rewards(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[str],
                     responses: Sequence[Sequence[str]], *, beta: float, max_length: int = 512,
                     max_prompt_length: int = 256, batch_size: int = 4, show_progress: bool = False
                     ) -> list[list[float]]:
    """``beta * (logp_policy - logp_reference)`` of every response of every prompt.

    Args:
        policy, reference: causal LMs sharing ``tokenizer``.
        prompts: P prompts; ``responses[i]`` the responses of prompt i.
        beta: inverse temperature (DPO, arXiv:2305.18290, eq. 5).
        max_length, max_prompt_length: truncation, as in training (the same tokenisation).
        batch_size: prompts per forward.
    Returns:
        P lists of rewards, one per response.
    """
    import torch
    from tqdm.auto import tqdm

    from rankalign.training.logps import EncodedList, ListCollator, encode_list, list_logps

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    collate = ListCollator(tokenizer.pad_token_id)
    out: list[list[float]] = []
    modes = [(m, m.training) for m in (policy, reference)]
    for m, _ in modes:
        m.eval()
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="judging", unit="batch", disable=not show_progress):
            items = []
            for prompt, resp in zip(prompts[start:start + batch_size], responses[start:start + batch_size]):
                p_ids, r_ids = encode_list(tokenizer, prompt, list(resp), max_length=max_length,
                                           max_prompt_length=max_prompt_length)
                items.append(EncodedList(prompt_ids=p_ids, response_ids=r_ids, order=list(range(len(resp))),
                                         psi=[0.0] * len(resp)))
            batch = collate(items)
            device = next(policy.parameters()).device
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.no_grad():
                pol = list_logps(policy, batch)[0]  # [B, M]
                ref = list_logps(reference, batch)[0]  # [B, M]
            rewards = (beta * (pol - ref)).double().cpu()
            out.extend(rewards[i, :len(it.response_ids)].tolist() for i, it in enumerate(items))
    finally:
        for m, was in modes:
            m.train(was)
    return out


def pair_agreement(rewards: Sequence[float], gold_order: Sequence[int]) -> float:
    """Fraction of gold-ordered pairs (a above b) the rewards order the same way (a tie counts 1/2)."""
    pairs = [(gold_order[i], gold_order[j]) for i in range(len(gold_order)) for j in range(i + 1, len(gold_order))]
    hits = [1.0 if rewards[a] > rewards[b] else 0.5 if rewards[a] == rewards[b] else 0.0 for a, b in pairs]
    return sum(hits) / len(hits)


def judge_agreement(policy: Any, reference: Any, tokenizer: Any, records: Sequence[ListRecord], *, beta: float,
                    max_length: int = 512, max_prompt_length: int = 256, batch_size: int = 4) -> dict[str, Any]:
    """How often the implicit-reward judge agrees with the records' gold order.

    Returns:
        ``{"agreement", "ci_low", "ci_high", "n"}``: the mean per-record pair agreement
        (:func:`pair_agreement`, one pair per record for pairs) with its 95% percentile
        bootstrap interval (:func:`rankalign.evaluation.metrics.estimate`).
    """
    from rankalign.evaluation.metrics import estimate

    rewards = implicit_rewards(policy, reference, tokenizer, [r.prompt for r in records],
                               [[x.text for x in r.responses] for r in records], beta=beta, max_length=max_length,
                               max_prompt_length=max_prompt_length, batch_size=batch_size)
    per = [pair_agreement(rw, r.preference_order("auto")) for rw, r in zip(rewards, records)]
    est = estimate(per)
    return {"agreement": est.mean, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n}
