"""The LLM brain: reads a request into a TaskSpec by asking an OpenAI-compatible model.

The prompt is files beside this module (``prompts/``): the agent's profile, its standard operating
procedure and worked examples. The request goes in as data inside ``<request>`` tags. An answer that
is not JSON, breaks the schema or contradicts itself is sent back with the validation error, at most
twice; then the brain gives up with :class:`LlmBadOutput` and the caller falls back to the rules.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re

from services.common.llm import LlmBadOutput, LlmClient
from services.common.logging import get_logger
from services.task import schema
from traineragent.v1 import common_pb2

log = get_logger(__name__)

PROMPTS = pathlib.Path(__file__).with_name("prompts")
MAX_TRIES = 3


@functools.cache
def system_prompt() -> str:
    """Profile, SOP and the schema's field list: who the agent is, how it decides, what it answers."""
    profile = (PROMPTS / "profile.md").read_text(encoding="utf-8").strip()
    sop = (PROMPTS / "sop.md").read_text(encoding="utf-8").strip()
    return f"{profile}\n\n{sop}\n\n# The TaskSpec's fields (answer in JSON)\n\n{schema.field_list()}\n"


@functools.cache
def worked_examples() -> tuple[tuple[str, str], ...]:
    """(request, the TaskSpec JSON) pairs from ``prompts/examples.jsonl``."""
    pairs = []
    path = PROMPTS / "examples.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        try:
            spec = schema.validate_spec(item["spec"])
        except schema.SpecInvalid as exc:  # a broken example would teach the model to break the schema
            raise ValueError(f"{path}:{number}: the example's spec is invalid: {exc}") from exc
        pairs.append((item["request"], json.dumps(spec, ensure_ascii=False)))
    return tuple(pairs)


_TAG = re.compile(r"<(/?)(request)", re.IGNORECASE)


def wrap_request(text: str) -> str:
    """The request as data between tags; tags inside it are escaped so it cannot close them early."""
    escaped = _TAG.sub(r"&lt;\1\2", text)
    return f"<request>\n{escaped}\n</request>"


def build_messages(text: str, model_hint: str = "") -> list[dict[str, str]]:
    system = system_prompt()
    if model_hint:
        system += f"\n# Note from the system (not from the user)\n\n{model_hint}\n"
    messages = [{"role": "system", "content": system}]
    for request, answer in worked_examples():
        messages.append({"role": "user", "content": wrap_request(request)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": wrap_request(text)})
    return messages


def read_request_llm(text: str, client: LlmClient, model_hint: str = "") -> common_pb2.TaskSpec:
    """The LLM's TaskSpec for ``text`` (brain llm); raises an LlmError when it cannot give one.

    ``model_hint`` is trusted context from the caller (never from the user), added to the system prompt.
    """
    messages = build_messages(text, model_hint)
    error = ""
    for attempt in range(1, MAX_TRIES + 1):
        try:
            answer, mode = client.complete_json(messages, schema.TASK_SPEC_SCHEMA, schema.SCHEMA_NAME)
            spec = schema.spec_from_json(answer)
        except LlmBadOutput as exc:
            error, bad = str(exc), exc.raw
        except schema.SpecInvalid as exc:
            error, bad = str(exc), json.dumps(answer, ensure_ascii=False)
        else:
            spec.brain = common_pb2.BRAIN_LLM
            log.info("llm_brain_answered", attempt=attempt, mode=mode)
            return spec
        log.warning("llm_brain_invalid_answer", attempt=attempt, error=client.scrub(error))
        messages = [
            *messages,
            {"role": "assistant", "content": bad[:4000] or "(no answer)"},
            {"role": "user", "content": f"Your answer was invalid: {error}. Answer again with JSON matching the schema."},
        ]
    raise LlmBadOutput(
        client.scrub(f"the LLM's answers did not match the TaskSpec schema after {MAX_TRIES} tries: {error}")
    )
