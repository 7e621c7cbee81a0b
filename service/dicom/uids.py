"""What a DICOM UID may be (PS3.5 9.1): the one rule for every name made from a UID.

Components of digits separated by single dots, no leading zero in a component (0 alone
is one), at most 64 characters. ".", ".." and "1..2" are not UIDs, so a UID that passes
is also a safe file name: no separator, no parent, nothing a file system reads specially.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime

import pydicom

# Makes the UID of one part of a result (a role: "seg", "sr-series", "tracking-scar", ...).
UidMaker = Callable[[str], str]
_NAMESPACE = uuid.UUID("7b0e6c52-3f43-5e8a-9c51-2d8f1b7e4a10")

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


def is_uid(text: str) -> bool:
    return len(text) <= UID_MAX_LENGTH and UID_PATTERN.match(text) is not None


def random_uids(role: str) -> str:
    return pydicom.uid.generate_uid(prefix=None)


def uids_of(seed: str) -> UidMaker:
    """UIDs named by ``seed`` (an analysis id) and a role (PS3.5 B.2: 2.25 and a name-based
    UUID): the SEG and SR encoded again from what was stored carry the same UIDs."""
    return lambda role: f"2.25.{uuid.uuid5(_NAMESPACE, f'{seed}/{role}').int}"


def stamp(ds: pydicom.Dataset, when: datetime) -> None:
    """The dataset's content and creation date and time set to ``when`` (the analysis'),
    so that encoding it again gives the same bytes."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    for prefix in ("Content", "InstanceCreation", "Series"):
        if f"{prefix}Date" in ds or prefix != "Series":
            setattr(ds, f"{prefix}Date", date)
            setattr(ds, f"{prefix}Time", time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


def rename_uid(ds: pydicom.Dataset, keyword: str, new: str) -> None:
    """Every element ``keyword`` anywhere in ``ds`` set to ``new`` (a UID a library drew at
    random, such as the SEG's Dimension Organization UID, made reproducible)."""
    for element in ds.iterall():
        if element.keyword == keyword:
            element.value = new
