"""Every option of ``rankalign judge``, defined once (the CLI is generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import ConfigError


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class JudgeOptions:
    """How :func:`rankalign.judge.judge_file` asks a chat model for each list's order."""

    data: str | None = _opt(None, "list-wise records to judge (.jsonl, .parquet or a datasets folder); required")
    out: str | None = _opt(None, "judged records (.jsonl/.parquet, or a folder name for a datasets folder); "
                                 "the answer cache OUT.judge-cache.jsonl goes beside it; required")
    base_url: str | None = _opt(None, "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or "
                                      "http://127.0.0.1:8000/v1 (POST BASE_URL/chat/completions)")
    model: str | None = _opt(None, "model name the endpoint serves (with --base-url)")
    api_key_env: str = _opt("OPENAI_API_KEY", "environment variable holding the API key (unset: no key sent)")
    local_model: str | None = _opt(None, "a local chat model folder instead of an endpoint ('default': the "
                                         "offline SmolLM2-135M-Instruct)")
    trust_remote_code: bool = _opt(False, "let a local model run code from its folder (never by default)")
    max_tokens: int = _opt(1024, "longest reply, in tokens")
    max_prompt_tokens: int = _opt(4096, "local model: a longer prompt keeps its last tokens")
    max_answer_chars: int = _opt(4000, "each candidate is cut to this many characters in the prompt")
    max_retries: int = _opt(4, "further attempts after a failed request (HTTP 429/5xx, timeouts, no connection)")
    backoff_s: float = _opt(1.0, "first wait between attempts, seconds; doubled each retry")
    timeout_s: float = _opt(120.0, "per request, seconds")
    limit: int | None = _opt(None, "judge only the first N records")
    split: str | None = _opt(None, "judge only records whose meta.split equals this (e.g. test)")
    on_error: str = _opt("skip", "invalid input records: skip and count them, or raise at the first")
    progress: bool = _opt(True, "show a progress bar")

    def problems(self) -> list[str]:
        """Every invalid option, one line each."""
        out = []
        if not self.data:
            out.append("--data is required: the records to judge")
        elif not Path(self.data).exists():
            out.append(f"--data {self.data}: no such file or folder")
        if not self.out:
            out.append("--out is required: where the judged records go")
        if (self.base_url is None) == (self.local_model is None):
            out.append("give either --base-url URL --model NAME (an OpenAI-compatible endpoint) or --local-model PATH")
        if self.base_url is not None and not self.model:
            out.append("--base-url needs --model NAME (the model the endpoint serves)")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            out.append(f"--base-url {self.base_url!r} must start with http:// or https://")
        for name in ("max_tokens", "max_prompt_tokens", "max_answer_chars", "timeout_s"):
            if not getattr(self, name) > 0:
                out.append(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0 or self.backoff_s < 0:
            out.append("--max-retries and --backoff-s must be >= 0")
        if self.limit is not None and self.limit < 1:
            out.append(f"--limit must be >= 1, got {self.limit}")
        if self.on_error not in ("skip", "raise"):
            out.append(f"--on-error must be skip or raise, got {self.on_error!r}")
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @property
    def cache_path(self) -> Path:
        """``OUT.judge-cache.jsonl`` beside the output."""
        out = Path(str(self.out))
        return out.with_name(out.name + ".judge-cache.jsonl")
