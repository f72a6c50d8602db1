"""How a score is said to people: one function for the snapshot label, the web pages and the email.

The event's ``top_score`` is the score they all say. A trial found three numbers for one event (the label
0.77, the page 73 %, the email 63 %): the label printed one frame's raw score, the others two roundings of
different scores.
"""

from __future__ import annotations

import math


def percent(score: float) -> str:
    """``0.725`` → ``"73 %"``: rounded half up, as the browser's ``Math.round`` does (Python's ``round`` and
    ``format`` round half to even, which once made the page and the email differ by one)."""
    return f"{math.floor(score * 100 + 0.5):d} %"
