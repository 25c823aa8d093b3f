"""The Docker engine the Docker backend and the image builds talk to: one client, found one way.

The SDK is imported when a client is made, so that commands that never touch Docker do not pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from labkit.errors import BackendError

__all__ = ["DEFAULT_SOCKET", "docker_client", "engine_url", "image_exists", "image_id", "remove_replaced"]

logger = logging.getLogger(__name__)

# The engine's usual unix socket; the lab's agent container also sees the engine's socket at this path.
DEFAULT_SOCKET = "/var/run/docker.sock"


def engine_url() -> str:
    """The engine a new lab or build uses: DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_SOCKET}")


def docker_client(base_url: str | None = None) -> Any:
    """A client for the engine at `base_url`, else DOCKER_HOST's, else the default socket, checked with a
    ping; a BackendError saying what to do when none answers."""
    import docker
    import docker.errors

    where = base_url or engine_url()
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise BackendError(
            f"no Docker engine answers at {where} ({exc}); start dockerd (Debian: apt-get install docker.io; "
            "README: 'In containers: the Docker backend') or set DOCKER_HOST to the engine's socket"
        ) from exc
    return client


def image_id(client: Any, tag: str) -> str | None:
    """The id of the image `tag` in the engine, or None when it has none."""
    import docker.errors

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def image_exists(client: Any, tag: str) -> bool:
    return image_id(client, tag) is not None


def remove_replaced(client: Any, old_id: str | None, tag: str, progress: Callable[[str], None]) -> None:
    """Remove the image a rebuild took `tag` from, so that forced rebuilds do not pile up untagged
    images; one still used by a container or by another image's layers stays (and is logged)."""
    import docker.errors

    if old_id is None or old_id == image_id(client, tag):
        return
    try:
        client.images.remove(old_id)
    except docker.errors.APIError as exc:
        logger.info("kept %s, the image %s had before: %s", old_id, tag, exc)
    else:
        progress(f"removed {old_id[:19]}, the image {tag} had before")
