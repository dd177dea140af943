"""Prefix sharing: one packed sequence per list gives the log-probs (and gradients) of separate sequences."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.training.logps import EncodedList, ListCollator, encode_list, list_logps
from rankalign.training.packing import (
    pack_lists,
    packed_list_logps,
    prefix_attention_mask,
    supports_prefix_sharing,
)
from training_tiny import WORDS, tiny_model, tiny_records, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pack_lists_layout_by_hand() -> None:
    """Two lists: [p0 p1 | a0 a1 | b0] and [q0 | c0 c1 c2]; the second is padded to L = 5."""
    out = pack_lists([[[10, 11], [10, 11]], [[20]]], [[[1, 2], [3]], [[4, 5, 6]]], pad_token_id=0)
    assert out["packed_input_ids"].tolist() == [[10, 11, 1, 2, 3], [20, 4, 5, 6, 0]]
    assert out["packed_position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 3, 0]]  # restart after the prompt
    assert out["packed_segment"].tolist() == [[0, 0, 1, 1, 2], [0, 1, 1, 1, -1]]
    assert out["packed_parent"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, -1]]
    # a0 and b0 are both predicted from the last prompt column (1); a1 from a0 (2)
    assert out["packed_pred"].tolist() == [[1, 2, 1], [0, 1, 2]]
    assert out["packed_target"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert out["packed_owner"].tolist() == [[0, 0, 1], [0, 0, 0]]


def test_prefix_mask_by_hand() -> None:
    """Row [p0 p1 | a0 a1 | b0 | pad]: a sees p and itself, b sees p and itself, pad only itself."""
    seg = torch.tensor([[0, 0, 1, 1, 2, -1]])
    par = torch.tensor([[0, 0, 0, 0, 0, -1]])
    mask = prefix_attention_mask(seg, par)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0, 0],
                    [1, 1, 0, 0, 0, 0],
                    [1, 1, 1, 0, 0, 0],
                    [1, 1, 1, 1, 0, 0],
                    [1, 1, 0, 0, 1, 0],  # b0 does not see a0, a1
                    [0, 0, 0, 0, 0, 1]]
    additive = prefix_attention_mask(seg, par, torch.float32)[0, 0]
    assert additive[4, 2] == torch.finfo(torch.float32).min and additive[4, 1] == 0


def _lists(n_lists: int, m: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    g = torch.Generator().manual_seed(seed)

    def text(k: int) -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g))

    # list sizes m, m-1, ... (>= 2): a micro-batch pads its shorter lists
    return [(text(5 + 3 * i), [text(2 + int(torch.randint(0, 9, (1,), generator=g))) for _ in range(max(2, m - i))])
            for i in range(n_lists)]


def _items(tok: Any, lists: list[tuple[str, list[str]]], max_length: int = 64, max_prompt_length: int = 32
           ) -> list[EncodedList]:
    items = []
    for prompt, responses in lists:
        p, r = encode_list(tok, prompt, responses, max_length=max_length, max_prompt_length=max_prompt_length)
        items.append(EncodedList(prompt_ids=p, response_ids=r, order=list(range(len(r))), psi=[0.0] * len(r)))
    return items


def _naive(model: Any, items: list[EncodedList], m: int) -> torch.Tensor:
    """One unpadded forward per (prompt, response); log_softmax gathered and summed."""
    out = torch.zeros(len(items), m, dtype=torch.float64)
    for b, it in enumerate(items):
        for j, (p, r) in enumerate(zip(it.prompt_ids, it.response_ids)):
            logp = torch.log_softmax(model(torch.tensor([p + r])).logits[0].double(), -1)  # [T, V]
            out[b, j] = sum(logp[len(p) + k - 1, t] for k, t in enumerate(r) if len(p) + k >= 1)
    return out


def _both(model: Any, items: list[EncodedList], pad: int) -> tuple[dict, tuple, tuple]:
    packed_batch = ListCollator(pad)(items)
    flat_batch = ListCollator(pad, prefix_sharing=False)(items)
    assert "packed_input_ids" in packed_batch and "packed_input_ids" not in flat_batch
    return packed_batch, list_logps(model, packed_batch), list_logps(model, flat_batch)


@pytest.mark.parametrize("m", [2, 3, 5, 8])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_separate_and_a_naive_loop(m: int, attn: str) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=m).eval()
    model.config._attn_implementation = attn
    items = _items(tok, _lists(3, m, seed=m))
    with torch.no_grad():
        batch, (got, n_got), (flat, n_flat) = _both(model, items, tok.pad_token_id)
        naive = _naive(model, items, m)
    assert batch["packed_input_ids"].shape[1] < batch["input_ids"].numel() / 3  # fewer tokens than M rows
    assert got.shape == (3, m)
    torch.testing.assert_close(got, flat, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.double(), naive * batch["list_mask"], rtol=0, atol=1e-5)
    assert n_got.tolist() == n_flat.tolist()
    assert n_got[0].tolist() == [len(r) for r in items[0].response_ids]


@pytest.mark.parametrize("max_length,max_prompt_length", [(12, 4), (9, 8), (6, 5)])
def test_truncated_prompts_including_per_response_prompt_tails(max_length: int, max_prompt_length: int) -> None:
    """Prompts cut from the left; at (9, 8) and (6, 5) long responses leave their prompt whole but
    are cut to the budget; a hand-made list whose responses keep different prompt tails packs
    one prompt segment per distinct prompt and still matches."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1).eval()
    items = _items(tok, _lists(2, 4, seed=3), max_length=max_length, max_prompt_length=max_prompt_length)
    odd = EncodedList(prompt_ids=[[5, 6, 7, 8], [7, 8], [5, 6, 7, 8], []], response_ids=[[9], [10, 11, 12], [13, 9], [14, 15]],
                      order=[0, 1, 2, 3], psi=[0.0] * 4)
    items.append(odd)
    with torch.no_grad():
        batch, (got, n_got), (flat, n_flat) = _both(model, items, tok.pad_token_id)
        naive = _naive(model, items, 4)
    # grouped by prompt: [5 6 7 8 | 9 | 13 9] [7 8 | 10 11 12] [ | 14 15]
    assert batch["packed_input_ids"][2].tolist()[:14] == [5, 6, 7, 8, 9, 13, 9, 7, 8, 10, 11, 12, 14, 15]
    assert batch["packed_segment"][2].tolist()[:14] == [0, 0, 0, 0, 1, 2, 2, 3, 3, 4, 4, 4, 6, 6]
    assert batch["packed_position_ids"][2].tolist()[:14] == [0, 1, 2, 3, 4, 4, 5, 0, 1, 2, 3, 4, 0, 1]
    torch.testing.assert_close(got, flat, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.double(), naive * batch["list_mask"], rtol=0, atol=1e-5)
    assert n_got[2].tolist() == [1, 3, 2, 1]  # the empty prompt's first token has no predictor
    assert n_got.tolist() == n_flat.tolist()


def _lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():  # a non-zero adapter, so that LoRA changes the outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return peft_model


@pytest.mark.parametrize("lora", [False, True])
def test_gradients_equal(lora: bool) -> None:
    tok = tiny_tokenizer()
    items = _items(tok, _lists(2, 5, seed=7))
    grads = []
    for prefix_sharing in (True, False):
        model = tiny_model(len(tok), seed=2)
        model = _lora(model) if lora else model
        model.train()
        batch = ListCollator(tok.pad_token_id, prefix_sharing=prefix_sharing)(items)
        logps, _ = list_logps(model, batch)
        weights = torch.linspace(-1, 1, logps.numel()).view_as(logps)  # a loss that uses every response
        (logps * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        if lora:
            with torch.no_grad(), model.disable_adapter():
                base_packed = list_logps(model, ListCollator(tok.pad_token_id)(items))[0]
                base_flat = list_logps(model, ListCollator(tok.pad_token_id, prefix_sharing=False)(items))[0]
            torch.testing.assert_close(base_packed, base_flat, rtol=0, atol=1e-5)  # the LoRA reference
            assert not torch.allclose(base_packed, logps.detach(), atol=1e-3)  # the adapter matters
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
        assert grads[0][name].abs().sum() > 0, name


class _IgnoresMasks(torch.nn.Module):
    """A causal LM that drops the attention mask and position ids it is given (e.g. a model whose
    attention kernel takes none): prefix sharing must detect it and fall back."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):  # type: ignore[no-untyped-def]
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)


def test_a_model_that_ignores_the_mask_falls_back_with_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    tok = tiny_tokenizer()
    inner = tiny_model(len(tok), seed=4).eval()
    model = _IgnoresMasks(inner)
    items = _items(tok, _lists(2, 3, seed=5))
    with torch.no_grad():
        got = list_logps(model, ListCollator(tok.pad_token_id)(items))[0]
        again = list_logps(model, ListCollator(tok.pad_token_id)(items))[0]
        naive = _naive(inner, items, 3)
        wrong = packed_list_logps(model, ListCollator(tok.pad_token_id)(items), 3)[0]
    err = capsys.readouterr().err
    assert err.count("prefix sharing off for _IgnoresMasks") == 1 and len(err.strip().splitlines()) == 1
    assert "prefix_sharing: false" in err
    torch.testing.assert_close(got.double(), naive * (got != 0), rtol=0, atol=1e-5)
    torch.testing.assert_close(again, got)
    assert not torch.allclose(wrong, got, atol=1e-3)  # what the probe prevents
    assert supports_prefix_sharing(inner) is True


def test_flash_attention_models_are_not_packed(capsys: pytest.CaptureFixture[str]) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)).eval()
    model.config._attn_implementation = "flash_attention_2"
    assert supports_prefix_sharing(model) is False
    assert "'flash_attention_2' takes no dense 4-D mask" in capsys.readouterr().err


def test_training_losses_equal_with_and_without_prefix_sharing(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Two optimizer steps of dpo_pl (policy + reference forwards) and of seadpra through train()."""
    from rankalign.data.record import ListRecord
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    records = [ListRecord.from_dict(r) for r in tiny_records(4)]
    tok = tiny_tokenizer()
    for method in ("dpo_pl", "seadpra"):
        losses = []
        for on in (True, False):
            cfg = ListwiseConfig(method=method, output_dir=str(tmp_path / f"{method}-{on}"), max_steps=2,
                                 per_device_train_batch_size=2, learning_rate=1e-3, save_strategy="no",
                                 report_to="none", disable_tqdm=True, use_cpu=True, max_length=48,
                                 max_prompt_length=24, prefix_sharing=on, precompute_ref_logps=False, seed=0)
            res = train(cfg, records, model=tiny_model(len(tok), seed=3), tokenizer=tok)
            losses.append([row["loss"] for row in res.log if row.get("type") == "train" and "loss" in row])
        assert len(losses[0]) == 2
        assert losses[0] == pytest.approx(losses[1], abs=1e-5), method
    assert "prefix sharing off" not in capsys.readouterr().err  # the packed path really ran
