import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection
from channels.db import database_sync_to_async
from smsapi.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def sessions():
    with connection.cursor() as c:
        c.execute(
            "select state, query from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        )
        return c.fetchall()


async def test_x():
    print("before", await database_sync_to_async(sessions)())
    ws = WebsocketCommunicator(application, "/v1/ws/jsonrpc")
    await ws.connect()
    print("after connect", await database_sync_to_async(sessions)())
    await ws.send_json_to({"method": "SM.Query", "params": [{"id": "5"}], "id": 1})
    print(await ws.receive_json_from())
    print("after call", await database_sync_to_async(sessions)())
    await ws.disconnect()
