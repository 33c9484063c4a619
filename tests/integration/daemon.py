"""Run a real `ingestd run` process for a test: temp config, free ports, JSON logs parsed.

The process logs one JSON event per line; `wait_for_event` reads them, so a test learns the
ports it got (config endpoints use port 0) and sees lifecycle events as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class IngestdProcess:
    """One ingestd subprocess with its JSON log lines collected in the background."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config_path = workdir / "ingestd.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingestd", "run", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "non_json_line", "line": raw.decode(errors="replace")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for_event(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"event not seen within {timeout_s}s (exit={self.proc.poll()}); "
                        f"last events: {self.events[-10:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def port_of(self, event_name: str) -> int:
        event = self.wait_for_event(lambda e: e.get("event") == event_name)
        return int(str(event["endpoint"]).rpartition(":")[2])

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of('admin_listening')}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, want: int = 200, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        status = body = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingestd exited with {self.proc.returncode}: {self.events}")
            status, body = self.get("/readyz")
            if status == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"/readyz stayed {status} (wanted {want}): {body!r}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def base_config(pg_dsn: str, es_url: str, redis_url: str) -> dict[str, Any]:
    """A config for tests: every listener on a free port, JSON logs, short intervals."""
    return {
        "receivers": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {"endpoint": "127.0.0.1:0"},
        },
        "sinks": {
            "timescale": {"dsn": pg_dsn, "pool": {"min_size": 1, "max_size": 4}},
            "elasticsearch": {"urls": [es_url]},
        },
        "redis": {"url": redis_url},
        "admin": {"endpoint": "127.0.0.1:0", "check_interval_s": 0.5},
        "telemetry": {"log_format": "json", "log_level": "info"},
        "shutdown": {"grace_s": 10},
    }
