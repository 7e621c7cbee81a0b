"""The service's log: analysis ids, UIDs, timings, stage outcomes; never an element's value.

pydicom (and highdicom) quote the offending value when they warn about an
invalid element (``Invalid value for VR DA: '1901-02-03'``), and such a
value is often the patient's name, ID or birth date. Their log records and
warnings pass through :class:`WithholdValues` before any handler writes them.
"""

from __future__ import annotations

import logging
import re

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'")
# Loggers whose messages may quote DICOM element values.
_DICOM_LOGGERS = ("pydicom", "highdicom", "py.warnings")


class WithholdValues(logging.Filter):
    """Replaces every quoted value in a DICOM library's message with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in _DICOM_LOGGERS:
            message = record.getMessage()
            redacted = _QUOTED.sub("'(value withheld)'", message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def install() -> None:
    """Route warnings into logging and filter the DICOM libraries' records (idempotent)."""
    logging.captureWarnings(True)
    for name in _DICOM_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, WithholdValues) for f in logger.filters):
            logger.addFilter(WithholdValues())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, WithholdValues) for f in handler.filters):
            handler.addFilter(WithholdValues())


# Libraries whose INFO lines (highdicom: ~50 at warm-up, one per encoded frame group) would
# bury the service's own; their warnings still show.
QUIET_LIBRARIES = ("highdicom",)


def configure() -> None:
    """The log of ``python -m service``."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    install()
