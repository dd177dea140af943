"""Prefix sharing: a list as ONE packed sequence ``[prompt, r1, ..., rM]``.

A list's M responses share their prompt, so scoring each ``prompt + r_j`` as its own
sequence encodes the prompt M times. Packed, the prompt is encoded once: the sequence is
``[prompt, r1, r2, ..., rM]``, every response token attends to the prompt and to the
earlier tokens of its own response only (a 4-D attention mask), and the position ids of
every response restart right after the prompt (``|P|, |P|+1, ...``). Each response then
sees exactly the keys, values and rotary positions it sees as a separate sequence, so its
log-probs are those of the separate sequence (up to float summation order); the forward
costs ``P + sum_j R_j`` tokens instead of ``M*P + sum_j R_j``.

Layout of one row (one list), built by :func:`pack_lists`::

    tokens    p0 p1 p2 | a0 a1 | b0 b1 b2 | pad
    positions  0  1  2 |  3  4 |  3  4  5 |  0
    segment    0  0  0 |  1  1 |  2  2  2 | -1
    parent     0  0  0 |  0  0 |  0  0  0 | -1

Query ``i`` may attend key ``k`` iff ``k <= i`` and ``segment[k]`` is ``segment[i]`` or
``parent[i]`` (its prompt); a padding token attends itself only, so no attention row is empty
(an all-masked row gives NaN under SDPA, which would poison the backward). The first token of
each response is predicted from the LAST prompt token (one set of logits serves M targets);
every other token from the token before it. A response whose prompt was truncated differently
from the others' gets its own prompt segment (responses are grouped by their prompt tokens), so
the result equals the separate sequences in every case.

Which models take such a mask is checked once per model (:func:`supports_prefix_sharing`):
a 4-token probe compares the packed and the separate log-probs; transformers' ``eager`` and
``sdpa`` attention pass a 4-D mask through as given (``masking_utils``: a 4-D mask "is
returned as-is"); FlashAttention-2 (no dense masks) and FlexAttention (block masks) are not
used with it here, and such models fall back to one sequence per response with a one-line
message.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: batch keys written by :func:`pack_lists` (``packed_`` + these)
PACKED_KEYS = ("input_ids", "position_ids", "segment", "parent", "pred", "target", "owner")

#: attention implementations that take a dense 4-D mask as given
MASK_IMPLEMENTATIONS = ("eager", "sdpa")

#: positions whose log-sum-exp over the vocabulary is computed at once (bounds the temporaries)
LSE_CHUNK = 1024


def _pack_one(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int
              ) -> tuple[list[list[int]], list[list[int]]]:
    """One list -> (token columns ``[ids, pos, seg, parent]``, scored tokens ``[pred, target, owner]``)."""
    ids: list[int] = []
    pos: list[int] = []
    seg: list[int] = []
    parent: list[int] = []
    pred: list[int] = []
    target: list[int] = []
    owner: list[int] = []
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(j)
    next_seg = 0
    for prompt, members in groups.items():
        p_seg, next_seg = next_seg, next_seg + 1
        ids += prompt
        pos += range(len(prompt))
        seg += [p_seg] * len(prompt)
        parent += [p_seg] * len(prompt)
        last = len(ids) - 1 if prompt else -1  # the column predicting each response's first token
        for j in members:
            r = responses[j]
            r_seg, next_seg = next_seg, next_seg + 1
            base = len(ids)
            ids += r
            pos += range(len(prompt), len(prompt) + len(r))
            seg += [r_seg] * len(r)
            parent += [p_seg] * len(r)
            for t, tok in enumerate(r):
                prev = base + t - 1 if t else last
                if prev < 0:  # an empty prompt: the first token has no predictor (as in a separate sequence)
                    continue
                pred.append(prev)
                target.append(tok)
                owner.append(j)
    if not ids:  # a list of nothing: one pad token so the row is not empty
        ids, pos, seg, parent = [pad], [0], [-1], [-1]
    return [ids, pos, seg, parent], [pred, target, owner]


def _pad(rows: list[list[int]], value: int) -> Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def pack_lists(prompts: Sequence[Sequence[Sequence[int]]], responses: Sequence[Sequence[Sequence[int]]],
               pad_token_id: int) -> dict[str, Tensor]:
    """Pack each list into one row (see the module docstring for the layout).

    Args:
        prompts, responses: per list, per response, the token ids (``EncodedList`` fields).
        pad_token_id: the id written into padding columns.
    Returns:
        ``packed_input_ids``, ``packed_position_ids``, ``packed_segment`` and
        ``packed_parent`` ``[B, L]`` (L = the longest packed list; padding: pad id,
        position 0, segment/parent -1), and the scored tokens ``packed_pred`` (the column
        whose logits predict the token), ``packed_target`` (the token) and ``packed_owner``
        (its response index; -1 = padding) ``[B, R]`` (R = most scored tokens of a list).
    """
    cols, scored = zip(*(_pack_one(p, r, pad_token_id) for p, r in zip(prompts, responses)))
    out = {}
    for k, (name, fill) in enumerate((("input_ids", pad_token_id), ("position_ids", 0),
                                      ("segment", -1), ("parent", -1))):
        out[f"packed_{name}"] = _pad([c[k] for c in cols], fill)  # [B, L]
    for k, (name, fill) in enumerate((("pred", 0), ("target", 0), ("owner", -1))):
        out[f"packed_{name}"] = _pad([s[k] for s in scored], fill)  # [B, R]
    return out


def prefix_attention_mask(segment: Tensor, parent: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The 4-D mask of packed rows: query i sees key k iff k <= i and k is in i's segment or its prompt.

    Args:
        segment, parent: ``[B, L]`` (padding -1).
        dtype: ``None`` for a boolean mask (True = attend, SDPA's convention); a float dtype
            for an additive mask (0 = attend, the dtype's minimum = masked; eager attention).
    Returns:
        ``[B, 1, L, L]``.
    """
    length = segment.shape[1]
    idx = torch.arange(length, device=segment.device)
    causal = idx[None, :] <= idx[:, None]  # [L, L] (query, key)
    key_seg = segment[:, None, :]  # [B, 1, L]
    same = (key_seg == segment[:, :, None]) | (key_seg == parent[:, :, None])  # [B, L, L]
    allowed = causal[None] & same & (key_seg >= 0)
    allowed |= torch.eye(length, dtype=torch.bool, device=segment.device)[None]  # padding attends itself
    allowed = allowed[:, None]  # [B, 1, L, L]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def _attn_implementation(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def _model_dtype(model: Any) -> torch.dtype:
    try:
        return next(p.dtype for p in model.parameters() if p.is_floating_point())
    except (StopIteration, AttributeError):
        return torch.float32


def packed_list_logps(model: Any, batch: dict[str, Tensor], m: int) -> tuple[Tensor, Tensor]:
    """Summed response log-probs ``[B, M]`` and response lengths ``[B, M]`` from ONE forward over the packed rows.

    Reduction: ``logp(y_j) = sum_t log p(y_j,t | prompt, y_j,<t)``; the logits of the last
    prompt token serve the first token of every response. Only the positions from the first
    predicting column on are projected to the vocabulary (``logits_to_keep``), and the
    log-sum-exp runs over ``LSE_CHUNK`` positions at a time.

    Naive equivalent (what tests compare against): for each response j, one forward over
    ``prompt_j + y_j`` and ``log_softmax(logits)[t-1, y_j,t]`` summed over its tokens.
    """
    from rankalign.training.logps import _forward_logits

    ids = batch["packed_input_ids"]  # [B, L]
    seg, par = batch["packed_segment"], batch["packed_parent"]
    pred, target, owner = batch["packed_pred"], batch["packed_target"], batch["packed_owner"]  # [B, R]
    b, length = ids.shape
    dtype = None if _attn_implementation(model) == "sdpa" else _model_dtype(model)
    mask = prefix_attention_mask(seg, par, dtype)  # [B, 1, L, L]
    valid = owner >= 0  # [B, R]
    start = int(pred[valid].min()) if bool(valid.any()) else length - 1
    logits = _forward_logits(model, ids, mask, length - start, position_ids=batch["packed_position_ids"])
    start = length - logits.shape[1]  # 0 when the model returned every position
    cols = (pred - start).clamp(min=0)  # [B, R] columns of `logits`
    flat = logits.reshape(b * logits.shape[1], -1)  # [B*K, V]
    lse = torch.cat([torch.logsumexp(flat[i:i + LSE_CHUNK].float(), -1)
                     for i in range(0, flat.shape[0], LSE_CHUNK)]).view(b, -1)  # [B, K]
    rows = torch.arange(b, device=ids.device)[:, None]  # [B, 1]
    picked = logits[rows, cols, target].float()  # [B, R]
    lp = torch.where(valid, picked - lse.gather(1, cols), torch.zeros_like(picked))  # [B, R]
    slot = torch.where(valid, owner, torch.full_like(owner, m))  # padding -> slot M, dropped below
    sums = torch.zeros(b, m + 1, dtype=lp.dtype, device=lp.device).scatter_add(1, slot, lp)[:, :m]  # [B, M]
    counts = torch.zeros(b, m + 1, dtype=torch.long, device=lp.device).scatter_add(
        1, slot, valid.long())[:, :m]  # [B, M]
    return sums, counts


# ---------------------------------------------------------------------- support check
_SUPPORT: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
#: probe tokens: a prompt and three two-token responses (a, b and a' which replaces a)
_PROBE = ((1, 2, 3), (4, 5), (6, 7), (8, 9))


def _probe(model: Any) -> str | None:
    """Check on three 7-token packed rows that the model honours the mask and the position ids.

    Rows ``[P, a, b]``, ``[P, a', b]`` and ``[P, b, a]`` in one forward: ``b``'s log-prob must
    not change when ``a`` does (same shapes, masked keys weigh exactly 0: equal to 1e-5
    relative; a model that ignores the mask lets ``b`` see ``a``), nor when ``b`` moves after
    ``a`` (its position ids restart after the prompt); and it must equal ``b``'s log-prob as a
    separate sequence (1e-3 relative in float32, 5e-2 in 16-bit floats).

    Returns:
        ``None`` when the model passes, else why not (one line).
    """
    from rankalign.training.logps import sequence_logps

    impl = _attn_implementation(model)
    if impl is not None and impl not in MASK_IMPLEMENTATIONS:
        return f"attention implementation {impl!r} takes no dense 4-D mask (eager and sdpa do)"
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 10
    p, a, b, a2 = ([t % vocab for t in x] for x in _PROBE)
    device = next((q.device for q in model.parameters()), torch.device("cpu"))
    packed = {k: v.to(device) for k, v in pack_lists([[p, p]] * 3, [[a, b], [a2, b], [b, a]], 0).items()}
    ids = torch.tensor([p + a, p + b], device=device)
    att = torch.ones_like(ids)
    resp = torch.tensor([[0] * len(p) + [1] * len(a)] * 2, device=device)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            got, _ = packed_list_logps(model, packed, 2)  # [3, 2]
            want, _ = sequence_logps(model, ids, att, resp)  # [2]
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        model.train(was_training)
    got, want = got.double(), want.double()
    scale = 1.0 + float(want.abs().max())
    loose = 1e-3 if _model_dtype(model) == torch.float32 else 5e-2
    if abs(float(got[0, 1] - got[1, 1])) > 1e-5 * scale:
        return "a response's log-prob changes with another response of its list (the 4-D mask is not applied)"
    if abs(float(got[0, 1] - got[2, 0])) > loose * scale:
        return "a response's log-prob depends on where it sits in the packed row (position ids not applied)"
    diff = float((got[0] - want).abs().max())
    if diff > loose * scale:
        return f"packed and separate log-probs differ by {diff:.2g}"
    return None


def supports_prefix_sharing(model: Any) -> bool:
    """Whether ``model`` scores packed lists correctly (probed once per model; a one-line
    message on stderr when it does not, after which it is scored one sequence per response)."""
    key = getattr(model, "module", model)  # DDP wraps the model; the answer is the inner model's
    try:
        known = _SUPPORT.get(key)
    except TypeError:  # not weak-referenceable: probe every time
        known = None
    if known is not None:
        return known
    why = _probe(model)
    if why is not None:
        print(f"prefix sharing off for {type(key).__name__}: {why}; each response is scored as its own "
              "sequence (set prefix_sharing: false to skip this check)", file=sys.stderr, flush=True)
    try:
        _SUPPORT[key] = why is None
    except TypeError:
        pass
    return why is None
