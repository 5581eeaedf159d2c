"""Debian's nginx as the C baseline for uploads (WebDAV PUT) and downloads, started by the
harness with its own configuration on a free loopback port (never the system's nginx)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.servers import ServerProcess, free_port

TEMPLATE = Path(__file__).with_name("nginx.conf.in")
NGINX = "/usr/sbin/nginx"
HEALTH_FILE = "health"


def render_config(template: str, directory: Path, port: int) -> str:
    return template.replace("@DIR@", str(directory)).replace("@PORT@", str(port))


def nginx_binary() -> str:
    found = shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    return found


def nginx_server(name: str, directory: Path, *, log_dir: Path) -> ServerProcess:
    """nginx serving and accepting files under `directory`/www (see `www`)."""
    for sub in ("www", "tmp", "logs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "www" / HEALTH_FILE).write_text("ok\n")
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(render_config(TEMPLATE.read_text(), directory, port))
    command = [nginx_binary(), "-c", str(config), "-p", f"{directory}/", "-g", "daemon off;"]
    return ServerProcess(
        name,
        command,
        port=port,
        env=os.environ,
        cwd=directory,
        log_dir=log_dir,
        health_path=f"/{HEALTH_FILE}",
    )


def www(directory: Path) -> Path:
    """Where nginx keeps PUT files and serves GETs from."""
    return directory / "www"
