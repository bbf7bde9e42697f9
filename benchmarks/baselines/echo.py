"""The limit: a raw websockets server that answers every CALL at once (no validation, no records), on uvloop and
orjson. ``python -m benchmarks.baselines.echo PORT``; BootNotification is answered Accepted."""
from __future__ import annotations

import asyncio
import resource
import sys
from datetime import datetime, timezone

import orjson
import uvloop
from websockets.asyncio.server import serve

BOOT = {"status": "Accepted", "interval": 300}


async def handler(ws) -> None:
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame[0] != 2:
            continue
        action = frame[2]
        if action == "BootNotification":
            payload = {**BOOT, "currentTime": datetime.now(timezone.utc).isoformat()}
        elif action == "Heartbeat":
            payload = {"currentTime": datetime.now(timezone.utc).isoformat()}
        elif action == "StartTransaction":
            payload = {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}
        else:
            payload = {}
        await ws.send(orjson.dumps([3, frame[1], payload]).decode())


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, subprotocols=["ocpp1.6"], backlog=1024,
                     max_size=2 ** 20):
        print('{"event": "ready"}', flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    uvloop.run(main(int(sys.argv[1])))
