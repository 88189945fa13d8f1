"""An async flow calling blocking time.sleep on the event loop thread."""

import asyncio
import time


async def flow() -> None:
    print("ready", flush=True)
    time.sleep(3600)  # BLOCK


asyncio.run(flow())
