"""`async_loop` fixed as advised: "use `await asyncio.sleep(...)`"."""

import asyncio
from pathlib import Path

from prefect import flow


@flow(name="fixed-async-loop")
async def fixed_async_loop(ready_path: str) -> None:
    Path(ready_path).write_text("ready")
    await asyncio.sleep(3600)
