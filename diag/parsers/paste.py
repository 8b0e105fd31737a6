"""What happens to log text on its way into an issue thread, a chat or a ticket, undone.

Users rarely hand over a log file. They paste a fragment: wrapped in markdown (`**bold**`, inline
backticks, `> ` quotes), with the lines they thought irrelevant replaced by `...`, with the shell
prompt and command that produced it, copied from a terminal that hard-wrapped long lines at its
width. diag reads those pastes the same way it reads a file, so these marks are taken off before
the wrappers and format parsers see a line. What a paste adds is never rule input: an ellipsis
line carries nothing, and a shell prompt line is what the user typed, not what a server wrote.
"""

from __future__ import annotations

import re

# What one physical line is, once the paste marks are off.
LOG, ELLIPSIS, PROMPT = 0, 1, 2

_ELLIPSIS = re.compile(r"\s*(?:\.{3,}|…+|\[\.\.\.\]|\(\.\.\.\)|<\.\.\.>|\[…\]|\.\.\. ?\(?(?:truncated|omitted|snip)[^\n]{0,40})\s*\Z", re.I)
# `user@host:~/dir$ cmd`, `(venv) root@box:/# cmd`, `$ cmd`, `# cmd`, `PS C:\> cmd`, `>>> code`
_PROMPT = re.compile(r"(?:\([\w.-]+\) )?(?:[\w.-]+@[\w.-]+(?::[^\s$#]*)?\s?[$#]|[$#]|PS [A-Z]:\\[^>]*>|>>>) (?=\S)")
_QUOTE = re.compile(r"(?:> ?)+(?=\S|\Z)")


def clean(text: str) -> tuple[str, int]:
    """Remove the marks of a paste from one line; say whether it is a log line at all."""
    if "```" in text:
        # a code fence glued to the text it opens or closes
        if text.startswith("```"):
            text = text[3:] if " " in text[3:12] or text[3:4] in "[({<" else ""
        if text.endswith("```"):
            text = text[:-3]
    c = text[:1]
    if c in ">*`":
        if c == ">" and not text.startswith(">>>"):
            m = _QUOTE.match(text)
            if m:
                text = text[m.end():]
                if text[:2] in ("- ", "* ", "+ "):
                    text = text[2:]  # a list item inside the quote
        if text.startswith("**"):
            text = text[2:]
            if text.endswith("**"):
                text = text[:-2]
        elif text.startswith("`") and text.endswith("`") and len(text) > 2 and not text.startswith("``"):
            text = text[1:-1]
        c = text[:1]
    elif text.endswith("**") and "**" not in text[:-2]:
        text = text[:-2]  # `**` closing a bold run that began on an earlier line
    if c in ".…[(<" or (c in " \t" and text.strip()[:1] in (".", "…")):
        if _ELLIPSIS.match(text):
            return text, ELLIPSIS
    if c in "$#(>P" or "@" in text[:64]:
        m = _PROMPT.match(text)
        if m and (c in "$#>P" or "@" in text[: m.end()]):
            return text, PROMPT
    return text, LOG
