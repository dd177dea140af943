"""Scalar reward models: load one, score (prompt, response) pairs with it.

A reward model is any ``transformers`` ``AutoModelForSequenceClassification`` with ONE label
(``rankalign train-rm`` writes one; an HF sequence classifier with one output works too). A
pair is formatted exactly as the policy side formats it for training
(:func:`rankalign.training.logps.split_texts`: the chat template with the prompt as the
user turn and the response as the assistant turn, plain ``prompt + "\\n\\n" + response +
eos`` without a template; :func:`~rankalign.training.logps.truncate`: the prompt cut from
the left, then the response from the right). The reward is the head's output at the last
token that is not padding (the classifier's own pooling), so right padding never changes a
row's value: the rewards do not depend on the batch a pair is scored in.

transformers is imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

_HEAD_SUFFIXES = ("ForSequenceClassification", "ForRewardModel", "RewardModel")


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.count("/") != 1


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"dtype {dtype!r} must be float32, bfloat16 or float16")
        return getattr(torch, dtype)
    return dtype or torch.float32


def load_reward_model(path: str, *, trust_remote_code: bool = False, dtype: Any = "float32") -> tuple[Any, Any]:
    """Load a one-label sequence classifier and its tokenizer for scoring.

    Args:
        path: a folder written by ``rankalign train-rm`` (full weights, or a LoRA adapter
            whose ``adapter_config.json`` names its base), or an HF sequence classifier
            (folder or hub name).
        trust_remote_code: let the model repository run its own code (off by default).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype.
    Returns:
        ``(model, tokenizer)``: the model in eval mode, ``config.pad_token_id`` set to the
        tokenizer's pad token (the eos token when it had none).
    Raises:
        UserError: the path does not exist; it holds a causal LM without a classification
            head; the head has more than one label; its weights are not in the folder
            (a head that would be initialised at random); it cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = str(path)
    local = Path(path).expanduser()
    if not local.exists() and _looks_local(path):
        raise UserError(f"reward model {path!r} does not exist; pass the output folder of `rankalign train-rm` "
                        "or a Hugging Face sequence classifier with one label")
    torch_dtype = _torch_dtype(dtype)
    if (local / "adapter_config.json").is_file() and not (local / "config.json").is_file():
        model = _load_adapter(local, trust_remote_code, torch_dtype)
    else:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"reward model {path!r}: cannot read its config.json ({_first_line(exc)})") from None
        _check_head(path, config)
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, trust_remote_code=trust_remote_code, dtype=torch_dtype, use_safetensors=True,
                output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"reward model {path!r}: cannot load it ({_first_line(exc)}); a reward model is "
                            "saved as safetensors by `rankalign train-rm`") from None
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise UserError(f"reward model {path!r}: the folder has no weights for {', '.join(sorted(missing)[:3])}"
                            f"{' ...' if len(missing) > 3 else ''}; that head would be random — pass a trained "
                            "reward model (`rankalign train-rm`)")
    source = str(local) if local.exists() else path
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_head(path: str, config: Any) -> None:
    """A one-label sequence-classification head, or a UserError naming what is there."""
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith(_HEAD_SUFFIXES) for a in archs):
        raise UserError(f"reward model {path!r} is a {', '.join(archs)} without a classification head; train a "
                        f"reward model from it with `rankalign train-rm --model {path}`, or pass a sequence "
                        "classifier with one label")
    if int(getattr(config, "num_labels", 1)) != 1:
        raise UserError(f"reward model {path!r} has a head with {config.num_labels} labels; a reward model has "
                        "exactly one (a scalar score per response)")


def _load_adapter(folder: Path, trust_remote_code: bool, torch_dtype: Any) -> Any:
    """A LoRA reward model saved as an adapter: its base as a one-label classifier + the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    try:
        base_name = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"reward model {str(folder)!r}: unreadable adapter_config.json ({_first_line(exc)})") from None
    from rankalign.training.models import resolve_model_path

    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(base_name), num_labels=1, trust_remote_code=trust_remote_code, dtype=torch_dtype,
        use_safetensors=True)
    model = PeftModel.from_pretrained(base, str(folder))
    return model.merge_and_unload()


def classifier_from_causal_lm(name_or_path: str | None, *, trust_remote_code: bool = False,
                              dtype: Any = "float32") -> tuple[Any, Any]:
    """A one-label classifier initialised from a causal LM (the head random), and its tokenizer.

    ``name_or_path``: any causal LM folder or hub name; ``None``/the default name gives the
    offline SmolLM2-135M-Instruct (:func:`rankalign.training.models.resolve_model_path`).
    """
    from transformers import AutoModelForSequenceClassification

    from rankalign.training.models import load_tokenizer, resolve_model_path

    path = resolve_model_path(name_or_path)
    if not Path(path).expanduser().exists() and _looks_local(path):
        raise UserError(f"model {path!r} does not exist; pass a causal LM folder or a hub name")
    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=trust_remote_code, dtype=_torch_dtype(dtype))
    except OSError as exc:
        raise UserError(f"cannot load model {path!r}: {_first_line(exc)}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def encode_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *, max_length: int,
                 max_prompt_length: int) -> list[list[int]]:
    """Token ids of each (prompt, response) pair, formatted and cut as for training
    (:func:`rankalign.training.logps.encode_list`)."""
    from rankalign.training.logps import encode_list

    rows = []
    for prompt, response in zip(prompts, responses):
        (p,), (r,) = encode_list(tokenizer, prompt, [response], max_length=max_length,
                                 max_prompt_length=max_prompt_length)
        rows.append(p + r)
    return rows


def sequence_rewards(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """``[N]`` rewards of right-padded rows ``input_ids [N, T]`` (the head's single output)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # [N, 1]
    return logits[:, 0].float()


def score_responses(model: Any, tokenizer: Any, prompts: list[str], responses: list[str], *, batch_size: int = 8,
                    max_length: int = 512, show_progress: bool = False,
                    max_prompt_length: int | None = None) -> list[float]:
    """The reward of each ``(prompts[i], responses[i])``, batched and deterministic.

    Args:
        model, tokenizer: from :func:`load_reward_model`.
        prompts, responses: N strings each.
        batch_size: pairs per forward (pairs are sorted by length first, less padding).
        max_length: tokens of prompt + response; ``max_prompt_length`` (default
            ``max_length // 2``) caps the prompt (cut from the left), then the response is
            cut from the right — as in training.
        show_progress: a tqdm bar over the pairs.
    Returns:
        N floats in the input order.
    Raises:
        ValueError: ``prompts`` and ``responses`` differ in length, or a bad batch size / length.
    """
    import torch
    from tqdm.auto import tqdm

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2 (got {batch_size}, {max_length})")
    max_prompt_length = max_prompt_length if max_prompt_length is not None else max_length // 2
    rows = encode_pairs(tokenizer, prompts, responses, max_length=max_length, max_prompt_length=max_prompt_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(rows), desc="scoring", unit="pair", disable=not show_progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                width = max(len(rows[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for k, i in enumerate(idx):
                    ids[k, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
                    mask[k, : len(rows[i])] = 1
                values = sequence_rewards(model, ids.to(device), mask.to(device)).tolist()
                for i, v in zip(idx, values):
                    out[i] = float(v)
                bar.update(len(idx))
    finally:
        model.train(was_training)
    return out
