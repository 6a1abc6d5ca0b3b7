"""The simulator keeps the receipts and MO it owes across its own restart (issue 21).

A real SMSC keeps what it owes a system_id and sends it on the next bind, even
when it restarted in between; ``owed_file`` makes ours do the same. Each test
stops a simulator and starts a new one on the same file, over real TCP.
"""

from __future__ import annotations

import json

import pytest

from smpp_gateway.simulator import SimulatorConfig, SMSCSimulator
from tests.test_simulator import ack, bound_client, wait_for


async def started(owed_file: str, **changes) -> SMSCSimulator:
    config = SimulatorConfig(port=0, first_message_id=1, owed_file=owed_file, **changes)
    sim = SMSCSimulator(config)
    await sim.start()
    return sim


async def test_a_receipt_not_yet_due_at_stop_arrives_after_the_restart(tmp_path):
    owed = tmp_path / "owed.json"
    sim = await started(str(owed), receipt_delay=30.0)
    client = await bound_client(sim)
    client.submit(registered_delivery=1, destination="4917012345")
    response = await client.expect("submit_sm_resp")
    await client.ping()
    await sim.stop()  # Ctrl-C before the receipt fell due
    await client.close()
    assert json.loads(owed.read_text())["owed"][0]["kind"] == "receipt"

    again = await started(str(owed))
    try:
        assert not owed.exists()  # in memory now; written again at the next stop
        client = await bound_client(again, "receiver")
        receipt = await client.expect("deliver_sm")
        assert receipt.esm_class == 0x04
        assert receipt.receipted_message_id == response.message_id
        assert b"stat:DELIVRD" in receipt.short_message
        ack(client, receipt)
        await client.ping()
        assert again.stats()["deliveries_waiting"] == 0
        await client.close()
    finally:
        await again.stop()
    assert not owed.exists()  # nothing owed any more


async def test_a_receipt_sent_but_not_acknowledged_is_sent_again_after_the_restart(tmp_path):
    owed = tmp_path / "owed.json"
    sim = await started(str(owed), receipt_delay=0.0)
    client = await bound_client(sim)
    client.submit(registered_delivery=1)
    response = await client.expect("submit_sm_resp")
    first = await client.expect("deliver_sm")  # read, never acknowledged
    await sim.stop()
    await client.close()

    again = await started(str(owed))
    try:
        client = await bound_client(again)
        receipt = await client.expect("deliver_sm")
        assert receipt.receipted_message_id == first.receipted_message_id == response.message_id
        assert receipt.short_message == first.short_message
        ack(client, receipt)
        await client.close()
    finally:
        await again.stop()


async def test_owed_mo_waits_for_the_bind_after_the_restart(tmp_path):
    owed = tmp_path / "owed.json"
    sim = await started(str(owed))
    sim.inject_mo("4917099999", "12345", "hello after restart")
    await sim.stop()

    again = await started(str(owed))
    try:
        client = await bound_client(again, "receiver")
        mo = await client.expect("deliver_sm")
        assert mo.esm_class == 0 and mo.short_message == b"hello after restart"
        ack(client, mo)
        await client.ping()
        await wait_for(lambda: again.stats()["deliveries_waiting"] == 0)
        await client.close()
    finally:
        await again.stop()


async def test_an_unreadable_owed_file_owes_nothing(tmp_path):
    owed = tmp_path / "owed.json"
    owed.write_text('{"owed": [{"kind": "receipt", "pdu": "zz"}]}')
    sim = await started(str(owed))
    try:
        assert sim.stats()["deliveries_waiting"] == 0
    finally:
        await sim.stop()


async def test_owed_file_cannot_be_changed_at_run_time(tmp_path):
    sim = await started(str(tmp_path / "owed.json"))
    try:
        with pytest.raises(ValueError, match="start only"):
            sim.set_config(owed_file="/tmp/elsewhere.json")
    finally:
        await sim.stop()
