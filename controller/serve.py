"""``helpline serve``: open the store and the audit log, build the controller, serve.

The one place that puts the parts together: :class:`~controller.server.Controller` (the
``/agent`` endpoint and the session links) gets its ``/api`` endpoint from here, so the
API may depend on the server and the server never on the API.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import timedelta

from websockets.asyncio.server import Server, serve

from controller.api import Api
from controller.audit import AuditLog, load_key
from controller.guard import Limits, install_resource_filter, raise_open_files_limit
from controller.home import ControllerHome
from controller.server import HEARTBEAT_SECONDS, Controller, GatedConnection, GrantSettings
from controller.store import Store
from controller.tls import server_context
from protocol import codec
from transport.tls import lean_tls_buffers

log = logging.getLogger("helpline.controller")


async def run_server(
    home: ControllerHome, listen: tuple[str, int] | None = None, ready: asyncio.Event | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; migrate the store first."""
    lean_tls_buffers()  # ≈50 KB per idle agent instead of ≈290 KB
    config = home.load()
    lock = home.lock_for_serving()  # held until this process exits
    before, open_files = raise_open_files_limit()
    limits = Limits.from_env(open_files)
    log.info(
        "open files limit %d (raised from %d); at most %d connections may wait to log in "
        "(%d per address), each for %g s",
        open_files,
        before,
        limits.preauth_total,
        limits.preauth_per_source,
        limits.login_timeout,
    )
    install_resource_filter(limits.report_interval)
    store = await Store.open(config.database)
    await store.migrate()
    audit_log = AuditLog(store, load_key(home.audit_key_path), home.audit_head_path)
    await audit_log.start()
    if audit_log.halted is not None:
        # serve anyway (a tampered log must not become an outage), but nobody may miss it
        print(
            f"helpline: AUDIT LOG TAMPERED: {audit_log.halted}\n"
            "helpline: no checkpoint will be signed until an admin checks the log "
            "(`helpline audit verify`) and accepts it (`helpline audit accept --reason …`)",
            file=sys.stderr,
            flush=True,
        )
    controller = Controller(
        home,
        store,
        api=Api,
        name=config.name,
        audit_log=audit_log,
        settings=GrantSettings(grant=timedelta(seconds=config.grant_seconds)),
        limits=limits,
    )
    host, port = listen or (config.listen_host, config.listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: Server
    async with serve(
        controller.handle,
        host,
        port,
        ssl=server_context(home.cert_path, home.key_path),
        process_request=controller.process_request,
        create_connection=GatedConnection,
        # until a peer logs in; Controller.logged_in raises it to its endpoint's limit
        max_size=codec.PREAUTH_MAX_FRAME,
        ping_interval=HEARTBEAT_SECONDS,
        ping_timeout=HEARTBEAT_SECONDS,
        server_header="helpline",
        compression=None,  # small JSON frames; see agent/connection.py
    ) as server:
        bound = [sock.getsockname() for sock in server.sockets]
        log.info("helpline controller %s listening on %s", config.name, bound)
        print(f"helpline: serving on wss://{host}:{port} (agents dial {config.url})", flush=True)
        expiry = asyncio.create_task(controller.links.expire_grants())
        reports = asyncio.create_task(controller.report_hostile())
        await controller.desk.start()
        await stop.wait()
        expiry.cancel()
        reports.cancel()
        await controller.desk.stop()
    await controller.hostile.flush()  # counts of the last interval are not lost
    await audit_log.close()  # the last checkpoint covers everything up to shutdown
    await store.close()
    lock.close()
