"""Schemathesis hooks for .ci/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The API refuses a reused Idempotency-Key sent with another body (422, as the IETF draft says),
a rule no schema can state, and the fuzzer draws the same short keys again and again. So each
generated key that is valid becomes a fresh UUID; invalid ones are kept, so the negative tests
still reach the header's validation.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

from asynctask.service.openapi import KEY_PATTERN

_KEY = re.compile(KEY_PATTERN)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Give every schema-valid Idempotency-Key a value of its own (a case hook: every phase)."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and _KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    return case
