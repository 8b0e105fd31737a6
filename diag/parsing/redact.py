"""Keeping user data out of everything diag stores, prints or forwards.

Prompts, generated text and request bodies appear in logs (vLLM before 0.11.1, DEBUG details,
`--enable-log-outputs`, llama.cpp -v). diag keeps derived facts only; the one piece of log text
it shows, a finding's excerpt, goes through `excerpt()`, which cuts everything after a marker
that introduces user content and bounds the length.
"""

from __future__ import annotations

import re

EXCERPT_MAX = 240
REDACTED = "«redacted»"

# Everything after one of these is user content (prompt, output, body, token ids).
_MARKERS = re.compile(
    r"(prompt: |prompt=|output: |response=|JSON body: |prompt_token_ids: |output_token_ids: |details: |"
    r"'content': |\"content\": ?|\"prompt\": ?|\"messages\": ?|for request '[^']*': |chat_template: |example_format: )"
)


def redact(line: str) -> str:
    m = _MARKERS.search(line)
    if m is not None:
        line = line[: m.end()] + REDACTED
    return line


def excerpt(text: str, at: int = 0) -> str:
    """The redacted, bounded line of `text` that contains offset `at`."""
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[start : end if end >= 0 else len(text)]
    line = redact(line.strip())
    if len(line) > EXCERPT_MAX:
        line = line[: EXCERPT_MAX - 1] + "…"
    return line
