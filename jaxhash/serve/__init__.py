"""The image search system (Hu & Feng's deep-learning image retrieval system) on jaxhash.

``jaxhash serve --data-dir DIR`` starts it: a web page and a JSON API to search by example, index
folders and uploaded zips, train a CNN on your own classes with live progress, and maintain models
and indexes. All state lives under DIR (a SQLite database in WAL mode, model and index files), or
in the database given by ``--database-url``. Needs the ``serve`` extra (FastAPI, uvicorn,
SQLAlchemy): ``pip install 'jaxhash[serve]'``.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

__all__ = ["serve", "is_loopback", "start_server_process", "MissingExtraError"]


class MissingExtraError(ImportError):
    """The serve extra is not installed."""


def _require_extra() -> None:
    from importlib.util import find_spec  # noqa: PLC0415

    wanted = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "sqlalchemy": ("sqlalchemy",),
              "python-multipart": ("python_multipart", "multipart")}
    missing = [name for name, modules in wanted.items() if not any(find_spec(m) for m in modules)]
    if missing:
        raise MissingExtraError(f"jaxhash serve needs {', '.join(missing)}: pip install 'jaxhash[serve]'")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on before anything is set up (uvicorn would say so only after
    the server's banner)."""
    import errno  # noqa: PLC0415
    import socket  # noqa: PLC0415

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no conflict
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise OSError(f"cannot listen on {host}:{port}: another program (another jaxhash serve?) uses that port; "
                              "stop it, or choose another with --port") from None
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serve(data_dir, host: str = "127.0.0.1", port: int = 8000, allow_roots=(), token: str | None = None,
          database_url: str | None = None, min_images_per_class: int | None = None, log_level: str = "info") -> None:
    """Run the server until interrupted. Bound to anything but loopback it needs a ``token``."""
    _require_extra()
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} lets other machines in: start it with --token SECRET, which every change "
                         "(train, index, delete) must then carry; or bind to 127.0.0.1")
    for root in allow_roots:
        if not Path(root).expanduser().is_dir():
            raise FileNotFoundError(f"--allow-root {root} is not a folder{'' if Path(root).expanduser().exists() else ' (it does not exist)'}")
    _check_port_free(host, port)
    import uvicorn  # noqa: PLC0415

    from .app import create_app  # noqa: PLC0415
    from .service import DEFAULT_MIN_IMAGES_PER_CLASS, Service  # noqa: PLC0415

    service = Service(data_dir, database_url, allow_roots,
                      min_images_per_class=DEFAULT_MIN_IMAGES_PER_CLASS if min_images_per_class is None else min_images_per_class)
    if service.interrupted_at_start:
        jobs = service.interrupted_at_start
        print(f"jaxhash serve: job{'s' if len(jobs) != 1 else ''} {', '.join(map(str, jobs))} "
              f"{'were' if len(jobs) != 1 else 'was'} interrupted when the server stopped; resume "
              f"{'them' if len(jobs) != 1 else 'it'} on the page (Jobs) or with POST /api/jobs/ID/resume", flush=True)
    print(f"jaxhash serve: http://{host}:{port}/  (data in {service.data_dir}; API schema at /docs)", flush=True)
    try:
        names = {"localhost", "127.0.0.1", "::1"} if is_loopback(host) else None  # elsewhere the token guards
        uvicorn.run(create_app(service, token, allowed_hosts=names), host=host, port=port, log_level=log_level)
    finally:
        service.stop(timeout=2.0)


def start_server_process(data_dir, port: int, allow_roots=(), extra_args=(), log=None, timeout: float = 60.0, env=None):
    """Start ``jaxhash serve`` in a new process on 127.0.0.1 and wait until it answers ``/api/health``.

    For scripts and tests that need a real server (a browser, a killed process). Returns the
    ``subprocess.Popen``; ``log`` is a file for its output (default: discarded).
    """
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    command = [sys.executable, "-m", "jaxhash.cli", "serve", "--data-dir", str(data_dir), "--port", str(port),
               *[a for root in allow_roots for a in ("--allow-root", str(root))], *extra_args]
    process = subprocess.Popen(command, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env or dict(os.environ))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jaxhash serve exited with status {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"jaxhash serve did not answer on port {port} within {timeout:.0f} s")
