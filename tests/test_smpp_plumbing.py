"""The SMPP plumbing both ends share: constants, framing, sequence numbers, coalesced writes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smpplib import command_codes, consts

from smpp import command_status, constants
from smpp.coalesced_writer import CoalescedWriter
from smpp.command_status import STATUSES
from smpp.constants import MAX_SEQUENCE
from smpp.framing import HEADER, MAX_PDU_LENGTH, PDUFormatError, PDUFrames, read_pdu
from smpp.pdu import encode_pdu
from smpp.sequence import SequenceNumbers

# -- constants ----------------------------------------------------------------------------


def test_each_status_constant_names_its_row_of_the_table():
    named = {
        name: value
        for name, value in vars(command_status).items()
        if name.startswith("ESME_R") and isinstance(value, int)
    }
    assert len(named) == len(STATUSES)
    for name, value in named.items():
        assert STATUSES[value].name == name


@pytest.mark.parametrize(
    "name",
    [
        "generic_nack",
        "bind_receiver",
        "bind_receiver_resp",
        "bind_transmitter",
        "bind_transmitter_resp",
        "query_sm",
        "query_sm_resp",
        "submit_sm",
        "submit_sm_resp",
        "deliver_sm",
        "deliver_sm_resp",
        "unbind",
        "unbind_resp",
        "bind_transceiver",
        "bind_transceiver_resp",
        "enquire_link",
        "enquire_link_resp",
        "data_sm",
        "data_sm_resp",
    ],
)
def test_command_ids_are_smpplibs(name):
    assert getattr(constants, name.upper()) == command_codes.get_command_code(name)


@pytest.mark.parametrize(
    "name",
    [
        "receipted_message_id",
        "sar_msg_ref_num",
        "sar_total_segments",
        "sar_segment_seqnum",
        "network_error_code",
        "message_payload",
        "message_state",
    ],
)
def test_tlv_tags_are_smpplibs(name):
    assert getattr(constants, "TLV_" + name.upper()) == consts.OPTIONAL_PARAMS[name]


# -- framing ------------------------------------------------------------------------------


def _pdus(count: int) -> list[bytes]:
    return [encode_pdu("enquire_link", sequence) for sequence in range(1, count + 1)] + [
        encode_pdu("submit_sm_resp", 99, message_id="abc")
    ]


@given(st.lists(st.integers(1, 40), max_size=20))
def test_frames_cut_any_split_of_the_stream_into_the_same_pdus(cuts):
    pdus = _pdus(5)
    stream = b"".join(pdus)
    frames = PDUFrames()
    got, start = [], 0
    for cut in cuts:
        got += frames.feed(stream[start : start + cut])
        start += cut
    got += frames.feed(stream[start:])
    assert got == pdus
    assert frames.broken is None


def test_frames_stop_at_an_impossible_length_after_the_pdus_before_it():
    pdus = _pdus(2)
    bad = HEADER.pack(MAX_PDU_LENGTH + 1, 0x15, 0, 77)
    frames = PDUFrames()
    assert frames.feed(b"".join(pdus) + bad + pdus[0]) == pdus
    assert frames.broken == (MAX_PDU_LENGTH + 1, 0x15, 0, 77)
    assert frames.feed(pdus[0]) == []  # desynchronised: nothing more is trusted


async def test_read_pdu_refuses_an_impossible_length():
    reader = asyncio.StreamReader()
    reader.feed_data(HEADER.pack(8, 0x15, 0, 1))
    with pytest.raises(PDUFormatError):
        await read_pdu(reader)


# -- sequence numbers ---------------------------------------------------------------------


def test_sequence_numbers_wrap_to_1_never_0():
    numbers = SequenceNumbers(last=MAX_SEQUENCE - 1)
    assert [numbers.next() for _ in range(3)] == [MAX_SEQUENCE, 1, 2]
    assert SequenceNumbers().next() == 1


# -- coalesced writes ---------------------------------------------------------------------


class _Transport:
    def __init__(self, waiting: int = 0):
        self.writes: list[bytes] = []
        self.waiting = waiting

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.waiting


async def test_writes_of_one_loop_turn_leave_in_one_write():
    transport = _Transport()
    writer = CoalescedWriter(transport)
    for part in (b"a", b"b", b"c"):
        writer.write(part)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"abc"]
    writer.write(b"d")
    writer.flush()  # at once (before closing)
    assert transport.writes == [b"abc", b"d"]


async def test_a_peer_that_does_not_read_is_reported_past_the_limit():
    transport = _Transport(waiting=2000)
    overflows: list[int] = []
    writer = CoalescedWriter(transport, buffer_limit=1000, on_overflow=overflows.append)
    writer.write(b"x")
    writer.flush()
    assert overflows == [2000]
