"""Toxicity of generated answers under any Hugging Face sequence classifier given by path.

The score of a text is the probability of the classifier's *toxic* label. Which label that
is (:func:`toxic_label`):

1. the label named by the user (``--toxicity-label NAME``, or its index);
2. else a label named exactly ``toxic`` (case-insensitive), e.g. the first of a multi-label
   toxicity model;
3. else the one label whose name contains ``toxic`` and does not start with ``non``/``not``
   (``"toxic"`` vs ``"non-toxic"``, ``"TOXIC"`` vs ``"NOT_TOXIC"``);
4. else, for a one-logit model, that logit; for a two-label model with generic names
   (``LABEL_0``/``LABEL_1``), label 1 (the positive class by the usual convention);
5. else an error that lists the labels and asks for ``--toxicity-label``.

The probability is the sigmoid of the label's logit for one-logit and multi-label models
(``config.problem_type == "multi_label_classification"``), else the softmax over the labels.
Weights are read from safetensors only, and model-repository code never runs unless
``trust_remote_code`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankalign.errors import UserError


def load_classifier(path: str, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a local sequence-classification folder (safetensors weights).

    Raises:
        UserError: the folder does not exist or holds no loadable classifier.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not Path(path).is_dir():
        raise UserError(f"--toxicity-model {path!r}: no such model folder; give a local Hugging Face "
                        "sequence-classification folder (config.json, model.safetensors, tokenizer)")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                   use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"--toxicity-model {path!r}: cannot load a sequence classifier ({exc})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def toxic_label(config: Any, name: str | None = None) -> tuple[int, bool]:
    """``(label index, use sigmoid)`` of the toxic label of a classifier config (rules in the module docstring).

    Raises:
        UserError: ``name`` is not one of the labels, or no rule picks a label.
    """
    n = int(config.num_labels)
    labels = {int(i): str(v) for i, v in (getattr(config, "id2label", None) or {}).items()}
    sigmoid = n == 1 or getattr(config, "problem_type", None) == "multi_label_classification"
    shown = ", ".join(f"{i}={v!r}" for i, v in sorted(labels.items())) or f"{n} unnamed"
    if name is not None:
        for i, v in labels.items():
            if v.lower() == name.lower() or str(i) == name.strip():
                return i, sigmoid
        raise UserError(f"--toxicity-label {name!r} is not a label of the classifier; its labels: {shown}")
    exact = [i for i, v in labels.items() if v.lower() == "toxic"]
    if len(exact) == 1:
        return exact[0], sigmoid
    named = [i for i, v in labels.items() if "toxic" in v.lower() and not v.lower().startswith(("non", "not"))]
    if len(named) == 1:
        return named[0], sigmoid
    if n == 1:
        return 0, True
    if n == 2 and not named:
        return 1, sigmoid
    raise UserError(f"cannot tell which label of the toxicity classifier is the toxic one (labels: {shown}); "
                    "name it with --toxicity-label")


def toxicity_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, label: int, sigmoid: bool,
                    batch_size: int = 8, max_length: int = 512, show_progress: bool = False) -> list[float]:
    """Probability of label ``label`` for each text (right-padded batches, no gradient)."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out: list[float] = []
    texts = list(texts)
    for start in tqdm(range(0, len(texts), batch_size), desc="toxicity", unit="batch", disable=not show_progress):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # [B, L]
        probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)
        out.extend(float(p) for p in probs[:, label].cpu())
    return out
