"""What counts as one query: its normalised spelling and the longest text the search accepts.

Kept free of other imports so that models (judgments, search logs) can use the same definition.
"""

# The longest query the search accepts; judged queries are held to the same limit.
QUERY_MAX_LENGTH = 1000


def normalize_query(text: str) -> str:
    """One spelling per query, so that the same question typed twice is one query (searched,
    judged or logged)."""
    return " ".join(text.split())
