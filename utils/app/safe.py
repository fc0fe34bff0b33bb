"""What the search page shows from outside its code (a URL, a file name, a dataset's caption,
an error about them): as the text it is, never as Markdown or HTML, and queries capped.

A shared URL such as ``/?q=dog ![t](http://203.0.113.5/q.png) [re-login](http://x/phish)``
must neither make the browser fetch an outside image nor show a link; a 100,000-character
query must not grow the next address past what the server accepts.
"""

from __future__ import annotations

import re

MAX_QUERY_CHARS = 300  # the text towers read 32 to 64 tokens; a longer URL breaks sharing
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")
# Markdown turns bare addresses into links (GFM autolinks) after escapes are read: a zero-width
# space inside "://", "www." and "@" keeps them text, and shows nothing.
AUTOLINKS = ((re.compile(r":(?=//)"), ":\u200b"), (re.compile(r"(?i)\bwww\."), "www\u200b."),
             (re.compile("@"), "@\u200b"))
SAFE_NAME = re.compile(r"[\w.-]{1,80}")  # a file stem of models/, e.g. 03_clip


def as_text(value: object) -> str:
    """A value from outside (a file path in an error message, say) for Streamlit's Markdown,
    escaped so that it shows as typed: no link, no image fetched, no formatting. Text that is
    all outside (a query, a caption) is shown with st.text instead: no Markdown at all."""
    text = " ".join(str(value).split())
    for pattern, replacement in AUTOLINKS:
        text = pattern.sub(replacement, text)
    return MARKDOWN_SPECIALS.sub(r"\\\1", text)


def safe_name(value: str) -> str | None:
    """``value`` when it looks like a model file name, else None (not echoed at all)."""
    return value if SAFE_NAME.fullmatch(value) else None


def capped_query(query: str) -> str:
    """The query cut to MAX_QUERY_CHARS characters."""
    return query[:MAX_QUERY_CHARS]
