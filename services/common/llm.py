"""A small synchronous client for any OpenAI-compatible chat endpoint that answers JSON.

The agents' LLM brains ask through :class:`LlmClient`: structured outputs (a JSON schema, strict) where
the server supports them, JSON mode where it refuses them, ``temperature=0``, and one hard deadline
per call. The retry policy is ours, not the SDK's: one short retry on HTTP 429, none otherwise; the
caller decides what to do with an answer that is JSON but wrong.

The API key never leaves this module in text: every error message is scrubbed of it, because SDK and
server errors may echo request headers.
"""

from __future__ import annotations

import email.utils
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import openai

from services.common.config import Settings
from services.common.logging import get_logger

log = get_logger(__name__)

MODE_JSON_SCHEMA = "json_schema"
MODE_JSON_OBJECT = "json_object"

# One retry on 429, after at most this long (the server's Retry-After is honoured up to it).
RATE_LIMIT_RETRY_CAP_S = 2.0
RATE_LIMIT_DEFAULT_WAIT_S = 0.5
_KEY_PLACEHOLDER = "unused"
# 4xx answers that say nothing about the response format: no reason to drop structured outputs.
_NOT_ABOUT_THE_FORMAT = {401, 403, 404, 408, 429}


class LlmError(Exception):
    """The LLM could not give a usable answer; the message says why, for a user."""


class LlmTimeout(LlmError):
    """The endpoint did not answer within the deadline."""


class LlmUnavailable(LlmError):
    """The endpoint could not be reached, refused the call, was rate limited or failed."""


class LlmBadOutput(LlmError):
    """The answer was not a JSON object. ``raw`` holds what the model said (for a corrective turn)."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class LlmClient:
    """Chat completions that must come back as one JSON object."""

    def __init__(self, base_url: str, model: str, timeout_s: float, api_key: str | None = None) -> None:
        if not base_url:
            raise ValueError("no LLM endpoint is configured (set TRAINERAGENT_LLM_BASE_URL)")
        self.base_url = base_url
        # Servers that serve one model (llama.cpp, vLLM with a single model) ignore the name.
        self.model = model or "default"
        self.timeout_s = float(timeout_s)
        self._api_key = api_key if api_key is not None else (os.environ.get("OPENAI_API_KEY") or _KEY_PLACEHOLDER)
        self._sdk = openai.OpenAI(
            base_url=base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        )
        # Set once the server refuses structured outputs; JSON mode from then on.
        self._structured_refused = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmClient:
        return cls(settings.llm_base_url, settings.llm_model, settings.llm_timeout_s)

    @property
    def mode(self) -> str:
        """The response format the next call asks for."""
        return MODE_JSON_OBJECT if self._structured_refused else MODE_JSON_SCHEMA

    def scrub(self, text: str) -> str:
        """``text`` with the API key (ours and the environment's) replaced by ``***``."""
        for secret in {self._api_key, os.environ.get("OPENAI_API_KEY") or ""}:
            if secret and secret != _KEY_PLACEHOLDER and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def complete_json(
        self, messages: list[dict[str, str]], schema: dict[str, Any], schema_name: str
    ) -> tuple[dict[str, Any], str]:
        """The model's answer as a dict, and the mode used (``json_schema`` or ``json_object``).

        Raises LlmTimeout, LlmUnavailable or LlmBadOutput (not a JSON object) with a message fit for a
        user; the whole call, retries included, ends within ``timeout_s``.
        """
        deadline = time.monotonic() + self.timeout_s
        rate_limited_once = False
        while True:
            mode = self.mode
            if mode == MODE_JSON_SCHEMA:
                response_format: dict[str, Any] = {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                }
            else:
                response_format = {"type": "json_object"}
            started = time.monotonic()
            try:
                completion = self._create(messages, response_format, deadline)
            except openai.APIStatusError as exc:
                status = exc.status_code
                if mode == MODE_JSON_SCHEMA and 400 <= status < 500 and status not in _NOT_ABOUT_THE_FORMAT:
                    with self._lock:
                        self._structured_refused = True
                    log.info("llm_structured_outputs_refused", status=status, detail=self._detail(exc),
                             switching_to=MODE_JSON_OBJECT)
                    continue
                if status == 429 and not rate_limited_once:
                    wait = _retry_after_s(exc.response.headers)
                    if time.monotonic() + wait < deadline - 0.05:
                        rate_limited_once = True
                        log.info("llm_rate_limited_retrying", wait_s=round(wait, 3))
                        time.sleep(wait)
                        continue
                raise self._status_error(exc) from None
            except openai.APITimeoutError:
                raise LlmTimeout(f"the LLM endpoint timed out after {self.timeout_s:g} s") from None
            except openai.APIConnectionError as exc:
                raise LlmUnavailable(
                    self.scrub(f"the LLM endpoint at {self.base_url} could not be reached: {_cause(exc)}")
                ) from None
            except openai.OpenAIError as exc:
                raise LlmUnavailable(self.scrub(f"the LLM call failed: {exc}")) from None
            log.info("llm_answered", mode=mode, model=self.model, seconds=round(time.monotonic() - started, 3))
            return _parse_json_object(completion), mode

    # --- internals -----------------------------------------------------------------------------

    def _create(self, messages: list[dict[str, str]], response_format: dict[str, Any], deadline: float) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LlmTimeout(f"the LLM endpoint timed out after {self.timeout_s:g} s")

        def call() -> Any:
            return self._sdk.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                temperature=0,
                timeout=remaining,
            )

        return _within(call, remaining, on_timeout=lambda: LlmTimeout(
            f"the LLM endpoint timed out after {self.timeout_s:g} s"))

    def _detail(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error", body)
            message = error.get("message") if isinstance(error, dict) else error
            text = str(message)
        else:
            text = str(body or exc.message)
        return self.scrub(text)[:300]

    def _status_error(self, exc: openai.APIStatusError) -> LlmError:
        status = exc.status_code
        if status == 429:
            return LlmUnavailable("the LLM endpoint answered HTTP 429 (rate limited)")
        if status in (401, 403):
            return LlmUnavailable(
                f"the LLM endpoint answered HTTP {status} (not authorised: check OPENAI_API_KEY)"
            )
        if status == 404:
            return LlmUnavailable(
                f"the LLM endpoint answered HTTP 404 (check TRAINERAGENT_LLM_BASE_URL and TRAINERAGENT_LLM_MODEL "
                f"{self.model!r}): {self._detail(exc)}"
            )
        if status == 408:
            return LlmTimeout(f"the LLM endpoint answered HTTP 408 (request timeout) within {self.timeout_s:g} s")
        if status >= 500:
            return LlmUnavailable(f"the LLM endpoint answered HTTP {status} (server error): {self._detail(exc)}")
        return LlmUnavailable(f"the LLM endpoint answered HTTP {status}: {self._detail(exc)}")


def _within(call: Callable[[], Any], seconds: float, on_timeout: Callable[[], Exception]) -> Any:
    """``call()`` with a hard deadline: HTTP timeouts bound each read, not a server that trickles bytes."""
    results: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            results.put((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            results.put((False, exc))

    threading.Thread(target=run, name="llm-call", daemon=True).start()
    try:
        ok, value = results.get(timeout=seconds + 0.25)
    except queue.Empty:
        raise on_timeout() from None
    if ok:
        return value
    raise value


def _retry_after_s(headers: Any) -> float:
    """The server's Retry-After (seconds, milliseconds or an HTTP date), capped; a short default."""
    wait: float | None = None
    try:
        if headers.get("retry-after-ms"):
            wait = float(headers["retry-after-ms"]) / 1000.0
        elif headers.get("retry-after"):
            raw = headers["retry-after"]
            try:
                wait = float(raw)
            except ValueError:
                when = email.utils.parsedate_to_datetime(raw)
                wait = when.timestamp() - time.time()
    except (TypeError, ValueError, KeyError):
        wait = None
    if wait is None or wait < 0:
        wait = RATE_LIMIT_DEFAULT_WAIT_S
    return min(wait, RATE_LIMIT_RETRY_CAP_S)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def _parse_json_object(completion: Any) -> dict[str, Any]:
    try:
        choice = completion.choices[0]
        content = choice.message.content
        finish_reason = getattr(choice, "finish_reason", None)
    except (AttributeError, IndexError, TypeError):
        raise LlmBadOutput("the LLM endpoint answered without a message (no choices)") from None
    if not content or not content.strip():
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            raise LlmBadOutput(f"the model refused to answer: {str(refusal)[:300]}", raw="")
        raise LlmBadOutput("the answer was empty", raw="")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:  # JSON mode on small local models sometimes wraps the object in a code fence
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = " (the answer was cut off: finish_reason length)" if finish_reason == "length" else ""
        raise LlmBadOutput(f"the answer is not valid JSON: {exc}{truncated}", raw=content) from None
    if not isinstance(value, dict):
        raise LlmBadOutput(f"the answer is JSON but not an object (got {type(value).__name__})", raw=content)
    return value
