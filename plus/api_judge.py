"""An optional LLM judge over an OpenAI-compatible chat endpoint: off by default, configured by environment
variables, never needed by a notebook's default run or by the tests.

The papers judge generated text with GPT-4o. Here the judges are exact (`plus.judge`: synthetic users know their
preferences); this module lets a reader with an endpoint add an LLM's verdict on the same pairs:

    export PLUS_JUDGE_API_BASE=https://api.openai.com/v1   # any OpenAI-compatible server (vLLM, llama.cpp, ...)
    export PLUS_JUDGE_MODEL=gpt-4o
    export PLUS_JUDGE_API_KEY=...                          # when the endpoint needs one

`judge_from_env` reads them (a clear error names what is missing); `judge_pair` asks which of two responses a
described user would prefer, in both orders (a judge's position bias cancels), and returns the outcome for the
first response: 1 both times it, 0 both times the other, 0.5 otherwise.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

ENV_BASE, ENV_MODEL, ENV_KEY = "PLUS_JUDGE_API_BASE", "PLUS_JUDGE_MODEL", "PLUS_JUDGE_API_KEY"
JUDGE_PROMPT = (
    "A user describes their preferences: {user}\n\nThey asked: {prompt}\n\nResponse A:\n{first}\n\n"
    "Response B:\n{second}\n\nWhich response would this user prefer? Reply with exactly one word: A, B or tie."
)


@dataclass(frozen=True)
class ApiJudge:
    """Where to send the requests: ``base_url`` (ending before ``/chat/completions``), the model name, and the
    bearer key (None: no Authorization header)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0


def judge_from_env(environ: Mapping[str, str] | None = None) -> ApiJudge:
    """The judge the environment configures; an error naming the missing variables when it is off."""
    environ = os.environ if environ is None else environ
    missing = [name for name in (ENV_BASE, ENV_MODEL) if not environ.get(name, "").strip()]
    if missing:
        raise RuntimeError(
            f"The API judge is off: set {' and '.join(missing)} (an OpenAI-compatible endpoint, e.g. "
            f"{ENV_BASE}=https://api.openai.com/v1 and {ENV_MODEL}=gpt-4o; {ENV_KEY} when it needs a key)"
        )
    return ApiJudge(environ[ENV_BASE].strip().rstrip("/"), environ[ENV_MODEL].strip(), environ.get(ENV_KEY) or None)


def _post(judge: ApiJudge, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{judge.base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {judge.api_key}"} if judge.api_key else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=judge.timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"API judge at {judge.base_url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError) as error:
        raise RuntimeError(f"API judge at {judge.base_url} did not answer: {error}") from None


def verdict(reply: str) -> str:
    """``A``, ``B`` or ``tie`` from the model's reply (its first word, case and punctuation aside); an error
    quoting any other reply."""
    words = reply.strip().split()
    word = words[0].strip(".,:;!\"'*()").lower() if words else ""
    if word in ("a", "b", "tie"):
        return word.upper() if word != "tie" else "tie"
    raise ValueError(f"the API judge replied {reply[:80]!r}, not A, B or tie")


def ask(judge: ApiJudge, user: str, prompt: str, first: str, second: str, post: Callable | None = None) -> str:
    """One request: the judge's verdict (`verdict`) on responses A = ``first`` and B = ``second``."""
    for name, value in (("user", user), ("prompt", prompt), ("first", first), ("second", second)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the API judge needs a non-empty {name}, got {value!r}")
    payload = {
        "model": judge.model,
        "messages": [{"role": "user", "content": JUDGE_PROMPT.format(user=user, prompt=prompt, first=first,
                                                                     second=second)}],
        "temperature": 0,
        "max_tokens": 4,
    }  # fmt: skip
    reply = (post or _post)(judge, payload)
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"the API judge's reply has no choices[0].message.content: {str(reply)[:200]}") from None
    return verdict(content)


def judge_pair(
    judge: ApiJudge, user: str, prompt: str, first: str, second: str, post: Callable | None = None
) -> float:
    """The described user's comparison of ``first`` with ``second`` by the API judge, asked in both orders: 1.0
    when both verdicts prefer ``first``, 0.0 when both prefer ``second``, 0.5 otherwise (a tie or a flip with the
    order). ``post(judge, payload) -> reply`` replaces the HTTP call (a test, a cache)."""
    forward = ask(judge, user, prompt, first, second, post)
    backward = ask(judge, user, prompt, second, first, post)
    if forward == "A" and backward == "B":
        return 1.0
    if forward == "B" and backward == "A":
        return 0.0
    return 0.5
