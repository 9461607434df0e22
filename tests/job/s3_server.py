"""A real S3-compatible HTTP server for the tests, in its own process, that survives restarts.

moto's server speaks the S3 REST API over HTTP but keeps its state in memory. This wraps it
so that a restart keeps buckets and objects, as MinIO or SeaweedFS do: on SIGTERM it stops
accepting connections, waits for requests in flight, and writes every object under
``--state``; on start it loads them back before listening.

    python -m tests.job.s3_server --port 9000 --state /tmp/s3-state
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

REGION = "us-east-1"


def _backend():
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def load(state: Path) -> int:
    """Buckets are folders of ``state``; each object a file named by its key in hex."""
    count = 0
    for bucket in sorted(p for p in state.iterdir() if p.is_dir()) if state.exists() else []:
        _backend().create_bucket(bucket.name, REGION)
        for item in bucket.iterdir():
            _backend().put_object(bucket.name, bytes.fromhex(item.name).decode(), item.read_bytes())
            count += 1
    return count


def dump(state: Path) -> int:
    temp = state.with_name(state.name + ".new")
    temp.mkdir(parents=True, exist_ok=False)
    count = 0
    for name, bucket in _backend().buckets.items():
        (temp / name).mkdir()
        for key in bucket.keys.values():
            (temp / name / key.name.encode().hex()).write_bytes(key.value)
            count += 1
    if state.exists():
        old = state.with_name(state.name + ".old")
        state.rename(old)
        temp.rename(state)
        for bucket in old.iterdir():
            for item in bucket.iterdir():
                item.unlink()
            bucket.rmdir()
        old.rmdir()
    else:
        temp.rename(state)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    loaded = load(args.state)
    server = make_server(
        args.host,
        args.port,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    server.daemon_threads = False  # server_close() then waits for requests in flight
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"s3_server: listening on {args.host}:{args.port} with {loaded} objects", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    print(f"s3_server: stopped, saved {dump(args.state)} objects", flush=True)


if __name__ == "__main__":
    main()
