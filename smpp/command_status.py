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

# SMPP 3.4 section 5.1.3, table 5-2: each code's name, once.
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RINVPRTFLG = 0x06
ESME_RINVREGDLVFLG = 0x07
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RCANCELFAIL = 0x11
ESME_RREPLACEFAIL = 0x13
ESME_RMSGQFUL = 0x14
ESME_RINVSERTYP = 0x15
ESME_RINVNUMDESTS = 0x33
ESME_RINVDLNAME = 0x34
ESME_RINVDESTFLAG = 0x40
ESME_RINVSUBREP = 0x42
ESME_RINVESMCLASS = 0x43
ESME_RCNTSUBDL = 0x44
ESME_RSUBMITFAIL = 0x45
ESME_RINVSRCTON = 0x48
ESME_RINVSRCNPI = 0x49
ESME_RINVDSTTON = 0x50
ESME_RINVDSTNPI = 0x51
ESME_RINVSYSTYP = 0x53
ESME_RINVREPFLAG = 0x54
ESME_RINVNUMMSGS = 0x55
ESME_RTHROTTLED = 0x58
ESME_RINVSCHED = 0x61
ESME_RINVEXPIRY = 0x62
ESME_RINVDFTMSGID = 0x63
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
ESME_RX_R_APPN = 0x66
ESME_RQUERYFAIL = 0x67
ESME_RINVOPTPARSTREAM = 0xC0
ESME_ROPTPARNOTALLWD = 0xC1
ESME_RINVPARLEN = 0xC2
ESME_RMISSINGOPTPARAM = 0xC3
ESME_RINVOPTPARAMVAL = 0xC4
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF

# SMPP 3.4 section 5.1.3, table 5-2. Texts as in the spec, spelled out where
# the spec abbreviates (they are shown to API clients).
STATUSES: dict[int, StatusInfo] = {
    ESME_ROK: StatusInfo("ESME_ROK", "No Error", _OK),
    ESME_RINVMSGLEN: StatusInfo("ESME_RINVMSGLEN", "Message Length is invalid", _FAIL),
    ESME_RINVCMDLEN: StatusInfo("ESME_RINVCMDLEN", "Command Length is invalid", _FAIL),
    ESME_RINVCMDID: StatusInfo("ESME_RINVCMDID", "Invalid Command ID", _FAIL),
    ESME_RINVBNDSTS: StatusInfo(
        "ESME_RINVBNDSTS", "Incorrect BIND Status for given command", _REBIND
    ),
    ESME_RALYBND: StatusInfo("ESME_RALYBND", "ESME Already in Bound State", _FAIL),
    ESME_RINVPRTFLG: StatusInfo("ESME_RINVPRTFLG", "Invalid Priority Flag", _FAIL),
    ESME_RINVREGDLVFLG: StatusInfo("ESME_RINVREGDLVFLG", "Invalid Registered Delivery Flag", _FAIL),
    ESME_RSYSERR: StatusInfo("ESME_RSYSERR", "System Error", _SYSTEM),
    ESME_RINVSRCADR: StatusInfo("ESME_RINVSRCADR", "Invalid Source Address", _FAIL),
    ESME_RINVDSTADR: StatusInfo("ESME_RINVDSTADR", "Invalid Destination Address", _FAIL),
    ESME_RINVMSGID: StatusInfo("ESME_RINVMSGID", "Message ID is invalid", _FAIL),
    ESME_RBINDFAIL: StatusInfo("ESME_RBINDFAIL", "Bind Failed", _FAIL),
    ESME_RINVPASWD: StatusInfo("ESME_RINVPASWD", "Invalid Password", _FAIL),
    ESME_RINVSYSID: StatusInfo("ESME_RINVSYSID", "Invalid System ID", _FAIL),
    ESME_RCANCELFAIL: StatusInfo("ESME_RCANCELFAIL", "Cancel SM Failed", _FAIL),
    ESME_RREPLACEFAIL: StatusInfo("ESME_RREPLACEFAIL", "Replace SM Failed", _FAIL),
    ESME_RMSGQFUL: StatusInfo("ESME_RMSGQFUL", "Message Queue Full", _QUEUE_FULL),
    ESME_RINVSERTYP: StatusInfo("ESME_RINVSERTYP", "Invalid Service Type", _FAIL),
    ESME_RINVNUMDESTS: StatusInfo("ESME_RINVNUMDESTS", "Invalid number of destinations", _FAIL),
    ESME_RINVDLNAME: StatusInfo("ESME_RINVDLNAME", "Invalid Distribution List name", _FAIL),
    ESME_RINVDESTFLAG: StatusInfo(
        "ESME_RINVDESTFLAG", "Destination flag is invalid (submit_multi)", _FAIL
    ),
    ESME_RINVSUBREP: StatusInfo(
        "ESME_RINVSUBREP",
        "Invalid 'submit with replace' request (i.e. submit_sm with replace_if_present_flag set)",
        _FAIL,
    ),
    ESME_RINVESMCLASS: StatusInfo("ESME_RINVESMCLASS", "Invalid esm_class field data", _FAIL),
    ESME_RCNTSUBDL: StatusInfo("ESME_RCNTSUBDL", "Cannot Submit to Distribution List", _FAIL),
    ESME_RSUBMITFAIL: StatusInfo("ESME_RSUBMITFAIL", "submit_sm or submit_multi failed", _FAIL),
    ESME_RINVSRCTON: StatusInfo("ESME_RINVSRCTON", "Invalid Source address TON", _FAIL),
    ESME_RINVSRCNPI: StatusInfo("ESME_RINVSRCNPI", "Invalid Source address NPI", _FAIL),
    ESME_RINVDSTTON: StatusInfo("ESME_RINVDSTTON", "Invalid Destination address TON", _FAIL),
    ESME_RINVDSTNPI: StatusInfo("ESME_RINVDSTNPI", "Invalid Destination address NPI", _FAIL),
    ESME_RINVSYSTYP: StatusInfo("ESME_RINVSYSTYP", "Invalid system_type field", _FAIL),
    ESME_RINVREPFLAG: StatusInfo("ESME_RINVREPFLAG", "Invalid replace_if_present flag", _FAIL),
    ESME_RINVNUMMSGS: StatusInfo("ESME_RINVNUMMSGS", "Invalid number of messages", _FAIL),
    ESME_RTHROTTLED: StatusInfo(
        "ESME_RTHROTTLED",
        "Throttling error (ESME has exceeded allowed message limits)",
        _THROTTLED,
    ),
    ESME_RINVSCHED: StatusInfo("ESME_RINVSCHED", "Invalid Scheduled Delivery Time", _FAIL),
    ESME_RINVEXPIRY: StatusInfo(
        "ESME_RINVEXPIRY", "Invalid message validity period (Expiry time)", _FAIL
    ),
    ESME_RINVDFTMSGID: StatusInfo(
        "ESME_RINVDFTMSGID", "Predefined Message Invalid or Not Found", _FAIL
    ),
    ESME_RX_T_APPN: StatusInfo("ESME_RX_T_APPN", "ESME Receiver Temporary App Error Code", _SYSTEM),
    ESME_RX_P_APPN: StatusInfo("ESME_RX_P_APPN", "ESME Receiver Permanent App Error Code", _FAIL),
    ESME_RX_R_APPN: StatusInfo("ESME_RX_R_APPN", "ESME Receiver Reject Message Error Code", _FAIL),
    ESME_RQUERYFAIL: StatusInfo("ESME_RQUERYFAIL", "query_sm request failed", _FAIL),
    ESME_RINVOPTPARSTREAM: StatusInfo(
        "ESME_RINVOPTPARSTREAM", "Error in the optional part of the PDU Body", _FAIL
    ),
    ESME_ROPTPARNOTALLWD: StatusInfo(
        "ESME_ROPTPARNOTALLWD", "Optional Parameter not allowed", _FAIL
    ),
    ESME_RINVPARLEN: StatusInfo("ESME_RINVPARLEN", "Invalid Parameter Length", _FAIL),
    ESME_RMISSINGOPTPARAM: StatusInfo(
        "ESME_RMISSINGOPTPARAM", "Expected Optional Parameter missing", _FAIL
    ),
    ESME_RINVOPTPARAMVAL: StatusInfo(
        "ESME_RINVOPTPARAMVAL", "Invalid Optional Parameter Value", _FAIL
    ),
    ESME_RDELIVERYFAILURE: StatusInfo(
        "ESME_RDELIVERYFAILURE", "Delivery Failure (used for data_sm_resp)", _FAIL
    ),
    ESME_RUNKNOWNERR: StatusInfo("ESME_RUNKNOWNERR", "Unknown Error", _FAIL),
}

BIND_REFUSED: frozenset[int] = frozenset({ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID})
VENDOR_SPECIFIC = range(0x400, 0x500)  # codes an SMSC vendor defines (5.1.3)


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
    if status in VENDOR_SPECIFIC:
        return f"SMSC vendor specific error 0x{status:08X}"
    return f"Unknown command_status 0x{status:08X}"
