"""The SMSC simulator, over real TCP, with our PDU codec as the client.

The client here is deliberately dumb (``TestClient``: write a PDU, read the
next one) so that each test states the exact PDU sequence a real SMSC would
produce. Waits have generous timeouts but nothing asserts on elapsed time:
where a test must show that something did *not* happen, it sends an
enquire_link and relies on the simulator answering in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smpplib import command_codes

from smpp.framing import PDUFormatError, peek_header, read_pdu
from smpp.pdu import decode_pdu, encode_pdu
from smpp_gateway.simulator import SimulatorConfig, SimulatorThread, SMSCSimulator
from smpp_gateway.simulator.texts import split_mo
from smpp_gateway.simulator.wire import deliver_sm, parse_submit_sm, submit_sm_resp

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0
RECEIPT_RE = re.compile(
    rb"^id:(\d+) sub:001 dlvrd:(\d{3}) submit date:(\d{10}) done date:(\d{10}) "
    rb"stat:([A-Z]{7}) err:(\d{3}) text:(.*)$"
)


# -- a minimal SMPP client ---------------------------------------------------------------


@dataclass
class Received:
    command_id: int
    status: int
    sequence: int
    data: bytes
    pdu: Any  # smpplib Command, or None for a command smpplib does not know

    @property
    def command(self) -> str:
        try:
            return command_codes.get_command_name(self.command_id)
        except Exception:
            return f"0x{self.command_id:08x}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pdu, name)


class TestClient:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.sequence = 0

    @classmethod
    async def connect(cls, port: int) -> TestClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, command: str, status: int = 0, sequence: int | None = None, **fields) -> int:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.writer.write(encode_pdu(command, sequence, status, **fields))
        return sequence

    def submit(self, destination: str = "4917012345", text: bytes = b"hello", **fields) -> int:
        fields.setdefault("source_addr", "SENDER")
        return self.send("submit_sm", destination_addr=destination, short_message=text, **fields)

    async def read(self, timeout: float = TIMEOUT) -> Received:
        data = await asyncio.wait_for(read_pdu(self.reader), timeout)
        _, command_id, status, sequence = peek_header(data)
        try:
            pdu = decode_pdu(data)
        except PDUFormatError:
            pdu = None
        return Received(command_id, status, sequence, data, pdu)

    async def expect(self, command: str, timeout: float = TIMEOUT) -> Received:
        received = await self.read(timeout)
        assert received.command == command, f"expected {command}, got {received}"
        return received

    async def bind(
        self, kind: str = "transceiver", system_id: str = "smsapi", password: str = "secret"
    ) -> Received:
        self.send(f"bind_{kind}", system_id=system_id, password=password)
        return await self.expect(f"bind_{kind}_resp")

    async def ping(self) -> None:
        """Round trip: everything the simulator sent before this is read before it returns."""
        sequence = self.send("enquire_link")
        received = await self.read()
        assert (received.command, received.sequence) == ("enquire_link_resp", sequence), received

    async def closed_by_peer(self, timeout: float = TIMEOUT) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def ack(client: TestClient, received: Received, status: int = 0) -> None:
    client.send("deliver_sm_resp", status=status, sequence=received.sequence, message_id="")


@pytest.fixture
async def start_sim() -> AsyncIterator:
    """Start simulators on ephemeral ports (``receipt_delay=0`` unless told otherwise)."""
    started: list[SMSCSimulator] = []

    async def start(**changes: Any) -> SMSCSimulator:
        changes = {"port": 0, "receipt_delay": 0.0, "first_message_id": 1, **changes}
        sim = SMSCSimulator(SimulatorConfig(**changes))
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


async def bound_client(sim: SMSCSimulator, kind: str = "transceiver") -> TestClient:
    client = await TestClient.connect(sim.port)
    response = await client.bind(kind)
    assert response.status == 0
    return client


async def wait_for(predicate, timeout: float = TIMEOUT) -> None:  # noqa: ANN001
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


# -- sessions ----------------------------------------------------------------------------


async def test_bind_checks_credentials(start_sim):
    sim = await start_sim()
    client = await TestClient.connect(sim.port)
    assert (await client.bind(password="wrong")).status == 0x0E  # ESME_RINVPASWD
    assert (await client.bind(system_id="nobody")).status == 0x0F  # ESME_RINVSYSID
    response = await client.bind("transmitter")
    assert response.status == 0
    assert response.system_id == b"SMSCSIM"
    assert (await client.bind("receiver")).status == 0x05  # already bound
    (session,) = sim.sessions.values()
    sock = session.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    stats = sim.stats()
    assert (stats["binds"], stats["bind_failures"]) == (1, 3)
    await client.close()


async def test_max_binds_per_user(start_sim):
    sim = await start_sim(max_binds_per_user=1)
    first = await bound_client(sim)
    second = await TestClient.connect(sim.port)
    assert (await second.bind()).status == 0x05  # ESME_RALYBND
    await first.close()
    await wait_for(lambda: sim.stats()["sessions_bound"] == 0)
    assert (await second.bind()).status == 0
    await second.close()


async def test_requests_before_bind_get_invalid_bind_status(start_sim):
    sim = await start_sim()
    client = await TestClient.connect(sim.port)
    sequence = client.submit()
    response = await client.expect("submit_sm_resp")
    assert (response.sequence, response.status) == (sequence, 0x04)
    client.send("query_sm", message_id="1", source_addr="SENDER")
    assert (await client.expect("query_sm_resp")).status == 0x04
    await client.ping()  # enquire_link is answered in any state
    assert sim.submits == []
    await client.close()


async def test_receiver_cannot_submit(start_sim):
    sim = await start_sim()
    client = await bound_client(sim, "receiver")
    client.submit()
    assert (await client.expect("submit_sm_resp")).status == 0x04
    await client.close()


async def test_unbind_is_answered_and_the_connection_closed(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    sequence = client.send("unbind")
    response = await client.expect("unbind_resp")
    assert (response.sequence, response.status) == (sequence, 0)
    assert await client.closed_by_peer()
    assert sim.stats()["unbinds_received"] == 1


async def test_unknown_pdu_gets_generic_nack_and_the_session_stays_up(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.writer.write(
        (16).to_bytes(4, "big") + (0xFF).to_bytes(4, "big") + bytes(4) + bytes((0, 0, 0, 42))
    )
    nack = await client.expect("generic_nack")
    assert (nack.sequence, nack.status) == (42, 0x03)  # ESME_RINVCMDID
    client.send("deliver_sm", source_addr="1", destination_addr="2")  # not for an ESME to send
    assert (await client.expect("generic_nack")).status == 0x03
    client.submit()
    assert (await client.expect("submit_sm_resp")).status == 0
    assert sim.stats()["generic_nacks_sent"] == 2
    await client.close()


async def test_impossible_length_gets_generic_nack_and_closes(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.writer.write((8).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(8))
    nack = await client.expect("generic_nack")
    assert nack.status == 0x02  # ESME_RINVCMDLEN
    assert await client.closed_by_peer()


async def test_smsc_initiated_unbind(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    assert sim.unbind_all() == 1
    unbind = await client.expect("unbind")
    client.send("unbind_resp", sequence=unbind.sequence)
    assert await client.closed_by_peer()
    assert sim.stats()["unbinds_sent"] == 1


async def test_smsc_sends_enquire_link(start_sim):
    sim = await start_sim(enquire_link_interval=0.05)
    client = await bound_client(sim)
    request = await client.expect("enquire_link")
    client.send("enquire_link_resp", sequence=request.sequence)
    await client.expect("enquire_link")  # and again, on its timer
    assert sim.stats()["enquire_links_sent"] >= 2
    await client.close()


# -- submit_sm ---------------------------------------------------------------------------


async def test_submit_ids_are_unique_and_submits_recorded(start_sim):
    sim = await start_sim()
    client = await bound_client(sim, "transmitter")
    sequences = [client.submit(text=b"message %d" % n) for n in range(20)]
    responses = [await client.expect("submit_sm_resp") for _ in sequences]
    assert [r.sequence for r in responses] == sequences
    ids = [r.message_id for r in responses]
    assert all(r.status == 0 for r in responses)
    assert len(set(ids)) == 20
    assert ids[:3] == [b"1", b"2", b"3"]  # decimal counter from first_message_id
    record = sim.submits[5]
    assert record.id_str == "6"
    assert (record.source_addr, record.destination_addr) == ("SENDER", "4917012345")
    assert record.short_message == b"message 5"
    assert record.system_id == "smsapi"
    assert sim.find_submit("6") is record
    stats = sim.stats()
    assert (stats["submits_received"], stats["accepted"], stats["duplicates"]) == (20, 20, 0)
    await client.close()


async def test_duplicates_are_counted(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    udh = b"\x05\x00\x03\x07\x02\x01"
    client.submit(text=udh + b"part one", esm_class=0x40)
    client.submit(text=udh + b"part one", esm_class=0x40)  # the same part again
    client.submit(destination="4917099999", text=udh + b"part one", esm_class=0x40)
    client.submit(text=b"\x05\x00\x03\x08\x02\x01part one", esm_class=0x40)  # other reference
    for _ in range(4):
        await client.expect("submit_sm_resp")
    assert sim.stats()["duplicates"] == 1
    assert [r.duplicate for r in sim.submits] == [False, True, False, False]
    await client.close()


async def test_submit_records_sar_and_message_payload(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(
        text=b"first",
        sar_msg_ref_num=0x1234,
        sar_total_segments=2,
        sar_segment_seqnum=1,
        registered_delivery=1,
        data_coding=3,
    )
    client.send("submit_sm", source_addr="S", destination_addr="4917", message_payload=b"x" * 300)
    await client.expect("submit_sm_resp")
    first, second = sim.submits
    assert (first.sar_msg_ref_num, first.sar_total_segments, first.sar_segment_seqnum) == (
        0x1234,
        2,
        1,
    )
    assert (first.registered_delivery, first.data_coding) == (1, 3)
    assert second.message_payload == b"x" * 300
    assert second.short_message == b""
    await client.close()


@pytest.mark.parametrize("destination", ["", "rej123", "999123"])
async def test_rejected_destinations(start_sim, destination):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(destination=destination)
    response = await client.expect("submit_sm_resp")
    assert response.status == 0x0B  # ESME_RINVDSTADR
    assert response.data[16:] == b""  # an error response has no body
    assert sim.submits == []
    assert sim.stats()["rejected"] == 1
    await client.close()


def overlong_submit(sequence: int, source: str, destination: str) -> bytes:
    """A submit_sm with an address longer than SMPP allows (smpplib would cut it)."""
    data = encode_pdu("submit_sm", sequence, source_addr="<s>", destination_addr="<d>")
    data = data.replace(b"<s>", source.encode()).replace(b"<d>", destination.encode())
    return len(data).to_bytes(4, "big") + data[4:]


async def test_overlong_addresses_are_refused(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.writer.write(overlong_submit(7, "S" * 21, "4917"))
    client.writer.write(overlong_submit(8, "S", "4" * 21))
    client.writer.write(overlong_submit(9, "S" * 20, "4" * 20))
    responses = [await client.expect("submit_sm_resp") for _ in range(3)]
    # ESME_RINVSRCADR, ESME_RINVDSTADR, and the longest valid ones accepted
    assert [(r.sequence, r.status) for r in responses] == [(7, 0x0A), (8, 0x0B), (9, 0)]
    await client.close()


async def test_reject_prefix_is_configurable(start_sim):
    sim = await start_sim(reject_dst_prefix="4930")
    client = await bound_client(sim)
    client.submit(destination="4930111")
    client.submit(destination="999111")
    assert [(await client.expect("submit_sm_resp")).status for _ in range(2)] == [0x0B, 0]
    await client.close()


# -- receipts ----------------------------------------------------------------------------


async def test_receipt_has_text_and_tlvs(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(
        destination="4917012345",
        text=b"Hello receipt, this is longer than twenty",
        registered_delivery=1,
        source_addr_ton=5,
        dest_addr_ton=1,
        dest_addr_npi=1,
    )
    response = await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    assert receipt.esm_class == 0x04
    assert (receipt.source_addr, receipt.destination_addr) == (b"4917012345", b"SENDER")
    assert (receipt.source_addr_ton, receipt.source_addr_npi, receipt.dest_addr_ton) == (1, 1, 5)
    match = RECEIPT_RE.match(receipt.short_message)
    assert match, receipt.short_message
    assert match[1] == response.message_id
    assert (match[2], match[5], match[6], match[7]) == (
        b"001",
        b"DELIVRD",
        b"000",
        b"Hello receipt, this ",
    )
    assert receipt.receipted_message_id == response.message_id
    assert receipt.message_state == 2
    assert receipt.network_error_code == b"\x03\x00\x00"
    ack(client, receipt)
    await client.ping()
    stats = sim.stats()
    assert (stats["receipts_sent"], stats["receipts_acknowledged"]) == (1, 1)
    assert sim.submits[0].receipt == "acknowledged"
    await client.close()


async def test_receipt_text_skips_the_udh(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(text=b"\x05\x00\x03\x01\x02\x01Part one", esm_class=0x40, registered_delivery=1)
    await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    assert receipt.short_message.endswith(b"text:Part one")
    await client.close()


@pytest.mark.parametrize(
    ("destination", "stat", "error", "state"),
    [
        ("undeliv1", b"UNDELIV", b"001", 5),
        ("998123", b"UNDELIV", b"001", 5),
        ("expire1", b"EXPIRED", b"001", 3),
        ("997123", b"EXPIRED", b"001", 3),
    ],
)
async def test_receipt_stat_by_destination(start_sim, destination, stat, error, state):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(destination=destination, registered_delivery=1)
    await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    match = RECEIPT_RE.match(receipt.short_message)
    assert (match[2], match[5], match[6]) == (b"000", stat, error)
    assert receipt.message_state == state
    assert receipt.network_error_code == b"\x03\x00\x01"
    await client.close()


async def test_receipt_stat_override(start_sim):
    sim = await start_sim(receipt_stat="REJECTD")
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    assert b"stat:REJECTD" in receipt.short_message
    assert receipt.message_state == 8
    await client.close()


async def test_failure_only_receipts(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(destination="4917000001", registered_delivery=2)  # delivered: no receipt
    client.submit(destination="undeliv2", registered_delivery=2)
    client.submit(destination="4917000003", registered_delivery=0)  # none asked for
    for _ in range(3):
        await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")  # settled in order: the first would come first
    assert receipt.source_addr == b"undeliv2"
    ack(client, receipt)
    await client.ping()
    assert sim.stats()["receipts_generated"] == 1
    await client.close()


async def test_receipt_tlvs_only_or_text_only(start_sim):
    sim = await start_sim(receipt_text=False)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    assert receipt.short_message == b""
    assert receipt.message_state == 2
    ack(client, receipt)
    sim.set_config(receipt_text=True, receipt_tlvs=False)
    client.submit(registered_delivery=1)
    await client.expect("submit_sm_resp")
    receipt = await client.expect("deliver_sm")
    assert RECEIPT_RE.match(receipt.short_message)
    assert receipt.message_state is None and receipt.receipted_message_id is None
    await client.close()


async def test_hex_ids(start_sim):
    sim = await start_sim(hex_ids=True, first_message_id=1_000_000)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    response = await client.expect("submit_sm_resp")
    assert response.message_id == b"f4240"
    receipt = await client.expect("deliver_sm")
    assert receipt.short_message.startswith(b"id:1000000 ")
    assert receipt.receipted_message_id == b"f4240"
    await client.close()


async def test_unacknowledged_receipt_is_resent_after_reconnect(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    response = await client.expect("submit_sm_resp")
    first = await client.expect("deliver_sm")
    await client.close()  # a gateway crash: the receipt was never acknowledged
    await wait_for(lambda: sim.stats()["connections_open"] == 0)
    assert sim.stats()["receipts_pending"] == 1

    client = await bound_client(sim, "receiver")
    again = await client.expect("deliver_sm")
    assert again.receipted_message_id == first.receipted_message_id == response.message_id
    assert again.short_message == first.short_message
    ack(client, again)
    await client.ping()
    stats = sim.stats()
    assert (stats["receipts_sent"], stats["receipts_acknowledged"]) == (2, 1)
    assert stats["receipts_pending"] == 0
    await client.close()


async def test_receipts_wait_for_a_receiver(start_sim):
    sim = await start_sim()
    transmitter = await bound_client(sim, "transmitter")
    transmitter.submit(registered_delivery=1)
    await transmitter.expect("submit_sm_resp")
    await transmitter.ping()  # nothing is delivered to a transmitter
    receiver = await bound_client(sim, "receiver")
    receipt = await receiver.expect("deliver_sm")
    assert receipt.esm_class == 0x04
    await transmitter.close()
    await receiver.close()


async def test_refused_receipt_is_redelivered(start_sim):
    sim = await start_sim(redeliver_delay=0.05)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    await client.expect("submit_sm_resp")
    first = await client.expect("deliver_sm")
    ack(client, first, status=0x64)  # ESME_RX_T_APPN: the gateway's store is down
    second = await client.expect("deliver_sm")
    assert second.sequence != first.sequence
    assert second.receipted_message_id == first.receipted_message_id
    ack(client, second)
    await client.ping()
    stats = sim.stats()
    assert (stats["deliver_errors"], stats["receipts_acknowledged"]) == (1, 1)
    await client.close()


async def test_unanswered_receipt_is_redelivered_after_timeout(start_sim):
    sim = await start_sim(deliver_timeout=0.1, redeliver_delay=0.01)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    await client.expect("submit_sm_resp")
    first = await client.expect("deliver_sm")
    second = await client.expect("deliver_sm")  # no answer to the first one
    assert second.receipted_message_id == first.receipted_message_id
    ack(client, first)  # too late: counted, and ignored
    ack(client, second)
    await client.ping()
    stats = sim.stats()
    assert stats["deliver_timeouts"] >= 1
    assert stats["late_responses"] == 1
    assert stats["receipts_acknowledged"] == 1
    await client.close()


async def test_deliver_window_limits_unanswered_deliveries(start_sim):
    sim = await start_sim(deliver_window=2)
    client = await bound_client(sim)
    for n in range(3):
        client.submit(text=b"m%d" % n, registered_delivery=1)
    for _ in range(3):
        await client.expect("submit_sm_resp")
    first = await client.expect("deliver_sm")
    await client.expect("deliver_sm")
    await client.ping()  # the third waits for room in the window
    assert sim.stats()["deliveries_waiting"] == 1
    ack(client, first)
    third = await client.expect("deliver_sm")
    assert third.short_message.endswith(b"text:m2")
    await client.close()


async def test_query_sm(start_sim):
    sim = await start_sim(receipt_delay=60)
    client = await bound_client(sim)
    client.submit()
    message_id = (await client.expect("submit_sm_resp")).message_id
    client.send("query_sm", message_id=message_id.decode(), source_addr="SENDER")
    response = await client.expect("query_sm_resp")
    assert (response.status, response.message_state, response.final_date) == (0, 1, b"")

    sim.settle(sim.submits[0])  # the handset got it: as if receipt_delay had passed
    client.send("query_sm", message_id=message_id.decode(), source_addr="SENDER")
    response = await client.expect("query_sm_resp")
    assert (response.message_state, response.error_code) == (2, 0)
    assert re.fullmatch(rb"\d{12}000\+", response.final_date)

    client.send("query_sm", message_id="424242", source_addr="SENDER")
    assert (await client.expect("query_sm_resp")).status == 0x0C  # ESME_RINVMSGID
    await client.close()


# -- incoming messages -------------------------------------------------------------------


async def test_mo_plain_text_waits_for_a_bind(start_sim):
    sim = await start_sim()
    assert sim.inject_mo("4917011111", "12345", "Hello SMSC") == 1
    client = await bound_client(sim, "receiver")
    mo = await client.expect("deliver_sm")
    assert (mo.esm_class, mo.data_coding) == (0, 0)
    assert (mo.source_addr, mo.destination_addr) == (b"4917011111", b"12345")
    assert mo.short_message == b"Hello SMSC"
    ack(client, mo)
    await client.ping()
    stats = sim.stats()
    assert (stats["mo_sent"], stats["mo_acknowledged"], stats["mo_pending"]) == (1, 1, 0)
    await client.close()


async def test_mo_udh_split_out_of_order(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    text = "x" * 152 + "€" + "tail " * 40  # the escape pair must not be cut at 153
    parts = sim.inject_mo("4917011111", "12345", text, split="udh", out_of_order=True)
    assert parts == 3
    received = []
    for _ in range(parts):
        mo = await client.expect("deliver_sm")
        ack(client, mo)
        received.append(mo)
    udhs = [mo.short_message[:6] for mo in received]
    assert all(mo.esm_class == 0x40 for mo in received)
    assert [udh[5] for udh in udhs] == [3, 2, 1]  # last part first
    assert {udh[:5] for udh in udhs} == {b"\x05\x00\x03" + udhs[0][3:4] + b"\x03"}
    ordered = sorted(received, key=lambda mo: mo.short_message[5])
    assert ordered[0].short_message[6:] == b"x" * 152  # the € moved whole to part 2
    joined = b"".join(mo.short_message[6:] for mo in ordered)
    assert joined.decode("gsm03.38") == text
    await client.close()


async def test_mo_sar_ucs2(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    text = "ü" * 66 + "😀" + "end"  # the surrogate pair does not fit in part 1's 67 units
    assert sim.inject_mo("4917011111", "12345", text, encoding="ucs2", split="sar") == 2
    first = await client.expect("deliver_sm")
    second = await client.expect("deliver_sm")
    assert (first.data_coding, first.esm_class) == (8, 0)
    assert first.sar_msg_ref_num == second.sar_msg_ref_num
    assert [(p.sar_total_segments, p.sar_segment_seqnum) for p in (first, second)] == [
        (2, 1),
        (2, 2),
    ]
    assert first.short_message.decode("utf-16-be") == "ü" * 66
    assert (first.short_message + second.short_message).decode("utf-16-be") == text
    await client.close()


async def test_mo_long_text_unsplit_uses_message_payload(start_sim):
    sim = await start_sim()
    client = await bound_client(sim)
    text = "é" * 150
    assert sim.inject_mo("4917011111", "12345", text, encoding="latin1") == 1
    mo = await client.expect("deliver_sm")
    assert (mo.data_coding, mo.short_message) == (3, b"")
    assert mo.message_payload == text.encode("latin-1")
    await client.close()


async def test_refused_mo_is_redelivered(start_sim):
    sim = await start_sim(redeliver_delay=0.01)
    client = await bound_client(sim)
    sim.inject_mo("4917011111", "12345", "again")
    first = await client.expect("deliver_sm")
    ack(client, first, status=0x64)
    second = await client.expect("deliver_sm")
    assert second.short_message == b"again"
    await client.close()


def test_split_mo_limits():
    assert len(split_mo("a" * 160, "gsm7", "udh")) == 1
    parts = split_mo("a" * 161, "gsm7", "udh", reference=0x1FF)
    assert [len(p.short_message) - 6 for p in parts] == [153, 8]
    assert parts[0].short_message[:6] == b"\x05\x00\x03\xff\x02\x01"  # 8-bit reference
    assert [len(p.short_message) for p in split_mo("a" * 70, "ucs2", "sar")] == [140]
    assert [len(p.short_message) for p in split_mo("a" * 71, "ucs2", "sar")] == [134, 8]
    assert split_mo("€" * 80, "gsm7", "none")[0].short_message == b"\x1be" * 80
    with pytest.raises(ValueError):
        split_mo("✓", "gsm7")
    with pytest.raises(ValueError):
        split_mo("a", "ebcdic")


# -- faults ------------------------------------------------------------------------------


async def test_error_rate(start_sim):
    sim = await start_sim(error_rate=1.0, error_status=0x14)
    client = await bound_client(sim)
    for _ in range(3):
        client.submit(registered_delivery=1)
    assert [(await client.expect("submit_sm_resp")).status for _ in range(3)] == [0x14] * 3
    await client.ping()  # and no receipt for what was not accepted
    assert sim.submits == []
    assert sim.stats()["rejected_fault"] == 3
    await client.close()


async def test_max_rate_throttles(start_sim):
    sim = await start_sim(max_rate=5)
    client = await bound_client(sim)
    for n in range(20):
        client.submit(text=b"%d" % n)
    statuses = [(await client.expect("submit_sm_resp")).status for _ in range(20)]
    assert statuses[:5] == [0] * 5  # a second's worth of burst
    assert statuses.count(0x58) >= 10  # then the bucket is empty
    stats = sim.stats()
    assert stats["throttled"] == statuses.count(0x58)
    assert stats["max_rate_seen"] >= 1
    await client.close()


async def test_max_window_with_response_delay(start_sim):
    sim = await start_sim(max_window=2, response_delay=0.2)
    client = await bound_client(sim)
    sequences = [client.submit(text=b"%d" % n) for n in range(5)]
    responses = [await client.expect("submit_sm_resp") for _ in range(5)]
    by_sequence = {r.sequence: r.status for r in responses}
    # The window-breaking three are refused at once, before the delayed two.
    assert [r.status for r in responses] == [0x58, 0x58, 0x58, 0, 0]
    assert [by_sequence[s] for s in sequences] == [0, 0, 0x58, 0x58, 0x58]
    stats = sim.stats()
    # The client had five out at once (the three refused ones included).
    assert (stats["window_violations"], stats["max_outstanding_seen"]) == (3, 5)
    await client.close()


async def test_the_window_is_measured_when_responses_are_immediate(start_sim):
    """The fault suite's window check must be able to fail in every scenario: ten
    submits written together are ten outstanding, though each is answered at once."""
    sim = await start_sim(max_window=4)
    client = await bound_client(sim)
    client.writer.write(
        b"".join(
            encode_pdu("submit_sm", 100 + n, destination_addr="4917012345", short_message=b"w")
            for n in range(10)
        )
    )
    statuses = [(await client.expect("submit_sm_resp")).status for _ in range(10)]
    assert statuses == [0] * 4 + [0x58] * 6
    stats = sim.stats()
    assert (stats["max_outstanding_seen"], stats["window_violations"]) == (10, 6)
    client.submit()  # one at a time: the window is free again
    assert (await client.expect("submit_sm_resp")).status == 0
    assert sim.stats()["outstanding"] == 0
    await client.close()


async def test_delayed_responses_are_not_serialised(start_sim):
    sim = await start_sim(response_delay=0.2)
    client = await bound_client(sim)
    for n in range(10):
        client.submit(text=b"%d" % n)
    for _ in range(10):
        assert (await client.expect("submit_sm_resp")).status == 0
    assert sim.stats()["max_outstanding_seen"] == 10  # all ten were pending together
    await client.close()


async def test_drop_response_rate(start_sim):
    sim = await start_sim(drop_response_rate=1.0)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    receipt = await client.expect("deliver_sm")  # accepted, and the handset got it
    ack(client, receipt)
    await client.ping()  # no submit_sm_resp came before this
    (record,) = sim.submits
    assert receipt.receipted_message_id.decode() == record.id_str
    assert sim.stats()["responses_dropped"] == 1
    await client.close()


async def test_disconnect_every_pdus(start_sim):
    sim = await start_sim(disconnect_every_pdus=3)
    client = await bound_client(sim)
    for n in range(3):
        client.submit(text=b"%d" % n)
    for _ in range(3):
        await client.expect("submit_sm_resp")
    assert await client.closed_by_peer()
    stats = sim.stats()
    assert (stats["accepted"], stats["fault_disconnects"]) == (3, 1)


async def test_disconnect_every_seconds(start_sim):
    sim = await start_sim(disconnect_every_seconds=0.1)
    client = await bound_client(sim)
    assert await client.closed_by_peer()
    await wait_for(lambda: sim.stats()["disconnects"] == 1)
    assert sim.stats()["fault_disconnects"] == 1


async def test_receipt_before_response(start_sim):
    sim = await start_sim(receipt_before_response=True, receipt_delay=5)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    receipt = await client.expect("deliver_sm")
    response = await client.expect("submit_sm_resp")
    assert receipt.receipted_message_id == response.message_id
    await client.close()


async def test_malformed_rate(start_sim):
    sim = await start_sim(malformed_rate=1.0)
    client = await bound_client(sim)
    client.submit()
    garbage = await client.read()
    assert garbage.command_id == 0x000000FF
    client.send("generic_nack", status=0x03, sequence=garbage.sequence)
    assert (await client.expect("submit_sm_resp")).status == 0
    await client.ping()  # the session survived our nack
    stats = sim.stats()
    assert (stats["malformed_sent"], stats["generic_nacks_received"]) == (1, 1)
    await client.close()


def test_config_is_validated():
    with pytest.raises(ValueError):
        SimulatorConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        SimulatorConfig(receipt_stat="GREAT")
    with pytest.raises(ValueError):
        SimulatorConfig().replace(no_such_setting=1)
    assert SimulatorConfig().replace(error_status="0x14", max_rate="5").error_status == 0x14


# -- wire: our fast paths agree with smpplib -----------------------------------------------

addresses = st.text(alphabet="0123456789+abcXYZ", max_size=20)
bytes_255 = st.integers(min_value=0, max_value=255)


def test_submit_sm_resp_matches_smpplib():
    assert submit_sm_resp(77, b"abc123") == encode_pdu("submit_sm_resp", 77, message_id="abc123")


@settings(max_examples=200, deadline=None)
@given(
    source=addresses,
    destination=addresses,
    tons=st.tuples(bytes_255, bytes_255, bytes_255, bytes_255),
    esm_class=bytes_255,
    data_coding=bytes_255,
    text=st.binary(max_size=254),
    payload=st.one_of(st.none(), st.binary(min_size=1, max_size=600)),
    sar=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), bytes_255, bytes_255)),
    state=st.one_of(st.none(), bytes_255),
    receipted=st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)),
    network_error=st.one_of(st.none(), st.binary(min_size=3, max_size=3)),
)
def test_deliver_sm_matches_smpplib(
    source, destination, tons, esm_class, data_coding, text, payload, sar, state, receipted,
    network_error,
):  # fmt: skip
    fields: dict[str, Any] = dict(
        source_addr=source,
        destination_addr=destination,
        source_addr_ton=tons[0],
        source_addr_npi=tons[1],
        dest_addr_ton=tons[2],
        dest_addr_npi=tons[3],
        esm_class=esm_class,
        data_coding=data_coding,
        short_message=b"" if payload else text,
        message_payload=payload,
        message_state=state,
        receipted_message_id=receipted,
        network_error_code=network_error,
    )
    if sar:
        fields.update(sar_msg_ref_num=sar[0], sar_total_segments=sar[1], sar_segment_seqnum=sar[2])
    assert deliver_sm(9, **fields) == encode_pdu("deliver_sm", 9, **fields)


SUBMIT_FIELDS = [
    *("service_type", "source_addr_ton", "source_addr_npi", "source_addr"),
    *("dest_addr_ton", "dest_addr_npi", "destination_addr", "esm_class", "protocol_id"),
    *("priority_flag", "schedule_delivery_time", "validity_period", "registered_delivery"),
    *("replace_if_present_flag", "data_coding", "sm_default_msg_id", "short_message"),
    *("message_payload", "sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum"),
]


@settings(max_examples=200, deadline=None)
@given(
    source=addresses,
    destination=addresses,
    numbers=st.tuples(*[bytes_255] * 10),
    times=st.tuples(
        st.sampled_from(["", "250101120000000+"]), st.sampled_from(["", "000001000000000R"])
    ),
    text=st.binary(max_size=254),
    payload=st.one_of(st.none(), st.binary(min_size=1, max_size=600)),
    sar=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), bytes_255, bytes_255)),
    user_reference=st.one_of(st.none(), st.integers(0, 0xFFFF)),
)
def test_parse_submit_sm_matches_smpplib(
    source, destination, numbers, times, text, payload, sar, user_reference
):
    fields: dict[str, Any] = dict(
        service_type="CMT",
        source_addr=source,
        destination_addr=destination,
        source_addr_ton=numbers[0],
        source_addr_npi=numbers[1],
        dest_addr_ton=numbers[2],
        dest_addr_npi=numbers[3],
        esm_class=numbers[4],
        protocol_id=numbers[5],
        priority_flag=numbers[6],
        registered_delivery=numbers[7],
        replace_if_present_flag=numbers[8],
        data_coding=numbers[9],
        schedule_delivery_time=times[0],
        validity_period=times[1],
        short_message=b"" if payload else text,
        message_payload=payload,
        user_message_reference=user_reference,  # a TLV the fast parser skips
    )
    if sar:
        fields.update(sar_msg_ref_num=sar[0], sar_total_segments=sar[1], sar_segment_seqnum=sar[2])
    data = encode_pdu("submit_sm", 3, **fields)
    ours, theirs = parse_submit_sm(data), decode_pdu(data)
    if theirs.short_message is None:  # smpplib stops reading at the end of the PDU
        theirs.short_message = b""
    for name in SUBMIT_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_parse_submit_sm_refuses_a_truncated_pdu():
    data = encode_pdu("submit_sm", 3, source_addr="A", destination_addr="B", short_message=b"hi")
    with pytest.raises(ValueError):
        parse_submit_sm(data[:-1])


# -- running it from other code --------------------------------------------------------------


async def _http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else json.dumps(body).encode()
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    response = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def test_control_port(start_sim):
    sim = await start_sim(control_port=0)
    port = sim.control_port
    client = await bound_client(sim)
    client.submit(text=b"\x00\x01hi")
    await client.expect("submit_sm_resp")

    status, stats = await _http(port, "GET", "/stats")
    assert (status, stats["accepted"], stats["binds"]) == (200, 1, 1)

    status, body = await _http(port, "GET", "/submits?since=0")
    assert status == 200
    assert [s["short_message"] for s in body["submits"]] == ["00016869"]
    assert body["next"] == 1
    assert (await _http(port, "GET", "/submits?since=1"))[1] == {"submits": [], "next": 1}

    mo = {"src": "4917011111", "dst": "12345", "text": "x" * 200, "split": "udh"}
    status, body = await _http(port, "POST", "/mo", {**mo, "out_of_order": True})
    assert (status, body) == (200, {"parts": 2})
    first = await client.expect("deliver_sm")
    second = await client.expect("deliver_sm")
    assert [first.short_message[5], second.short_message[5]] == [2, 1]
    ack(client, first)
    ack(client, second)

    status, config = await _http(port, "POST", "/config", {"error_rate": 1, "error_status": 8})
    assert (status, config["error_rate"], config["error_status"]) == (200, 1.0, 8)
    client.submit(text=b"refused")
    assert (await client.expect("submit_sm_resp")).status == 0x08

    assert (await _http(port, "POST", "/config", {"bogus": 1}))[0] == 400
    assert (await _http(port, "POST", "/mo", {"src": "1"}))[0] == 400
    assert (await _http(port, "GET", "/nothing"))[0] == 404
    await client.close()


def test_simulator_thread_for_sync_code():
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0)) as smsc:
        with socket.create_connection(("127.0.0.1", smsc.port), timeout=TIMEOUT) as sock:
            stream = sock.makefile("rb")

            def read() -> Any:
                header = stream.read(16)
                return decode_pdu(header + stream.read(int.from_bytes(header[:4], "big") - 16))

            sock.sendall(encode_pdu("bind_transceiver", 1, system_id="smsapi", password="secret"))
            assert read().status == 0
            smsc.set_config(hex_ids=True, first_message_id=255)
            sock.sendall(encode_pdu("submit_sm", 2, source_addr="A", destination_addr="4917"))
            assert read().message_id == b"ff"
            assert smsc.inject_mo("4917", "A", "hi there") == 1
            assert read().short_message == b"hi there"
        assert [r.id_str for r in smsc.submits()] == ["ff"]
        assert smsc.stats()["mo_sent"] == 1


def test_management_command_runs_until_sigterm(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SMSAPI_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "smsc_simulator", "--port", "0", "--control-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+) control=(\d+)", line)
        assert match, line + process.stderr.read()
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=TIMEOUT) as sock:
            sock.sendall(encode_pdu("bind_transmitter", 1, system_id="smsapi", password="secret"))
            data = sock.recv(4096)
            assert decode_pdu(data).status == 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT * 2) == 0
        assert "bind_transmitter as 'smsapi'" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
