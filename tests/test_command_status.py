"""command_status: names, texts, and what the gateway does about each code."""

from __future__ import annotations

import pytest

from smpp.command_status import (
    BIND_REFUSED,
    STATUSES,
    Reaction,
    reaction_for,
    status_name,
    status_text,
)
from smpp.pdu import STATUS_NAMES


@pytest.mark.parametrize(
    ("status", "reaction"),
    [
        (0x00, Reaction.OK),
        (0x58, Reaction.RETRY_THROTTLED),
        (0x14, Reaction.RETRY_QUEUE_FULL),
        (0x08, Reaction.RETRY_SYSTEM),
        (0x64, Reaction.RETRY_SYSTEM),  # ESME_RX_T_APPN: temporary
        (0x04, Reaction.REBIND),
        # bad source / destination address
        (0x0A, Reaction.FAIL),
        (0x0B, Reaction.FAIL),
        # bad TON/NPI: configuration
        (0x48, Reaction.FAIL),
        (0x49, Reaction.FAIL),
        (0x50, Reaction.FAIL),
        (0x51, Reaction.FAIL),
        # malformed
        (0x01, Reaction.FAIL),
        (0x43, Reaction.FAIL),
        (0x62, Reaction.FAIL),
        (0xC0, Reaction.FAIL),
        (0xC1, Reaction.FAIL),
        (0xC2, Reaction.FAIL),
        (0xC3, Reaction.FAIL),
        (0xC4, Reaction.FAIL),
        # generic submit failure: no transient meaning in the spec
        (0x45, Reaction.FAIL),
        (0x65, Reaction.FAIL),
        (0x66, Reaction.FAIL),
        (0xFF, Reaction.FAIL),
        # bind statuses seen on a submit: nothing to retry
        (0x05, Reaction.FAIL),
        (0x0D, Reaction.FAIL),
        # unknown and vendor-specific codes
        (0x09, Reaction.FAIL),
        (0x400, Reaction.FAIL),
        (0xDEADBEEF, Reaction.FAIL),
    ],
)
def test_reaction_for(status, reaction):
    assert reaction_for(status) is reaction


def test_only_the_documented_codes_are_retried():
    retried = {code for code in STATUSES if reaction_for(code).retryable}
    assert retried == {0x04, 0x08, 0x14, 0x58, 0x64}


def test_retryable():
    assert not Reaction.OK.retryable
    assert not Reaction.FAIL.retryable
    assert Reaction.RETRY_THROTTLED.retryable
    assert Reaction.RETRY_QUEUE_FULL.retryable
    assert Reaction.RETRY_SYSTEM.retryable
    assert Reaction.REBIND.retryable


@pytest.mark.parametrize(
    ("status", "name", "text"),
    [
        (0x00, "ESME_ROK", "No Error"),
        (0x0B, "ESME_RINVDSTADR", "Invalid Destination Address"),
        (
            0x58,
            "ESME_RTHROTTLED",
            "Throttling error (ESME has exceeded allowed message limits)",
        ),
        (0x14, "ESME_RMSGQFUL", "Message Queue Full"),
        (0x04, "ESME_RINVBNDSTS", "Incorrect BIND Status for given command"),
        (0x45, "ESME_RSUBMITFAIL", "submit_sm or submit_multi failed"),
        (0x64, "ESME_RX_T_APPN", "ESME Receiver Temporary App Error Code"),
        (0x65, "ESME_RX_P_APPN", "ESME Receiver Permanent App Error Code"),
        (0x66, "ESME_RX_R_APPN", "ESME Receiver Reject Message Error Code"),
        (0xC4, "ESME_RINVOPTPARAMVAL", "Invalid Optional Parameter Value"),
        (0xFF, "ESME_RUNKNOWNERR", "Unknown Error"),
    ],
)
def test_names_and_texts(status, name, text):
    assert status_name(status) == name
    assert status_text(status) == text


def test_unknown_codes():
    assert status_name(0x09) == "UNKNOWN_0x00000009"
    assert status_name(0x400) == "UNKNOWN_0x00000400"
    assert status_text(0x09) == "Unknown command_status 0x00000009"
    assert status_text(0x401) == "SMSC vendor specific error 0x00000401"


def test_table_covers_every_smpp34_code():
    expected = (
        set(range(0x00, 0x09))
        | set(range(0x0A, 0x10))
        | {0x11, 0x13, 0x14, 0x15, 0x33, 0x34, 0x40, 0x42, 0x43, 0x44, 0x45}
        | {0x48, 0x49, 0x50, 0x51, 0x53, 0x54, 0x55, 0x58}
        | set(range(0x61, 0x68))
        | set(range(0xC0, 0xC5))
        | {0xFE, 0xFF}
    )
    assert set(STATUSES) == expected
    assert all(info.name.startswith("ESME_R") and info.text for info in STATUSES.values())


def test_names_agree_with_smpplib():
    # smpplib's constants are an independent transcription of the same spec table
    assert {code: status_name(code) for code in STATUS_NAMES} == STATUS_NAMES


def test_bind_refused():
    assert sorted(BIND_REFUSED) == [0x0D, 0x0E, 0x0F]
    assert [status_name(code) for code in sorted(BIND_REFUSED)] == [
        "ESME_RBINDFAIL",
        "ESME_RINVPASWD",
        "ESME_RINVSYSID",
    ]
