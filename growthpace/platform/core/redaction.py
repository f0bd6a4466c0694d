"""Secrets kept out of everything the study writes or logs: MLflow params, dumped specs, the report."""

from __future__ import annotations

import re
from typing import Any

# Secrets: a name with a word that says KEY, TOKEN, SECRET or PASSWORD (any case: HF_TOKEN, api_key,
# apiKey, AWS_SECRET_ACCESS_KEY, db_password). Counts like `max_new_tokens`, `tokens_per_item` are
# not secrets: the plural "tokens" is not matched.
REDACTED = "***"
_SECRET_WORD = re.compile(r"(key|keys|token|secret|secrets|password|passwords|passwd)$")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*[=:]\s*)(?P<value>[^\s,;&'\"}\]]+)")


def is_secret(name: object) -> bool:
    return any(_SECRET_WORD.search(w.lower()) for w in _WORDS.findall(str(name)))


def redact_text(text: str) -> str:
    """Credentials in a URL (scheme://user:pass@) and NAME=value / NAME: value with a secret NAME."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _ASSIGNMENT.sub(lambda m: m[0] if not is_secret(m["name"]) else f"{m['name']}{m['sep']}{REDACTED}", text)


def redact(obj: Any) -> Any:
    """A copy with every value under a secret name replaced by '***' (through dicts and lists), and
    strings passed through redact_text. Applied to every MLflow param and every dumped spec."""
    if isinstance(obj, dict):
        return {k: REDACTED if is_secret(k) and v not in (None, "") else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
