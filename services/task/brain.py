"""Which brain reads a request: the LLM when one is configured, else the rule brain; the rules' floor always.

The rule brain's review is a safety floor under the LLM: the LLM may refuse more than the rules,
never less. Every TaskSpec says which brain produced it (``brain``) and, when the LLM was asked for
but skipped, failed or was overruled, why (``fallback_reason``).
"""

from __future__ import annotations

import functools

from services.common.config import Settings
from services.common.errors import InvalidArgument
from services.common.llm import LlmClient, LlmError
from services.common.logging import get_logger
from services.task import llm_brain, rules
from traineragent.v1 import common_pb2

log = get_logger(__name__)

NOT_CONFIGURED = "no LLM endpoint is configured (set TRAINERAGENT_LLM_BASE_URL)"
OVERRULED = "the safety rules refused what the LLM accepted"
OVERRULED_CLARIFY = "the safety rules refused what the LLM asked to clarify"


@functools.lru_cache(maxsize=4)
def _client(base_url: str, model: str, timeout_s: float) -> LlmClient:
    """One client (one connection pool) per endpoint and process."""
    return LlmClient(base_url, model, timeout_s)


def read_request(
    text: str, settings: Settings, brain: str = "", client: LlmClient | None = None
) -> common_pb2.TaskSpec:
    """The TaskSpec for ``text``; says which brain produced it and why the LLM was skipped.

    ``brain``: "rules", "llm", or "" (the LLM when an endpoint is configured, else the rules).
    ``client`` replaces the process's LLM client (tests pass one aimed at a scripted server).
    """
    brain = (brain or "").strip().lower()
    if brain not in ("", "rules", "llm"):
        raise InvalidArgument(f"brain {brain!r} is not one of: rules, llm")
    rule_spec = rules.read_request(text)
    if brain == "rules":
        return rule_spec
    if not settings.llm_base_url:
        if brain == "llm":
            rule_spec.fallback_reason = NOT_CONFIGURED
        return rule_spec
    llm = client or _client(settings.llm_base_url, settings.llm_model, settings.llm_timeout_s)
    try:
        llm_spec = llm_brain.read_request_llm(text, llm)
    except LlmError as exc:
        reason = llm.scrub(str(exc))
        log.warning("llm_brain_failed_using_rules", reason=reason)
        rule_spec.fallback_reason = reason
        return rule_spec
    return _with_safety_floor(llm_spec, rule_spec)


def _with_safety_floor(llm_spec: common_pb2.TaskSpec, rule_spec: common_pb2.TaskSpec) -> common_pb2.TaskSpec:
    """The LLM's spec, unless the rules refuse what it did not: then the rules' refusal."""
    if rule_spec.decision != common_pb2.DECISION_REJECT:
        return llm_spec  # including the LLM's own refusals: it may refuse more than the rules
    if llm_spec.decision == common_pb2.DECISION_REJECT:
        if (
            rule_spec.reject_reason == common_pb2.REJECT_REASON_UNETHICAL
            and llm_spec.reject_reason != common_pb2.REJECT_REASON_UNETHICAL
        ):
            # Unethical before infeasible: the stronger reason is the one the user is told.
            llm_spec.reject_reason = rule_spec.reject_reason
            llm_spec.explanation = rule_spec.explanation
        return llm_spec
    reason = OVERRULED if llm_spec.decision == common_pb2.DECISION_ACCEPT else OVERRULED_CLARIFY
    log.warning("llm_brain_overruled_by_safety_rules", llm_decision=llm_spec.decision,
                reject_reason=rule_spec.reject_reason)
    rule_spec.fallback_reason = reason
    return rule_spec
