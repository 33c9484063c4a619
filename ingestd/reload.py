"""Reload of auth tokens, tenant limits and alert rules without a restart: on SIGHUP or a
file change.

The whole config file is re-read and validated, with `auth.tokens_file`; only the `auth`,
`limits` and `alerts` sections take effect (other changed sections are named in the log as
needing a restart; `alerts.enabled` too: the stage exists only when enabled at start). A file
that does not validate changes nothing: the old tokens, limits and rules stay, and the
problems are logged. Files are checked every `reload.poll_interval_s` (mtime, size, inode).

`auth.application_keys`: its tuning (refresh_s, the TTLs, max_stale_s, max_entries) is applied
to the running key cache. Turning application keys on or off is refused, as a file that does
not validate is (nothing changes, `config_reload_failed` names the key and says to restart):
the key cache and its database pool are a stage started with the daemon, and a reload that
kept accepting keys the operator switched off must not look applied.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from ingestd import config as config_module
from ingestd.auth import Authenticator, load_table
from ingestd.config import ApplicationKeysConfig, AuthConfig, Config, LimitsConfig
from ingestd.errors import ConfigError
from ingestd.observe.metrics import CONFIG_RELOADS
from ingestd.pipeline import cancel_and_wait
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.state.ratelimit import RateLimiter

log = structlog.get_logger("ingestd.reload")

_RELOADABLE = ("auth", "limits", "alerts")
Fingerprint = tuple[int, int, int] | None


class ConfigReloader:
    """A stage that re-applies `auth` and `limits` from the config file when asked or changed."""

    name = "reload"

    def __init__(
        self,
        path: Path | None,
        current: Config,
        auth: Authenticator,
        limits: RateLimiter,
        *,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Sequence[Callable[[Config], list[str]]] = (),
    ) -> None:
        self._path = path
        # Other reloadable sections (alerts): each takes the new config, returns its changes.
        self._listeners = listeners
        self._current = current
        self._auth = auth
        self._limits = limits
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._seen = self._fingerprints()
        self._hup = False

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        if self._path is None:
            return
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload, "sighup")
        self._hup = True
        if self._current.reload.poll_interval_s > 0:
            self._task = tasks.create_task(self._poll(), name="reload")

    async def stop(self, deadline: float) -> None:
        if self._hup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._hup = False
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def reload(self, reason: str = "requested") -> bool:
        """Re-read the files and apply auth and limits; False (old config kept) on a problem."""
        self._seen = self._fingerprints()
        if self._path is None:
            return False
        try:
            new = config_module.load(self._path)
            table = load_table(new.auth)
            refuse_application_keys_switch(new.auth, running=self._auth.keys is not None)
        except ConfigError as exc:
            CONFIG_RELOADS.labels(outcome="failed").inc()
            log.error("config_reload_failed", reason=reason, kept="previous", problems=exc.problems)
            return False
        changes = self._auth.update(new.auth, table)
        if self._auth.keys is not None:
            changes += key_changes(self._auth.keys.config, new.auth.application_keys)
            self._auth.keys.config = new.auth.application_keys
        changes += limit_changes(self._current.limits, new.limits)
        self._limits.update(new.limits)
        for listener in self._listeners:
            changes += listener(new)
        restart = [
            name
            for name in type(new).model_fields
            if name not in _RELOADABLE and getattr(new, name) != getattr(self._current, name)
        ]
        self._current = new
        self._seen = self._fingerprints()
        CONFIG_RELOADS.labels(outcome="applied" if changes else "unchanged").inc()
        log.info("config_reloaded", reason=reason, changes=changes, restart_needed_for=restart)
        return True

    async def _poll(self) -> None:
        while True:
            await self._clock.sleep(self._current.reload.poll_interval_s)
            self.check()

    def check(self) -> bool:
        """Reload if a watched file changed since the last look; True when it reloaded."""
        if self._fingerprints() == self._seen:
            return False
        return self.reload("file_changed")

    def _fingerprints(self) -> tuple[Fingerprint, ...]:
        paths = [self._path, self._current.auth.tokens_file]
        return tuple(_fingerprint(p) for p in paths if p is not None)


def _fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def limit_changes(old: LimitsConfig, new: LimitsConfig) -> list[str]:
    """What changed between two limits sections, by tenant name."""
    changes: list[str] = []
    if old.default != new.default:
        changes.append(f"limits.default: {_brief(new.default.model_dump())}")
    for tenant in sorted(old.tenants.keys() | new.tenants.keys()):
        before, after = old.tenants.get(tenant), new.tenants.get(tenant)
        if before == after:
            continue
        if after is None:
            changes.append(f"limits.tenants.{tenant}: removed")
        else:
            changes.append(
                f"limits.tenants.{tenant}: {_brief(after.model_dump(exclude_unset=True))}"
            )
    return changes


def refuse_application_keys_switch(new: AuthConfig, *, running: bool) -> None:
    """ConfigError when *new* turns application keys on or off: that takes a restart."""
    if not new.enabled or new.application_keys.enabled == running:
        return  # with auth off no key is looked at, whatever the cache does
    turn = "on" if new.application_keys.enabled else "off"
    raise ConfigError(
        [
            f"auth.application_keys.enabled: turning application keys {turn} takes a restart"
            " (the key cache starts with the daemon); nothing was reloaded"
        ]
    )


def key_changes(old: ApplicationKeysConfig, new: ApplicationKeysConfig) -> list[str]:
    """The tuning of the application key cache that changed, as `key=value` entries."""
    before, after = old.model_dump(), new.model_dump()
    changed = {k: v for k, v in after.items() if before[k] != v}
    return [f"auth.application_keys: {_brief(changed)}"] if changed else []


def _brief(fields: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())
