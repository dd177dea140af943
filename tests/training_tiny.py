"""A tiny random Llama and an offline word-level tokenizer with a chat template (no downloads).

Used by the training tests and by the two-process script; importable as a plain module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = (
    "the a is of to and in it you that for on with as are be this was have not or at by can what how "
    "why which best answer question code use try install run python file error fix works good bad "
    "maybe never always yes no help thanks coffee water hot cold grind beans brew cup milk sugar "
    "plan money save invest fund fee low high time day year"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def tiny_tokenizer(chat: bool = True) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + list(".,?!"))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                  eos_token="<eos>", additional_special_tokens=SPECIALS[3:])
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(vocab_size: int, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=None, eos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def save_tiny(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model + tokenizer as a HF folder (safetensors); return it."""
    folder = Path(folder)
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def tiny_records(n: int = 4) -> list[dict[str, Any]]:
    """List-wise records of sizes 2..4 with votes, scores, ranking, dynamic_ranking and APDF."""
    texts = [
        "use a good grind and hot water", "try low fee fund", "never use cold milk",
        "install python and run the code", "the answer is yes", "maybe try sugar", "no",
    ]
    prompts = ["how to brew coffee ?", "what fund is best ?", "why is my code error ?", "how to save money ?",
               "which cup is good ?", "can you help ?"]
    out = []
    for i in range(n):
        m = 2 + i % 3
        resp = [{"text": texts[(i + j) % len(texts)], "attributes": {"votes": (j * 7 + i) % 5}} for j in range(m)]
        ranking = list(range(m))[::-1] if i % 2 else list(range(m))
        apdf = [[0.0 if a == b else 0.1 * (abs(a - b) + 1) for b in range(m)] for a in range(m)]
        out.append({"id": f"r{i}", "prompt": prompts[i % len(prompts)], "responses": resp, "ranking": ranking,
                    "scores": [float(m - ranking.index(j)) for j in range(m)],
                    "dynamic_ranking": ranking, "apdf": apdf})
    return out
