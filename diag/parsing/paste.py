"""What happens to log text on its way into an issue thread, a chat or a ticket, undone.

Users rarely hand over a log file. They paste a fragment: wrapped in markdown (`**bold**`, inline
backticks, `> ` quotes), with the lines they thought irrelevant replaced by `...`, with the shell
prompt and command that produced it, copied from a terminal that hard-wrapped long lines at its
width. diag reads those pastes the same way it reads a file, so these marks are taken off before
the wrappers and format parsers see a line, and the pieces of a hard-wrapped line are put back
together (`Unwrap`, used by the source parser, `diag.parsing.source`). What a paste adds is never rule input: an ellipsis
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


# -- hard wraps -------------------------------------------------------------------------------
# A terminal (or a log viewer) that is narrower than a line breaks it at its width: the break falls
# anywhere, mid-word included, and the rest goes on at column 0 of the next physical line, with no
# prefix. Copied from there, one record arrives as several lines, and a traceback's exception line
# as two. The join is decided by shape only, never by content: the line before must be exactly as
# wide as a terminal, and the line after must carry nothing that starts a record of its own.

# Widths at which a wrap is believed without more evidence (common terminal and viewer widths).
WIDTHS = frozenset((80, 100, 120, 132, 160, 200))
MIN_WIDTH = 80
MAX_SEGMENTS = 64  # physical lines one wrapped line may be joined from
MAX_CHARS = 256 * 1024
_LEARN_AFTER = 2  # a width seen this often before a mid-word break is the terminal's width
_MAX_WIDTHS = 64

# Prefixless text that still begins a record: a continuation never starts like this.
_NEW_RECORD = re.compile(
    r"""\s*File\ "|Traceback\ \(most\ recent|During\ handling\ of|The\ above\ exception
    |[A-Za-z_][\w.]*(?:Error|Exception|Warning|Interrupt|Exit)(?::|\s*\Z)   # an exception line
    |\S+\.py:\d+:\ \w*Warning:                                             # warnings.warn()
    |Process\ [\w-]+:|terminate\ called|\s*what\(\):|Fatal\ Python\ error|Segmentation\ fault|Killed\b|Aborted\b
    |[\w .-]{1,60}:\s+\d+%\s*(?:\||Completed)                                 # a progress bar
    """, re.X)


class Unwrap:
    """Which physical lines are the rest of a line the terminal broke at its width.

    Widths are learned: a width is believed once two lines of exactly that width were each
    followed by a prefixless line and the break fell mid-word (no space on either side). At a
    common terminal width a mid-word break is believed at once; anywhere else the first wraps of a
    paste stay split, and from then on they are joined, at a space too.
    """

    __slots__ = ("_seen", "widths")

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}
        self.widths: set[int] = set(WIDTHS)  # believed terminal widths (common ones and learned ones)

    def full(self, text: str) -> bool:
        """Is this line exactly as wide as the terminal, so that its end may be a wrap?"""
        return len(text) in self.widths

    def joins(self, first: str, segment: str, text: str) -> bool:
        """Is prefixless `text` the rest of `segment`, a line as wide as the terminal that is the
        last piece of a line starting with `first`?

        Without learned evidence for this width the break must fall mid-word (a line that merely
        ends at column 80 is followed by an indented frame or code line far more often than by a
        wrap). A line that starts the way the held one started (`kernel: `, `[42027] `, a
        timestamp, a box-drawing border) is the next record in a format diag has no parser for.
        """
        if not self.may_continue(text) or text[:4] == first[:4]:
            return False
        if text[:1].strip() and segment[-1:].strip():
            self._learn(len(segment))  # a mid-word break: evidence for this width
            return True
        return self._seen.get(len(segment), 0) >= _LEARN_AFTER

    @staticmethod
    def may_continue(text: str) -> bool:
        """Could this prefixless line be the rest of the one before (by its shape alone)?"""
        return bool(text.strip()) and _NEW_RECORD.match(text) is None

    def observe(self, prev: str, text: str) -> None:
        """`text` had no recognised prefix and followed `prev`: learn the width from a mid-word break."""
        n = len(prev)
        if (n >= MIN_WIDTH and text[:1].strip() and prev[-1:].strip()
                and text[:4] != prev[:4] and self.may_continue(text)):
            self._learn(n)

    def padded(self, prev: str, text: str) -> bool:
        """Is `text` a continuation the terminal padded with spaces to the width of `prev`?

        Copied from tmux, screen or a console window, a wrapped line's pieces all come out as
        wide as the terminal, the last one padded with spaces: a prefixless line ending in spaces
        whose length is exactly that of the line before is the rest of it, and that length is the
        terminal's width from then on.
        """
        n = len(prev)
        if n < MIN_WIDTH or len(text) != n or not text.endswith(" ") or not prev[-1:].strip():
            return False
        if not self.may_continue(text) or text[:4] == prev[:4]:
            return False
        self._seen[n] = max(self._seen.get(n, 0), _LEARN_AFTER)
        self.widths.add(n)
        return True

    def _learn(self, n: int) -> None:
        seen = self._seen
        if n in seen or len(seen) < _MAX_WIDTHS:
            seen[n] = seen.get(n, 0) + 1
            if seen[n] >= _LEARN_AFTER:
                self.widths.add(n)
