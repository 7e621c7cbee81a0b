"""What a DICOM UID may be (PS3.5 9.1): the one rule for every name made from a UID.

Components of digits separated by single dots, no leading zero in a component (0 alone
is one), at most 64 characters. ".", ".." and "1..2" are not UIDs, so a UID that passes
is also a safe file name: no separator, no parent, nothing a file system reads specially.
"""

from __future__ import annotations

import re

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


def is_uid(text: str) -> bool:
    return len(text) <= UID_MAX_LENGTH and UID_PATTERN.match(text) is not None
