"""Judges: an OpenAI-compatible chat-completions endpoint (standard library only) or a local chat model.

A judge is a callable ``prompt -> Reply``. Transport trouble is retried with exponential
backoff (HTTP 408/409/429/5xx, timeouts, refused connections); what retrying cannot fix is
either a :class:`~rankalign.errors.UserError` for the whole run (a server that stays down, a
rejected key, a wrong URL or model: every record would fail the same way) or a failed reply
for that one record (a refusal, a malformed body, a 5xx that persists), which is recorded and
counted.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rankalign.errors import UserError

#: HTTP statuses worth asking again
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: HTTP statuses that would fail every record the same way
FATAL_STATUS = {401: "the API key was rejected (check the variable named by --api-key-env)",
                403: "access forbidden (check the API key and the model's permissions)",
                404: "not found (check --base-url, which should end in /v1 or similar, and --model)"}


@dataclass
class Reply:
    """One judge reply: ``text`` (the answer) or ``error`` (why there is none); ``status`` is
    ``ok``, ``refused`` or ``failed``."""

    text: str | None
    status: str = "ok"
    error: str | None = None
    attempts: int = 1


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` with one user message, temperature 0.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the model name the endpoint serves.
        api_key: sent as ``Authorization: Bearer``; ``None`` sends none (local servers).
        max_retries: further attempts after the first, on retryable trouble.
        backoff_s: the first wait; each retry doubles it.
        timeout_s: per request.
        max_tokens: the reply's token limit.
        sleep: injected in tests.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, max_retries: int = 4,
                 backoff_s: float = 1.0, timeout_s: float = 120.0, max_tokens: int = 1024,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.sleep = sleep

    @property
    def name(self) -> str:
        return f"{self.model} @ {self.url}"

    def _request(self, prompt: str) -> urllib.request.Request:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def __call__(self, prompt: str) -> Reply:
        last = ""
        down = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(self._request(prompt), timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code in FATAL_STATUS:
                    raise UserError(f"judge endpoint {self.url}: HTTP {exc.code}, {FATAL_STATUS[exc.code]}"
                                    + (f"; server said: {detail}" if detail else "")) from None
                if exc.code in RETRY_STATUS:
                    last, down = f"HTTP {exc.code} {detail}".strip(), False
                    continue
                return Reply(None, "refused", f"HTTP {exc.code} {detail}".strip(), attempt + 1)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last, down = f"cannot connect ({reason})", True
                continue
            return _parse_body(raw, attempt + 1)
        if down:
            raise UserError(f"judge endpoint {self.url} cannot be reached after {self.max_retries + 1} attempts: "
                            f"{last}; check --base-url and that the server runs")
        return Reply(None, "failed", f"{last} after {self.max_retries + 1} attempts", self.max_retries + 1)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # the body is only a hint
        return ""
    try:
        msg = json.loads(body).get("error", {})
        body = msg.get("message", body) if isinstance(msg, dict) else str(msg)
    except (json.JSONDecodeError, AttributeError):
        pass
    return " ".join(str(body).split())[:200]


def _parse_body(raw: bytes, attempts: int) -> Reply:
    """The reply text of a chat-completions body; a malformed body or a refusal is a failed reply."""
    try:
        data = json.loads(raw.decode("utf-8"))
        message = data["choices"][0]["message"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
        return Reply(None, "failed", f"malformed response: {raw[:120]!r}", attempts)
    if not isinstance(message, dict):
        return Reply(None, "failed", f"malformed response: message is {type(message).__name__}", attempts)
    if message.get("refusal"):
        return Reply(None, "refused", f"refusal: {str(message['refusal'])[:200]}", attempts)
    content = message.get("content")
    if not isinstance(content, str):
        return Reply(None, "failed", "malformed response: no text content", attempts)
    return Reply(content, "ok", None, attempts)


def endpoint_from_env(base_url: str, model: str, api_key_env: str, **kwargs: Any) -> ChatEndpoint:
    """A :class:`ChatEndpoint` whose key is read from the environment variable ``api_key_env``
    (unset or empty: no key is sent, as local servers expect)."""
    return ChatEndpoint(base_url, model, os.environ.get(api_key_env) or None, **kwargs)


class LocalChatModel:
    """A local chat model (a Hugging Face folder, or the default SmolLM2): greedy generation
    through :func:`rankalign.evaluation.generate.generate_responses` (the tokenizer's chat template)."""

    def __init__(self, path: str | None, *, max_new_tokens: int = 512, max_prompt_tokens: int = 4096,
                 trust_remote_code: bool = False, model: Any = None, tokenizer: Any = None) -> None:
        if model is None or tokenizer is None:
            from rankalign.training.models import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(path, trust_remote_code=trust_remote_code)
            model.eval()
        self.model, self.tokenizer = model, tokenizer
        self.path = path or "SmolLM2-135M-Instruct (default)"
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens

    @property
    def name(self) -> str:
        return f"local:{self.path}"

    def __call__(self, prompt: str) -> Reply:
        from rankalign.evaluation.generate import generate_responses

        (text,) = generate_responses(self.model, self.tokenizer, [prompt], max_new_tokens=self.max_new_tokens,
                                     batch_size=1, max_prompt_length=self.max_prompt_tokens, show_progress=False)
        return Reply(text)
