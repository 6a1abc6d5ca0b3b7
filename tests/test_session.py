"""SMPPSession against a scripted SMSC over real TCP: how a read full of PDUs is handled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from smpp.framing import peek_header, read_pdu
from smpp.pdu import encode_pdu
from smpp.session import BindUnanswered, SessionConfig, SMPPSession
from smpp_gateway.simulator.wire import deliver_sm, submit_sm_resp

BURST = 300


def _receipt(sequence: int) -> bytes:
    text = f"id:{sequence:x} sub:001 dlvrd:001 submit date:2611251200 done date:2611251200 "
    return deliver_sm(
        sequence,
        source_addr="5511900000001",
        destination_addr="gateway",
        esm_class=0x04,
        short_message=(text + "stat:DELIVRD err:000 text:hello").encode(),
    )


async def _burst_then_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """Bind, then answer the first submit_sm behind ``BURST`` receipts, in one write."""
    _, _, _, sequence = peek_header(await read_pdu(reader))
    writer.write(encode_pdu("bind_transceiver_resp", sequence, system_id="smsc"))
    _, _, _, sequence = peek_header(await read_pdu(reader))
    receipts = b"".join(_receipt(i) for i in range(1, BURST + 1))
    writer.write(receipts + submit_sm_resp(sequence, b"abc"))
    await writer.drain()
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:  # the gateway's deliver_sm_resp, until it hangs up
            await read_pdu(reader)


async def test_a_response_behind_a_burst_of_deliver_sm_is_handled_before_they_all_are():
    """The SMSC sends up to its window of deliver_sm at once; the submit_sm_resp
    behind them must free its window slot without waiting for all to be read."""
    server = await asyncio.start_server(_burst_then_response, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    delivered: list[int] = []
    answered_after: list[int] = []
    done = asyncio.Event()

    def on_deliver(pdu, sequence: int) -> None:
        delivered.append(sequence)
        session.respond_deliver(sequence)
        if len(delivered) == BURST:
            done.set()

    def on_response(token, status, message_id, sequence) -> None:
        answered_after.append(len(delivered))

    config = SessionConfig(host="127.0.0.1", port=port, system_id="gw", password="pw", window=1)
    session = SMPPSession(config, on_response, on_deliver)
    await session.open()
    reader = asyncio.ensure_future(session.run())
    try:
        session.submit("part", source_addr="gw", destination_addr="5511900000001")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        reader.cancel()
        server.close()
    assert delivered == list(range(1, BURST + 1))  # every deliver_sm, in order
    assert len(answered_after) == 1
    assert answered_after[0] < BURST  # the response did not wait behind all of them
    assert session.window_free == 1


async def _data_sm_and_deliver_sm(reader, writer, answers: list) -> None:
    """Bind, then send a data_sm and a deliver_sm; collect what each is answered with."""
    from smpp_gateway.simulator.wire import data_sm

    _, _, _, sequence = peek_header(await read_pdu(reader))
    writer.write(encode_pdu("bind_transceiver_resp", sequence, system_id="smsc"))
    writer.write(data_sm(7, source_addr="4917", destination_addr="1", message_payload=b"hi"))
    writer.write(_receipt(8))
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            answers.append(peek_header(await read_pdu(reader)))


async def test_a_data_sm_is_handed_over_and_answered_with_data_sm_resp():
    answers: list = []
    server = await asyncio.start_server(
        lambda r, w: _data_sm_and_deliver_sm(r, w, answers), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    handed: list = []

    def on_deliver(pdu, sequence: int) -> None:
        handed.append((pdu.command, sequence))
        session.respond_deliver(sequence, 0 if sequence == 7 else 0x64)

    config = SessionConfig(host="127.0.0.1", port=port, system_id="gw", password="pw")
    session = SMPPSession(config, lambda *args: None, on_deliver)
    await session.open()
    reader = asyncio.ensure_future(session.run())
    try:
        for _ in range(100):
            if len(answers) == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        reader.cancel()
        server.close()
    assert handed == [("data_sm", 7), ("deliver_sm", 8)]
    # (length, command_id, status, sequence): data_sm_resp for the data_sm, never generic_nack
    assert sorted(answers, key=lambda a: a[3]) == [
        (17, 0x80000103, 0, 7),
        (17, 0x80000005, 0x64, 8),
    ]


async def test_a_bind_answered_by_closing_the_connection_names_the_likely_causes():
    async def close_at_once(reader, writer) -> None:
        await read_pdu(reader)
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = SessionConfig(host="127.0.0.1", port=port, system_id="gw", password="pw")
    session = SMPPSession(config, lambda *args: None, lambda *args: None)
    try:
        with pytest.raises(BindUnanswered) as raised:
            await session.open()
    finally:
        server.close()
    message = str(raised.value)
    assert message.startswith("bind failed: the SMSC closed the connection without answering")
    assert "SMPP_PASSWD" in message and "SMPP_TLS" in message
