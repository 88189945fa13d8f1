"""An async main awaits `asyncio.to_thread(time.sleep, …)`: the loop is idle in its selector
while a default-executor thread (asyncio_0) sleeps; nothing has signalled it."""

import asyncio
import time


async def main() -> None:
    print("ready", flush=True)
    await asyncio.to_thread(time.sleep, 3600)  # AWAIT


asyncio.run(main())
