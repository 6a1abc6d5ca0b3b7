"""SMPP 3.4 command_status codes: their names, their meaning, and what we do about them.

One table, ``STATUSES``, holds each code's name, the spec's description and
our reaction to it in a submit_sm_resp, so nothing is written twice.

The reactions follow the spec's meaning of each code and the table in
``spec/smpp.md``:

- OK: accepted.
- RETRY_THROTTLED (0x58): we sent too fast; retry with backoff and slow the rate.
- RETRY_QUEUE_FULL (0x14): the SMSC's queue is full; retry later, with a
  longer delay than for throttling.
- RETRY_SYSTEM: a transient fault on the SMSC side; retry a few times.
  0x08 ESME_RSYSERR ("System Error") and 0x64 ESME_RX_T_APPN (the spec's
  *temporary* application error). 0x45 ESME_RSUBMITFAIL is *not* here: the
  spec gives it no transient meaning ("submit_sm or submit_multi failed"),
  and resubmitting a message the SMSC may have half-taken risks duplicates.
- REBIND (0x04 ESME_RINVBNDSTS): the SMSC does not consider us bound; requeue
  the part and rebind the session.
- FAIL: everything else, for good. This covers bad addresses (0x0A, 0x0B),
  bad TON/NPI (0x48-0x51, a configuration error), malformed PDUs (0x01, 0x43,
  0x62, 0xC0-0xC4: also log the PDU), permanent and reject application errors
  (0x65, 0x66), and codes we do not know (including the vendor range
  0x400-0x4FF), since retrying an unknown refusal can loop for ever.

Statuses of a bind_resp are the session's business, not a part's: 0x05
ESME_RALYBND means back off and bind again later; ``BIND_REFUSED`` (0x0D,
0x0E, 0x0F) means stop, say so loudly and retry slowly.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Reaction(enum.Enum):
    OK = "ok"
    RETRY_THROTTLED = "retry_throttled"
    RETRY_QUEUE_FULL = "retry_queue_full"
    RETRY_SYSTEM = "retry_system"
    REBIND = "rebind"
    FAIL = "fail"

    @property
    def retryable(self) -> bool:
        """Whether the part goes back to the queue rather than failing."""
        return self not in (Reaction.OK, Reaction.FAIL)


class StatusInfo(NamedTuple):
    name: str
    text: str
    reaction: Reaction


# Short aliases so each table row fits on one line.
_OK = Reaction.OK
_THROTTLED = Reaction.RETRY_THROTTLED
_QUEUE_FULL = Reaction.RETRY_QUEUE_FULL
_SYSTEM = Reaction.RETRY_SYSTEM
_REBIND = Reaction.REBIND
_FAIL = Reaction.FAIL

# SMPP 3.4 section 5.1.3, table 5-2. Texts as in the spec, spelled out where
# the spec abbreviates (they are shown to API clients).
STATUSES: dict[int, StatusInfo] = {
    0x00: StatusInfo("ESME_ROK", "No Error", _OK),
    0x01: StatusInfo("ESME_RINVMSGLEN", "Message Length is invalid", _FAIL),
    0x02: StatusInfo("ESME_RINVCMDLEN", "Command Length is invalid", _FAIL),
    0x03: StatusInfo("ESME_RINVCMDID", "Invalid Command ID", _FAIL),
    0x04: StatusInfo("ESME_RINVBNDSTS", "Incorrect BIND Status for given command", _REBIND),
    0x05: StatusInfo("ESME_RALYBND", "ESME Already in Bound State", _FAIL),
    0x06: StatusInfo("ESME_RINVPRTFLG", "Invalid Priority Flag", _FAIL),
    0x07: StatusInfo("ESME_RINVREGDLVFLG", "Invalid Registered Delivery Flag", _FAIL),
    0x08: StatusInfo("ESME_RSYSERR", "System Error", _SYSTEM),
    0x0A: StatusInfo("ESME_RINVSRCADR", "Invalid Source Address", _FAIL),
    0x0B: StatusInfo("ESME_RINVDSTADR", "Invalid Destination Address", _FAIL),
    0x0C: StatusInfo("ESME_RINVMSGID", "Message ID is invalid", _FAIL),
    0x0D: StatusInfo("ESME_RBINDFAIL", "Bind Failed", _FAIL),
    0x0E: StatusInfo("ESME_RINVPASWD", "Invalid Password", _FAIL),
    0x0F: StatusInfo("ESME_RINVSYSID", "Invalid System ID", _FAIL),
    0x11: StatusInfo("ESME_RCANCELFAIL", "Cancel SM Failed", _FAIL),
    0x13: StatusInfo("ESME_RREPLACEFAIL", "Replace SM Failed", _FAIL),
    0x14: StatusInfo("ESME_RMSGQFUL", "Message Queue Full", _QUEUE_FULL),
    0x15: StatusInfo("ESME_RINVSERTYP", "Invalid Service Type", _FAIL),
    0x33: StatusInfo("ESME_RINVNUMDESTS", "Invalid number of destinations", _FAIL),
    0x34: StatusInfo("ESME_RINVDLNAME", "Invalid Distribution List name", _FAIL),
    0x40: StatusInfo("ESME_RINVDESTFLAG", "Destination flag is invalid (submit_multi)", _FAIL),
    0x42: StatusInfo(
        "ESME_RINVSUBREP",
        "Invalid 'submit with replace' request (i.e. submit_sm with replace_if_present_flag set)",
        _FAIL,
    ),
    0x43: StatusInfo("ESME_RINVESMCLASS", "Invalid esm_class field data", _FAIL),
    0x44: StatusInfo("ESME_RCNTSUBDL", "Cannot Submit to Distribution List", _FAIL),
    0x45: StatusInfo("ESME_RSUBMITFAIL", "submit_sm or submit_multi failed", _FAIL),
    0x48: StatusInfo("ESME_RINVSRCTON", "Invalid Source address TON", _FAIL),
    0x49: StatusInfo("ESME_RINVSRCNPI", "Invalid Source address NPI", _FAIL),
    0x50: StatusInfo("ESME_RINVDSTTON", "Invalid Destination address TON", _FAIL),
    0x51: StatusInfo("ESME_RINVDSTNPI", "Invalid Destination address NPI", _FAIL),
    0x53: StatusInfo("ESME_RINVSYSTYP", "Invalid system_type field", _FAIL),
    0x54: StatusInfo("ESME_RINVREPFLAG", "Invalid replace_if_present flag", _FAIL),
    0x55: StatusInfo("ESME_RINVNUMMSGS", "Invalid number of messages", _FAIL),
    0x58: StatusInfo(
        "ESME_RTHROTTLED",
        "Throttling error (ESME has exceeded allowed message limits)",
        _THROTTLED,
    ),
    0x61: StatusInfo("ESME_RINVSCHED", "Invalid Scheduled Delivery Time", _FAIL),
    0x62: StatusInfo("ESME_RINVEXPIRY", "Invalid message validity period (Expiry time)", _FAIL),
    0x63: StatusInfo("ESME_RINVDFTMSGID", "Predefined Message Invalid or Not Found", _FAIL),
    0x64: StatusInfo("ESME_RX_T_APPN", "ESME Receiver Temporary App Error Code", _SYSTEM),
    0x65: StatusInfo("ESME_RX_P_APPN", "ESME Receiver Permanent App Error Code", _FAIL),
    0x66: StatusInfo("ESME_RX_R_APPN", "ESME Receiver Reject Message Error Code", _FAIL),
    0x67: StatusInfo("ESME_RQUERYFAIL", "query_sm request failed", _FAIL),
    0xC0: StatusInfo("ESME_RINVOPTPARSTREAM", "Error in the optional part of the PDU Body", _FAIL),
    0xC1: StatusInfo("ESME_ROPTPARNOTALLWD", "Optional Parameter not allowed", _FAIL),
    0xC2: StatusInfo("ESME_RINVPARLEN", "Invalid Parameter Length", _FAIL),
    0xC3: StatusInfo("ESME_RMISSINGOPTPARAM", "Expected Optional Parameter missing", _FAIL),
    0xC4: StatusInfo("ESME_RINVOPTPARAMVAL", "Invalid Optional Parameter Value", _FAIL),
    0xFE: StatusInfo("ESME_RDELIVERYFAILURE", "Delivery Failure (used for data_sm_resp)", _FAIL),
    0xFF: StatusInfo("ESME_RUNKNOWNERR", "Unknown Error", _FAIL),
}

BIND_REFUSED: frozenset[int] = frozenset({0x0D, 0x0E, 0x0F})
# The two "not now" answers the link's health figures count apart.
ESME_RTHROTTLED = 0x58
ESME_RMSGQFUL = 0x14


def reaction_for(status: int) -> Reaction:
    """What to do with a part whose submit_sm_resp carried this status."""
    info = STATUSES.get(status)
    return info.reaction if info else Reaction.FAIL


def status_name(status: int) -> str:
    """``ESME_RINVDSTADR`` for 0x0B; ``UNKNOWN_0x00000400`` for a code not in SMPP 3.4."""
    info = STATUSES.get(status)
    return info.name if info else f"UNKNOWN_0x{status:08X}"


def status_text(status: int) -> str:
    """The spec's description of the status, for humans (e.g. an API error body)."""
    info = STATUSES.get(status)
    if info:
        return info.text
    if 0x400 <= status <= 0x4FF:
        return f"SMSC vendor specific error 0x{status:08X}"
    return f"Unknown command_status 0x{status:08X}"
