"""Tokenise lists, collate them, and compute per-response log-probabilities.

One list-wise example = one prompt and M responses. Each (prompt, response) pair is one
sequence: the tokenizer's chat template with the prompt as the user turn and the response
as the assistant turn (plain ``prompt + "\\n\\n" + response + eos`` when the tokenizer has
no template). Only response tokens are scored.

Shapes: a micro-batch holds B lists padded to M candidates; the collator flattens them to
``input_ids [B*M, T]`` so the policy runs ONE forward per micro-batch; the log-probs come
back as ``[B, M]`` (padded candidates masked).

Reduction rule: ``logp(y)`` is the SUM of the response's token log-probs; the token mean
``avg(y) = logp(y) / |y|`` is derived from it (``ListLogps.avg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: separator between prompt and response when the tokenizer has no chat template.
PLAIN_SEPARATOR = "\n\n"


@dataclass
class TruncationStats:
    """What truncation cut, counted over every tokenised (prompt, response) sequence."""

    sequences: int = 0
    prompts_cut: int = 0
    responses_cut: int = 0
    prompt_tokens_cut: int = 0
    response_tokens_cut: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "sequences": self.sequences,
            "prompts_cut": self.prompts_cut,
            "responses_cut": self.responses_cut,
            "prompt_tokens_cut": self.prompt_tokens_cut,
            "response_tokens_cut": self.response_tokens_cut,
        }

    def summary(self) -> str:
        return (f"truncation: {self.prompts_cut}/{self.sequences} prompts cut ({self.prompt_tokens_cut} tokens), "
                f"{self.responses_cut}/{self.sequences} responses cut ({self.response_tokens_cut} tokens)")


def split_texts(tokenizer: Any, prompt: str, response: str) -> tuple[str, str]:
    """The prompt part and the response part of one sequence, as text.

    With a chat template: the prompt part is the template applied to the user turn with the
    generation prompt; the response part is what the full two-turn conversation adds after
    it. Without one: ``prompt + "\\n\\n"`` and ``response + eos``.
    """
    template = getattr(tokenizer, "chat_template", None)
    if template:
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(head):
            return head, full[len(head):]
        # templates that re-render earlier turns differently: fall back to the plain tail
        return head, response + (tokenizer.eos_token or "")
    return prompt + PLAIN_SEPARATOR, response + (tokenizer.eos_token or "")


def truncate(
    prompt_ids: list[int],
    response_ids: list[int],
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> tuple[list[int], list[int]]:
    """Cut a (prompt, response) pair to fit.

    The prompt is cut from the LEFT to ``max_prompt_length`` (its end, next to the response,
    is kept); then the response is cut from the RIGHT so the total fits ``max_length``; a
    response keeps at least one token (the prompt is cut further from the left instead).

    Raises:
        ValueError: ``max_length < 2`` (no room for one prompt and one response token) or an
            empty response.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not response_ids:
        raise ValueError("response tokenised to zero tokens")
    p, r = list(prompt_ids), list(response_ids)
    p0, r0 = len(p), len(r)
    if len(p) > max_prompt_length:
        p = p[len(p) - max_prompt_length:] if max_prompt_length > 0 else []
    if len(p) + len(r) > max_length:
        r = r[: max(1, max_length - len(p))]
    if len(p) + len(r) > max_length:  # the response is down to its minimum; cut the prompt more
        keep = max_length - len(r)
        p = p[len(p) - keep:] if keep > 0 else []
    if stats is not None:
        stats.sequences += 1
        if len(p) < p0:
            stats.prompts_cut += 1
            stats.prompt_tokens_cut += p0 - len(p)
        if len(r) < r0:
            stats.responses_cut += 1
            stats.response_tokens_cut += r0 - len(r)
    return p, r


@dataclass
class EncodedList:
    """One tokenised list: per response the prompt and response token ids, plus targets.

    ``order`` is best first; ``scores``/``psi`` one per response; ``apdf`` M x M or None;
    ``apdf_row_max`` (SeAdpra's W_r) one per response or None.
    ``prompt_ids`` holds the list's prompt once per response (after truncation each response
    may keep a different prompt tail, so it is stored per response; equal prompts are one
    shared list object). ``reference_logps``: the reference model's summed log-prob of each
    response when cached before training (:mod:`.ref_cache`), else None. ``desirable``: 1/0
    per response, explicit unpaired feedback for KTO (docs/methods.md#kto-unpaired), or None.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    order: list[int]
    psi: list[float]
    scores: list[float] | None = None
    apdf: list[list[float]] | None = None
    apdf_row_max: list[float] | None = None
    reference_logps: list[float] | None = None
    desirable: list[int] | None = None


def encode_list(
    tokenizer: Any,
    prompt: str,
    responses: Sequence[str],
    *,
    max_length: int,
    max_prompt_length: int,
    stats: TruncationStats | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Tokenise one prompt with each of its responses.

    Returns:
        ``(prompt_ids per response, response_ids per response)``, both truncated. The prompt
        part is tokenised once per list (it is the same text for every response); responses
        whose truncated prompts are equal share one list object.
    """
    prompts, resps = [], []
    head_ids: dict[str, list[int]] = {}
    kept: dict[tuple[int, ...], list[int]] = {}
    for text in responses:
        head, tail = split_texts(tokenizer, prompt, text)
        if head not in head_ids:
            head_ids[head] = tokenizer(head, add_special_tokens=False)["input_ids"]
        r = tokenizer(tail, add_special_tokens=False)["input_ids"]
        if not r:
            r = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id]
        p, r = truncate(head_ids[head], r, max_length, max_prompt_length, stats)
        prompts.append(kept.setdefault(tuple(p), p))
        resps.append(r)
    return prompts, resps


def _pad_rows(rows: list[list[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class ListCollator:
    """Collate :class:`EncodedList` items into one flat, right-padded batch.

    Output keys (B lists, M = longest list, N = B*M, T = longest sequence):
        ``input_ids [N, T]``, ``attention_mask [N, T]``, ``response_mask [N, T]`` (True at
        response tokens, False at prompt/padding and at padded candidates), ``list_mask
        [B, M]``, ``order [B, M]``, ``psi [B, M]``, ``scores [B, M]`` (only when every list
        has scores), ``apdf [B, M, M]`` and ``apdf_row_max [B, M]`` (only when every list
        has one), ``desirable [B, M]`` (1/0 labels, -1 where a list has none; only when some
        list has them) and, with
        ``mismatched=True``, ``mismatched_input_ids/attention_mask/response_mask [N, T']``:
        each response of list b after the prompt of another list of the micro-batch whose
        prompt differs from list b's (:func:`mismatched_partners`; KTO's z0 estimate,
        Ethayarajh et al., arXiv:2402.01306). These keys are absent when no such pair exists
        (one list, or every list of the micro-batch has the same prompt).

    A padded candidate is a single pad token with attention 1 (so no row is all-masked)
    and no response token, so its log-prob is 0 and it is masked out by ``list_mask``.

    With ``prefix_sharing=True`` (the default) the batch also holds each list packed into one
    row ``[prompt, r1, ..., rM]`` (``packed_*`` keys, :func:`~rankalign.training.packing.pack_lists`),
    which :func:`list_logps` scores in one forward where the model takes a 4-D mask; the flat
    keys stay for models that do not (and for the mismatched pairs). ``reference_logps [B, M]``
    is added when every list carries cached reference log-probs (:mod:`.ref_cache`).
    """

    def __init__(self, pad_token_id: int, *, mismatched: bool = False, prefix_sharing: bool = True) -> None:
        self.pad_token_id = int(pad_token_id)
        self.mismatched = mismatched
        self.prefix_sharing = prefix_sharing

    def _flatten(self, prompts: list[list[list[int]]], responses: list[list[list[int]]], m: int
                 ) -> dict[str, Tensor]:
        ids, resp = [], []
        for p_list, r_list in zip(prompts, responses):
            for j in range(m):
                if j < len(r_list):
                    ids.append(p_list[j] + r_list[j])
                    resp.append([0] * len(p_list[j]) + [1] * len(r_list[j]))
                else:
                    ids.append([self.pad_token_id])
                    resp.append([0])
        lengths = torch.tensor([len(x) for x in ids])
        input_ids = _pad_rows(ids, self.pad_token_id)  # [N, T]
        attention = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]  # [N, T]
        response_mask = _pad_rows(resp, 0).bool()  # [N, T]
        return {"input_ids": input_ids, "attention_mask": attention.long(), "response_mask": response_mask}

    def __call__(self, items: list[EncodedList]) -> dict[str, Tensor]:
        b = len(items)
        m = max(len(it.response_ids) for it in items)
        batch = self._flatten([it.prompt_ids for it in items], [it.response_ids for it in items], m)
        list_mask = torch.zeros(b, m, dtype=torch.bool)
        order = torch.arange(m).repeat(b, 1)
        psi = torch.zeros(b, m)
        for i, it in enumerate(items):
            k = len(it.response_ids)
            list_mask[i, :k] = True
            order[i, :k] = torch.tensor(it.order)
            psi[i, :k] = torch.tensor(it.psi, dtype=torch.float)
        batch.update(list_mask=list_mask, order=order, psi=psi)
        if self.prefix_sharing:
            from rankalign.training.packing import pack_lists

            batch.update(pack_lists([it.prompt_ids for it in items], [it.response_ids for it in items],
                                    self.pad_token_id))
        if all(it.reference_logps is not None for it in items):
            ref = torch.zeros(b, m)
            for i, it in enumerate(items):
                ref[i, : len(it.reference_logps)] = torch.tensor(it.reference_logps, dtype=torch.float)  # type: ignore[arg-type]
            batch["reference_logps"] = ref
        if all(it.scores is not None for it in items):
            scores = torch.zeros(b, m)
            for i, it in enumerate(items):
                scores[i, : len(it.scores)] = torch.tensor(it.scores, dtype=torch.float)  # type: ignore[arg-type]
            batch["scores"] = scores
        if all(it.apdf is not None for it in items):
            apdf = torch.zeros(b, m, m)
            for i, it in enumerate(items):
                k = len(it.response_ids)
                apdf[i, :k, :k] = torch.tensor(it.apdf, dtype=torch.float)
            batch["apdf"] = apdf
        if any(it.desirable is not None for it in items):
            desirable = torch.full((b, m), -1, dtype=torch.long)  # -1: no label (a list without them, padding)
            for i, it in enumerate(items):
                if it.desirable is not None:
                    desirable[i, : len(it.desirable)] = torch.tensor(it.desirable, dtype=torch.long)
            batch["desirable"] = desirable
        if all(it.apdf_row_max is not None for it in items):
            row_max = torch.zeros(b, m)
            for i, it in enumerate(items):
                row_max[i, : len(it.apdf_row_max)] = torch.tensor(it.apdf_row_max, dtype=torch.float)  # type: ignore[arg-type]
            batch["apdf_row_max"] = row_max
        partners = mismatched_partners(items) if self.mismatched else None
        if partners is not None:
            # response j of list i after the prompt (as tokenised for its first response) of list partners[i]
            prompts = [[items[k].prompt_ids[0]] * len(it.response_ids) for it, k in zip(items, partners)]
            mm = self._flatten(prompts, [it.response_ids for it in items], m)
            batch.update({f"mismatched_{k}": v for k, v in mm.items()})
        return batch


def mismatched_partners(items: Sequence[EncodedList]) -> list[int] | None:
    """For each list i, the list whose prompt its responses are scored under for KTO's z0.

    KTO estimates its reference point z0 from mismatched pairs: responses paired with a
    prompt that is not their own (Ethayarajh et al., arXiv:2402.01306, §4.1). Partner of
    list i: the first list after i (cyclically) whose prompt tokens differ from every prompt
    of list i, so that two lists sharing a prompt (several pairs of one prompt turned into
    lists, duplicates) never give a matched pair. If the micro-batch holds at least two
    distinct prompts every list has a partner.

    Returns:
        ``partners [B]`` (list indices), or ``None`` when some list has no partner (one list,
        or every list has the same prompt).
    """
    b = len(items)
    partners = []
    for i, it in enumerate(items):
        own = {tuple(p) for p in it.prompt_ids}
        k = next((k % b for k in range(i + 1, i + b) if tuple(items[k % b].prompt_ids[0]) not in own), None)
        if k is None:
            return None
        partners.append(k)
    return partners


def token_logps(logits: Tensor, targets: Tensor, chunk_rows: int = 8) -> Tensor:
    """``log_softmax(logits)[..., target]`` without materialising the full log-softmax.

    Args:
        logits: ``[N, T, V]``.
        targets: ``[N, T]`` long.
        chunk_rows: rows processed at once (bounds the temporary ``[chunk, T, V]`` memory).
    Returns:
        ``[N, T]`` log-probabilities (float32 or the logits' dtype if wider).
    """
    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        lg = logits[start:start + chunk_rows]  # [c, T, V]
        if lg.dtype in (torch.float16, torch.bfloat16):
            lg = lg.float()
        picked = torch.gather(lg, -1, targets[start:start + chunk_rows, :, None]).squeeze(-1)  # [c, T]
        out.append(picked - torch.logsumexp(lg, dim=-1))  # [c, T]
    return torch.cat(out, 0)


def _forward_logits(model: Any, input_ids: Tensor, attention_mask: Tensor, keep: int,
                    position_ids: Tensor | None = None) -> Tensor:
    """Logits of the last ``keep`` positions (``logits_to_keep``); all of them for a model
    whose forward does not take that argument. ``attention_mask`` is ``[N, T]`` or, for
    packed lists (:mod:`.packing`), ``[B, 1, T, T]`` with their ``position_ids [B, T]``."""
    extra = {"position_ids": position_ids} if position_ids is not None else {}
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                     logits_to_keep=keep, **extra).logits
    except TypeError as exc:
        if "logits_to_keep" not in str(exc):
            raise
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).logits


def sequence_logps(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs and response lengths of each sequence, in ONE forward.

    The vocabulary projection runs only from the first position that predicts a response
    token in the batch (``logits_to_keep``): the shared prompt prefix needs no ``[N, T, V]``
    logits, which saves the largest temporaries of the step.

    Args:
        model: a causal LM returning ``.logits [N, T, V]``.
        input_ids, attention_mask, response_mask: ``[N, T]``.
    Returns:
        ``(logp_sum [N], n_tokens [N])``: token ``t`` is predicted from position ``t-1``,
        counted where ``response_mask[t]``.
    """
    t = input_ids.shape[1]
    columns = response_mask.to(torch.bool).any(0).nonzero()
    start = max(int(columns[0]) - 1, 0) if len(columns) else t - 1  # first position whose logits are used
    logits = _forward_logits(model, input_ids, attention_mask, t - start)  # [N, T', V], T' = T - start or T
    start = t - logits.shape[1]  # 0 when the model returned every position
    targets = input_ids[:, start + 1:]  # [N, T'-1]
    mask = response_mask[:, start + 1:].to(torch.bool)  # [N, T'-1]
    lp = token_logps(logits[:, :-1], targets)  # [N, T'-1]
    lp = torch.where(mask, lp, torch.zeros_like(lp))
    return lp.sum(-1), mask.sum(-1)


def list_logps(model: Any, batch: dict[str, Tensor], prefix: str = "") -> tuple[Tensor, Tensor]:
    """``(policy [B, M], lengths [B, M])`` for a collated batch (``prefix='mismatched_'`` for z0).

    With the packed keys of a prefix-sharing collator and a model that takes a 4-D mask
    (:func:`~rankalign.training.packing.supports_prefix_sharing`), ONE forward over B packed
    rows ``[prompt, r1, ..., rM]`` (:func:`~rankalign.training.packing.packed_list_logps`);
    otherwise one forward over the ``B*M`` separate sequences. Both give the same values.
    """
    b, m = batch["list_mask"].shape
    if not prefix and "packed_input_ids" in batch:
        from rankalign.training.packing import packed_list_logps, supports_prefix_sharing

        if supports_prefix_sharing(model):
            s, n = packed_list_logps(model, batch, m)
            return s * batch["list_mask"], n
    s, n = sequence_logps(model, batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"],
                          batch[f"{prefix}response_mask"])
    s = s.view(b, m) * batch["list_mask"]  # [B, M]
    return s, n.view(b, m)
