"""An SMSC simulator speaking SMPP v3.4, for development, tests and benchmarks.

Our own asyncio server; smpplib is only the PDU codec (``smpp.pdu``).
``make run`` starts it (``manage.py smsc_simulator``) when no SMSC is
configured; tests start it in-process (``SMSCSimulator`` on their loop, or
``SimulatorThread`` for synchronous code). It behaves like a real SMSC where a
gateway can go wrong, and can be told to misbehave (``SimulatorConfig``).

Sessions
    bind_transmitter/receiver/transceiver with ``system_id``/``password``
    (default ``smsapi``/``secret``): wrong system_id -> ESME_RINVSYSID (0x0F),
    wrong password -> ESME_RINVPASWD (0x0E), a second bind on the session or
    more than ``max_binds_per_user`` -> ESME_RALYBND (0x05). submit_sm, query_sm
    and unbind before a bind (or submit_sm on a receiver) -> ESME_RINVBNDSTS
    (0x04). enquire_link is answered in any state; unbind is answered and the
    connection closed. An unknown command -> generic_nack ESME_RINVCMDID (0x03),
    a body that does not decode -> generic_nack ESME_RINVCMDLEN (0x02); the
    session stays up (an impossible command_length closes it: the stream is
    lost). ``unbind_all()`` makes the SMSC unbind every session.

Message ids
    A decimal counter (starting from a clock-based number so that ids do not
    repeat across runs). ``hex_ids``: submit_sm_resp carries the id in lowercase
    hex while the receipt text's ``id:`` carries the same number in decimal
    (a real SMSC quirk); the ``receipted_message_id`` TLV is as in the resp.

Outcome by destination_addr
    ======================================== =====================================
    empty, starts with ``rej`` or             submit_sm_resp ESME_RINVDSTADR (0x0B)
    ``reject_dst_prefix`` (default ``999``)
    starts with ``undeliv`` or                receipt stat UNDELIV, err 001,
    ``undeliv_dst_prefix`` (default ``998``)  message_state 5
    starts with ``expire`` or                 receipt stat EXPIRED, err 001,
    ``expire_dst_prefix`` (default ``997``)   message_state 3
    anything else                             receipt stat DELIVRD, err 000,
                                              message_state 2
    ======================================== =====================================

    ``receipt_stat`` (e.g. ``"UNDELIV"``) overrides the stat for every message.

Receipts
    For registered_delivery & 3 == 1 (always) or == 2 (failures only), one per
    submitted part, ``receipt_delay`` seconds after the submit_sm_resp: a
    deliver_sm with esm_class 0x04 from the handset (the submit's destination)
    to the submit's source, text ``id:<decimal id> sub:001 dlvrd:001 submit
    date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 text:<20 chars>``
    (dates in UTC) and TLVs receipted_message_id, message_state and
    network_error_code (03 00 <err>); ``receipt_tlvs``/``receipt_text`` switch
    either off. query_sm answers ENROUTE (1) until then, the final state after,
    and ESME_RINVMSGID (0x0C) for an unknown id.

Delivery to the client (receipts and MO alike)
    Queued per system_id, not per connection, and sent to a bound receiver or
    transceiver of that system_id (round robin, at most ``deliver_window``
    unanswered per session). A deliver_sm answered with a non-zero status (e.g.
    0x64 ESME_RX_T_APPN) or not answered within ``deliver_timeout`` is sent
    again after ``redeliver_delay``; those unanswered when a connection drops
    are sent again on the next bind. Only "not now" statuses (0x64, 0x58, 0x14,
    0x08) are retried; any other error refuses the deliver_sm for good and it is
    dropped (``deliveries_refused``), as a real SMSC drops it.

Incoming messages
    ``inject_mo(src, dst, text, encoding="gsm7"|"ucs2"|"latin1",
    split="none"|"udh"|"sar", out_of_order=False)``: see ``texts.split_mo``.

Faults (``SimulatorConfig`` fields, same-named CLI flags)
    ``error_rate``/``error_status``, ``max_rate`` (token bucket per session,
    answers 0x58), ``max_window`` (unanswered submits per session, with
    ``response_delay``; answers 0x58), ``response_delay`` (each response on its
    own timer), ``drop_response_rate`` (accepted, recorded, receipt sent, no
    response), ``disconnect_every_pdus`` (abort after the N-th PDU a bound
    session received, once it is handled), ``disconnect_every_seconds``,
    ``receipt_before_response``, ``malformed_rate`` (a PDU with command_id
    0x000000FF before the submit_sm_resp). ``stats()`` counts what happened.
    The window (``max_outstanding_seen``, ``max_window``) is measured in every
    scenario: a submit is outstanding from its read until its response is written.

A hostile SMSC (same-named CLI flags; docs/simulator.md)
    ``message_id_length`` (ids longer than SMPP's 64), ``empty_id_rate`` (status
    0 without an id), ``receipt_nul`` (NUL in receipt texts),
    ``truncated_deliver_rate`` (deliver_sm bodies cut short), ``flood_after_pdus``
    / ``flood_rate`` (stop reading and flood with enquire_link),
    ``pdus_before_bind_resp`` (an enquire_link and an MO before bind_resp),
    ``mo_source_addr_length`` (MO source_addr longer than SMPP allows).

Real SMSCs' habits (same-named CLI flags; docs/simulator.md)
    ``data_sm`` (receipts and MO sent as data_sm), ``queue_full_for`` (each
    session answers 0x14 to every submit for N s after its bind; -1 for ever),
    ``bind_close`` (a bind answered by closing the connection).

Control from another process
    ``control_port``: a small HTTP/JSON interface, see ``control``.
"""

from smpp_gateway.simulator.config import SimulatorConfig
from smpp_gateway.simulator.records import Stats, SubmitRecord
from smpp_gateway.simulator.server import SMSCSimulator
from smpp_gateway.simulator.thread import SimulatorThread

__all__ = ["SMSCSimulator", "SimulatorConfig", "SimulatorThread", "Stats", "SubmitRecord"]
