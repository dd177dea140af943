"""Tokenisation, truncation, collation and log-probs (against naive per-sequence loops)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.training.logps import (
    EncodedList,
    ListCollator,
    TruncationStats,
    encode_list,
    list_logps,
    split_texts,
    token_logps,
    truncate,
)
from training_tiny import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_truncate_cuts_prompt_left_then_response_right() -> None:
    stats = TruncationStats()
    p, r = truncate([1, 2, 3, 4, 5, 6], [7, 8, 9, 10], max_length=7, max_prompt_length=4, stats=stats)
    assert p == [3, 4, 5, 6]  # the prompt keeps its end (next to the response)
    assert r == [7, 8, 9]  # the response keeps its start
    assert stats.as_dict() == {"sequences": 1, "prompts_cut": 1, "responses_cut": 1,
                               "prompt_tokens_cut": 2, "response_tokens_cut": 1}


@pytest.mark.parametrize("max_length", [2, 3, 5, 8, 30])
@pytest.mark.parametrize("max_prompt", [1, 2, 4, 20])
@pytest.mark.parametrize("plen,rlen", [(0, 1), (1, 1), (10, 1), (3, 12), (25, 25)])
def test_truncation_never_empties_a_response(max_length: int, max_prompt: int, plen: int, rlen: int) -> None:
    p, r = truncate(list(range(plen)), list(range(100, 100 + rlen)), max_length, max_prompt)
    assert len(r) >= 1
    assert len(p) + len(r) <= max_length
    assert len(p) <= max_prompt
    assert r == list(range(100, 100 + len(r)))  # a prefix of the response
    assert p == list(range(plen - len(p), plen))  # a suffix of the prompt


def test_encode_list_with_tiny_limits_keeps_every_response() -> None:
    tok = tiny_tokenizer()
    stats = TruncationStats()
    prompts, resps = encode_list(tok, "how to brew coffee ? " * 5, ["use hot water " * 10, "no"],
                                 max_length=6, max_prompt_length=3, stats=stats)
    assert all(len(r) >= 1 for r in resps)
    assert all(len(p) + len(r) <= 6 for p, r in zip(prompts, resps))
    assert stats.prompts_cut == 2 and stats.responses_cut == 1 and stats.sequences == 2


def test_chat_template_and_plain_split() -> None:
    tok = tiny_tokenizer()
    head, tail = split_texts(tok, "can you help ?", "yes")
    assert head == "<|user|> can you help ? <|end|> <|assistant|> "
    assert tail == "yes <|end|> "
    plain = tiny_tokenizer(chat=False)
    assert split_texts(plain, "can you help ?", "yes") == ("can you help ?\n\n", "yes<eos>")


def test_collator_exact_tensors() -> None:
    items = [
        EncodedList(prompt_ids=[[5, 6], [5, 6]], response_ids=[[7], [8, 9]], order=[1, 0], psi=[1.0, 2.0]),
        EncodedList(prompt_ids=[[4], [4], [4]], response_ids=[[1], [2], [3]], order=[0, 2, 1], psi=[3.0, 1.0, 2.0],
                    scores=[0.5, 0.1, 0.3]),
    ]
    batch = ListCollator(pad_token_id=0)(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [5, 6, 8, 9], [0, 0, 0, 0],
                                           [4, 1, 0, 0], [4, 2, 0, 0], [4, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0],
                                                [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert batch["response_mask"].int().tolist() == [[0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0],
                                                     [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    assert batch["list_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["order"].tolist() == [[1, 0, 2], [0, 2, 1]]
    assert batch["psi"].tolist() == [[1.0, 2.0, 0.0], [3.0, 1.0, 2.0]]
    assert "scores" not in batch  # only when every list has scores
    assert "apdf" not in batch and "apdf_row_max" not in batch
    items[0].apdf_row_max, items[1].apdf_row_max = [2.0, 1.0], [4.0, 3.0, 5.0]
    items[0].apdf, items[1].apdf = [[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]]
    batch = ListCollator(pad_token_id=0)(items)
    assert batch["apdf_row_max"].tolist() == [[2.0, 1.0, 0.0], [4.0, 3.0, 5.0]]
    assert batch["apdf"][0].tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_token_logps_equals_log_softmax_gather() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11)
    targets = torch.randint(0, 11, (5, 7))
    expected = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logps(logits, targets, chunk_rows=2), expected)


def test_list_logps_matches_naive_per_sequence_loop() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)).eval()
    lists = [("how to brew coffee ?", ["use hot water", "never use cold milk", "no"]),
             ("what fund is best ?", ["try low fee fund", "the answer is yes"])]
    items = []
    for prompt, responses in lists:
        p, r = encode_list(tok, prompt, responses, max_length=64, max_prompt_length=32)
        items.append(EncodedList(prompt_ids=p, response_ids=r, order=list(range(len(r))), psi=[0.0] * len(r)))
    batch = ListCollator(tok.pad_token_id)(items)
    with torch.no_grad():
        got, lengths = list_logps(model, batch)
    assert got.shape == (2, 3)
    for b, it in enumerate(items):
        for j in range(3):
            if j >= len(it.response_ids):
                assert got[b, j] == 0
                continue
            p, r = it.prompt_ids[j], it.response_ids[j]
            ids = torch.tensor([p + r])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0], -1)  # [T, V], unpadded sequence
            naive = sum(logp[len(p) + k - 1, tok_id].item() for k, tok_id in enumerate(r))
            assert lengths[b, j] == len(r)
            assert got[b, j].item() == pytest.approx(naive, abs=1e-4)


def test_logits_only_from_the_first_response_position_and_fallback_for_other_models() -> None:
    """``sequence_logps`` asks for the logits of the last T - start positions only; a model
    without ``logits_to_keep`` gets a plain forward and the same log-probs."""
    from rankalign.training.logps import sequence_logps

    tok = tiny_tokenizer()
    model = tiny_model(len(tok)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 12, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    response = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 0]])  # first response token at t = 3
    seen: list[int] = []

    class Recording(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, accepts_keep: bool) -> None:
            super().__init__()
            self.inner, self.accepts_keep = inner, accepts_keep

        def forward(self, input_ids, attention_mask, use_cache, **kw):  # type: ignore[no-untyped-def]
            if kw and not self.accepts_keep:
                raise TypeError(f"forward() got an unexpected keyword argument {next(iter(kw))!r}")
            seen.append(kw.get("logits_to_keep", 0))
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, **kw)

    with torch.no_grad():
        full = torch.log_softmax(model(ids, attention_mask=attention).logits, -1)  # [2, 6, V]
        want = torch.stack([sum(full[n, t - 1, ids[n, t]] for t in range(6) if response[n, t]) for n in range(2)])
        got, n_tok = sequence_logps(Recording(model, True), ids, attention, response)
        plain, _ = sequence_logps(Recording(model, False), ids, attention, response)
    assert seen == [4, 0]  # positions 2..5 (logits at t-1 = 2 predict the token at t = 3); then all
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, want, rtol=0, atol=1e-5)
    assert n_tok.tolist() == [3, 1]


def _mismatched_items(tok) -> list[EncodedList]:  # type: ignore[no-untyped-def]
    """Two lists with the same prompt (e.g. two pairs of one question) and one with another."""
    lists = [("how to brew coffee ?", ["use hot water", "no"]),
             ("how to brew coffee ?", ["never use cold milk", "maybe try sugar", "yes"]),
             ("what fund is best ?", ["try low fee fund", "the answer is yes"])]
    items = []
    for prompt, responses in lists:
        p, r = encode_list(tok, prompt, responses, max_length=64, max_prompt_length=32)
        items.append(EncodedList(prompt_ids=p, response_ids=r, order=list(range(len(r))), psi=[0.0] * len(r)))
    return items


@pytest.mark.parametrize("perm", [(0, 1, 2), (1, 0, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0), (2, 1, 0)])
def test_mismatched_pairs_never_use_the_own_prompt_and_match_a_naive_loop(perm: tuple[int, ...]) -> None:
    """KTO's z0 pairs: every response is scored after a prompt that is not its own, whatever the
    order of the micro-batch (two lists sharing a prompt used to be paired with each other), and
    the batched log-probs equal a per-sequence loop over (other prompt, response)."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)).eval()
    items = [_mismatched_items(tok)[k] for k in perm]
    batch = ListCollator(tok.pad_token_id, mismatched=True)(items)
    with torch.no_grad():
        got, _ = list_logps(model, batch, "mismatched_")
    ids, att, resp = (batch[f"mismatched_{k}"] for k in ("input_ids", "attention_mask", "response_mask"))
    m = batch["list_mask"].shape[1]
    for i, it in enumerate(items):
        for j, r in enumerate(it.response_ids):
            row = i * m + j
            prompt = ids[row][att[row].bool() & ~resp[row]].tolist()
            assert ids[row][resp[row]].tolist() == r
            assert prompt not in it.prompt_ids  # never the response's own prompt
            assert any(prompt == other.prompt_ids[0] for other in items)
            # naive: the first list after i (cyclically) whose prompt differs
            partner = next(items[k % 3] for k in range(i + 1, i + 3) if items[k % 3].prompt_ids[0] != it.prompt_ids[0])
            assert prompt == partner.prompt_ids[0]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + r])).logits[0], -1)
            naive = sum(logp[len(prompt) + k - 1, t].item() for k, t in enumerate(r))
            assert got[i, j].item() == pytest.approx(naive, abs=1e-4)


def test_no_mismatched_pairs_for_one_list_or_one_shared_prompt() -> None:
    from rankalign.training.logps import mismatched_partners

    tok = tiny_tokenizer()
    a1, a2, b = _mismatched_items(tok)
    collate = ListCollator(tok.pad_token_id, mismatched=True)
    assert "mismatched_input_ids" not in collate([a1])
    assert "mismatched_input_ids" not in collate([a1, a2])  # the same prompt: no mismatched pair exists
    assert mismatched_partners([a1, a2]) is None
    assert mismatched_partners([a1, b]) == [1, 0]
    assert mismatched_partners([a1, a2, b]) == [2, 2, 0]
