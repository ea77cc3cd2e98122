"""``helpline init``: create a controller home, migrate the store, enrol the first admin."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.audit import AuditLog, load_key
from controller.home import ControllerHome
from controller.store import Store


async def initialise(
    home: ControllerHome,
    url: str,
    listen: str | None,
    name: str,
    admin_name: str,
    admin_key: Path | None,
    grant_seconds: int = 7200,
) -> dict[str, Any]:
    """Write the home and enrol the first admin; returns what was made."""
    import asyncssh

    if admin_key is not None:
        key = asyncssh.read_public_key(str(admin_key))
        key_source = str(admin_key)
    config = home.create(url, listen, name, grant_seconds)
    if admin_key is None:
        private = asyncssh.generate_private_key("ssh-ed25519", comment=f"{admin_name}@helpline")
        private.write_private_key(str(home.admin_key_path))
        home.admin_key_path.chmod(0o600)
        private.write_public_key(str(home.admin_key_path) + ".pub")
        key = private.convert_to_public()
        key_source = str(home.admin_key_path)
    store = await Store.open(config.database)
    try:
        await store.migrate()
        now = datetime.now(UTC)
        user = await store.add_user(
            admin_name,
            "admin",
            None,
            key.export_public_key().decode().strip(),
            key.get_fingerprint("sha256"),
            now,
        )
        audit_log = AuditLog(store, load_key(home.audit_key_path), home.audit_head_path)
        await audit_log.append(
            "user.added",
            actor="init",
            details={"user": user.name, "new_role": "admin", "key": user.fingerprint},
        )
        await audit_log.close()  # signs the head, marked as this run's last
    finally:
        await store.close()
    return {
        "home": str(home.path),
        "url": config.url,
        "listen": f"{config.listen_host}:{config.listen_port}",
        "pin": home.pin(),
        "database": config.database,
        "admin": admin_name,
        "admin_key": key_source,
        "grant_seconds": config.grant_seconds,
    }
