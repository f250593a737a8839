"""Which brain reads a request: the LLM when one is configured and asked for, else the rule brain."""

from __future__ import annotations

from services.common.config import Settings
from services.common.errors import InvalidArgument
from services.task import rules
from traineragent.v1 import common_pb2


def read_request(text: str, settings: Settings, brain: str = "") -> common_pb2.TaskSpec:
    """The TaskSpec for ``text``; says which brain produced it and why the LLM was skipped."""
    brain = (brain or "").strip().lower()
    if brain not in ("", "rules", "llm"):
        raise InvalidArgument(f"brain {brain!r} is not one of: rules, llm")
    spec = rules.read_request(text)
    if brain == "llm" or (brain == "" and settings.llm_base_url):
        # The LLM brain arrives with the Task agent issue; until then the rule brain answers, and says so.
        spec.fallback_reason = "the LLM brain is not available in this version; the rule brain answered"
    return spec
