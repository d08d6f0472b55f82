"""One replica *process* of ``polly soak --crash-cycles``: an engine on the soak's shared sandbox.

Started by the soak as ``python -m polly.sandbox.soak_replica --port P --replica NAME`` with the
database in ``DATABASE_URL`` (the environment, not the command line, which ``ps`` shows); it
connects to the soak's :class:`~polly.sandbox.remote.SandboxServer`, runs the engine until
SIGTERM (graceful: the queued events are drained) or SIGKILL (the soak's crash), and reports its
transitions and, every second, its queue depths and marked polls to the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from polly.app import open_app
from polly.clock import SYSTEM_CLOCK, Clock
from polly.config import load_settings
from polly.engine.service import Engine
from polly.sandbox.gateway import SANDBOX_BOT_ID
from polly.sandbox.remote import RemoteGateway
from polly.sandbox.soak import soak_settings
from polly.supervisor import Readiness, Supervisor


async def serve(port: int, replica: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Run one replica until SIGTERM."""
    settings = soak_settings(load_settings())
    gateway = RemoteGateway(port, bot_user_id=SANDBOX_BOT_ID)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    cfg = settings.engine
    # the soak prepared the database; the replica opens it as any polly process does
    async with open_app(settings, redis=False, prepare=False) as app:
        engine = Engine(
            settings, app.database, gateway, replica=replica,
            on_transition=lambda p, t, r: gateway.report("transition", (p, t, r)),
        )  # fmt: skip

        async def report(ready: Readiness) -> None:
            ready.ready()
            while True:
                await clock.sleep(1.0)
                depth = gateway.event_stats().depth
                gateway.report(
                    "stats", (replica, os.getpid(), depth, engine.votes.queued, engine.reconciler.marked)
                )

        try:
            async with Supervisor(
                name=replica, registry=None, shutdown_timeout_seconds=cfg.shutdown_timeout_seconds
            ) as sup:
                engine.start(sup)
                sup.start_loop("report", report)
                await stop.wait()
                await sup.shutdown(cfg.shutdown_timeout_seconds)
        finally:
            engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="one replica process of polly soak --crash-cycles")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {args.replica} %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args.port, args.replica))


if __name__ == "__main__":
    main()
