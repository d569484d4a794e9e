"""The gateway's request pipeline: one `Exchange` per request, one `Chain` of policies per
route, compiled at config load, run inline until a step has to wait (docs/plugins.md,
docs/adr/0016-the-gateway-pipeline.md).

The public API for policies - built-in and custom - is what this package exports.
"""

from __future__ import annotations

from ..config.policies import register
from .chain import Chain, run_to_end
from .exchange import Exchange
from .policy import RELAY, SUSPEND, Answer, Policy, PolicyContext, Verdict, problem_answer

__all__ = [
    "RELAY",
    "SUSPEND",
    "Answer",
    "Chain",
    "Exchange",
    "Policy",
    "PolicyContext",
    "Verdict",
    "problem_answer",
    "register",
    "run_to_end",
]
