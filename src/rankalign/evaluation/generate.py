"""Answer generation for evaluation (beam search and 128 new tokens, as in SeAdpra, arXiv:2502.12189,
App. E.1; docs/methods.md#metrics).

Prompts are wrapped in the tokenizer's chat template (one user turn, generation prompt
added) when it has one, else used as plain text. Batches are left-padded so every row's
continuation starts at the same position, and prompts are sorted by length first (less
padding), the outputs being returned in the input order. Decoding is greedy
(``num_beams=1``) or beam search, never sampling, so the same model gives the same
answers.

transformers is not imported here; the model and tokenizer come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_prompt(tokenizer: Any, prompt: str, system_prompt: str | None = None) -> str:
    """The text fed to the model: the chat template with a generation prompt, or the prompt itself."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    batch_size: int = 4,
    max_prompt_length: int | None = 512,
    system_prompt: str | None = None,
    show_progress: bool = True,
) -> list[str]:
    """Generate one answer per prompt, deterministically.

    Args:
        model: a causal LM (``transformers`` ``PreTrainedModel`` or a ``peft`` wrapper).
        tokenizer: its tokenizer; a missing pad token is set to the eos token.
        prompts: N prompt strings.
        max_new_tokens: maximum generated tokens per answer.
        num_beams: 1 = greedy decoding, > 1 = beam search (SeAdpra uses beam search).
        batch_size: prompts per ``generate`` call.
        max_prompt_length: prompts longer than this many tokens keep their last tokens
            (the question's end and the chat template's generation prompt); ``None`` = no cut.
        system_prompt: optional system turn.
        show_progress: tqdm bar over prompts.
    Returns:
        N answers (the generated continuation only, special tokens removed, stripped).
    Raises:
        ValueError: a non-positive ``max_new_tokens``, ``num_beams`` or ``batch_size``.
    """
    for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    prompts = list(prompts)
    if not prompts:
        return []
    from tqdm.auto import tqdm

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = _encode_prompts(tokenizer, prompts, max_prompt_length, system_prompt)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not show_progress)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            answers = _generate_batch(model, tokenizer, [encoded[i] for i in idx], max_new_tokens=max_new_tokens,
                                      num_beams=num_beams)
            for i, answer in zip(idx, answers):
                outputs[i] = answer
            bar.update(len(idx))
    finally:
        bar.close()
        if was_training:
            model.train()
    return outputs


def _encode_prompts(tokenizer: Any, prompts: list[str], max_prompt_length: int | None,
                    system_prompt: str | None) -> list[list[int]]:
    """Token ids of each formatted prompt, keeping the last ``max_prompt_length`` tokens."""
    texts = [format_prompt(tokenizer, p, system_prompt) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if max_prompt_length is not None:
        encoded = [ids[-max_prompt_length:] for ids in encoded]
    return encoded


def _generate_batch(model: Any, tokenizer: Any, encoded: list[list[int]], *, max_new_tokens: int,
                    num_beams: int, sampling: dict[str, Any] | None = None) -> list[str]:
    """One left-padded ``generate`` call; the decoded continuations.

    Greedy or beam search by default; with ``sampling`` (``temperature``, ``top_p``,
    ``num_return_sequences`` n) multinomial sampling under the caller's torch seed
    (rankalign.iterative), n rows per prompt, prompt-major.
    """
    import torch

    pad_id = tokenizer.pad_token_id
    width = max(len(ids) for ids in encoded)
    # left padding: [B, T], the prompt ends at column T-1 in every row
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            **({"do_sample": False} if sampling is None else {"do_sample": True, **sampling}),
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # [B, T + new]
    return [tokenizer.decode(out[row, width:], skip_special_tokens=True).strip() for row in range(out.shape[0])]
