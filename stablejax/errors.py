"""The error raised for bad user input: a file, a key or field in it, or a value given."""

from __future__ import annotations

import re


class InputError(ValueError):
    """Bad user input: an unreadable file, a missing key or field, an invalid value.

    The message is one line naming the file (and the key, field or frame), the value and the
    rule it breaks, e.g. ``data/train.npz: forces have shape (5, 3, 3) but positions have
    (5, 4, 3)``. Line breaks in the message (e.g. from a third-party parser's error text) are
    folded into spaces. A ``ValueError`` subclass, so ``except ValueError`` handlers (the CLI
    prints ``error: <message>`` and exits with status 1) catch it.
    """

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())
