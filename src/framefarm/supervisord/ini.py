"""Values written into supervisord.conf so that supervisord reads back exactly the path or command meant.

supervisord reads its file with configparser, which cuts a value at `` ;`` or `` #`` (an inline comment) and
strips it, then expands ``%(name)s`` in it, and splits ``command=`` with shlex. So every ``%`` is doubled, a
command is shell-escaped character by character (a backslash also keeps ``;`` and ``#`` from starting a
comment), and a path that holds `` ;`` or `` #`` is written relative to ``%(here)s``, the folder of the
file, which supervisord puts in after those steps. A line break fits nowhere: such a path is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import MasterError

HERE = "%(here)s"
INLINE_COMMENT = re.compile(r"\s[;#]")
LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines splits on
SHELL_SAFE = re.compile(r"[\w@%+=:,./-]")  # \w is Unicode-aware: letters of any script need no escape


def _fits(text: str) -> bool:
    return not (INLINE_COMMENT.search(text) or LINE_BREAKS.search(text) or text != text.strip())


def _unfit(text: str) -> MasterError:
    return MasterError(
        f"{text!r} cannot be written into supervisord.conf: it holds a line break, or a space followed by ; or #, "
        "in a folder whose name also holds %; rename the folder or choose another runtime_dir"
    )


def comment(text: str) -> str:
    """``text`` for a comment line, which configparser skips whole: only a line break would end it."""
    if LINE_BREAKS.search(text):
        raise _unfit(text)
    return text


def path(target: Path, here: Path, *, expansions: int = 1) -> str:
    """``target`` as a value: as it is where that fits, else relative to ``%(here)s`` (``here`` being the folder
    of supervisord.conf), which supervisord substitutes after parsing, so that no character of it is read as
    syntax; that last way cannot hold a ``%`` in ``here``, since supervisord expands ``%`` after it.
    ``expansions``: how many times supervisord expands ``%`` in that value (twice in ``stdout_logfile``)."""
    text, percent = str(target), "%" * 2**expansions
    if _fits(text):
        return text.replace("%", percent)
    relative = os.path.relpath(target, here)
    if "%" in str(here) or LINE_BREAKS.search(str(here)) or not _fits(relative):
        raise _unfit(text)
    return f"{HERE}/{relative.replace('%', percent)}"


def command(args: Iterable[str]) -> str:
    """A ``command=`` value that supervisord splits back into exactly ``args``."""
    words = [_shell_word(arg) for arg in args]
    text = " ".join(words)
    if LINE_BREAKS.search(text):
        raise _unfit(text)
    return text.replace("%", "%%")


def _shell_word(arg: str) -> str:
    if not arg:
        return "''"
    return "".join(c if SHELL_SAFE.fullmatch(c) else "\\" + c for c in arg)
