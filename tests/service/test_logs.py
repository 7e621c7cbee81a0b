"""The log filter: a DICOM library's message never carries an element's value."""

from __future__ import annotations

import logging

from service import logs


def test_a_quoted_value_in_a_dicom_librarys_message_is_withheld(caplog) -> None:
    logs.install()
    with caplog.at_level(logging.WARNING, logger="pydicom"):
        logging.getLogger("pydicom").warning("Invalid value for VR DA: '1907-08-09'")
        logging.getLogger("service").warning("analysis 'abc' stored")
    messages = [r.getMessage() for r in caplog.records]
    assert "Invalid value for VR DA: '(value withheld)'" in messages
    assert "1907-08-09" not in " ".join(messages)
    assert "analysis 'abc' stored" in messages  # the service's own lines are its own


def test_highdicoms_info_lines_are_kept_out_but_its_warnings_show() -> None:
    logs.configure()
    highdicom = logging.getLogger("highdicom.seg.sop")
    assert not highdicom.isEnabledFor(logging.INFO)
    assert highdicom.isEnabledFor(logging.WARNING)
