"""When to try again: exponential backoff with jitter, for items and for webhooks alike."""

from __future__ import annotations

import math
import random


def backoff(attempt: int, base: float, cap: float = math.inf) -> float:
    """base·2^(attempt-1), at most `cap`, drawn from [half, whole] so that retries spread out."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
