"""Builds the model container (endpoint/Dockerfile) without Docker and without pulling anything, for `make image-check`.

1. The base image the Dockerfile names by default (Debian bookworm slim) is made here with ``mmdebstrap`` from
   Debian's own package registry, the root file system kept in a cache between runs, and committed into buildah's
   storage under that same name, so the build finds it there and pulls nothing.
2. ``buildah bud`` builds the Dockerfile with chroot isolation (no container runtime is needed) on the host's
   network. A machine that reaches PyPI through its own certificate authority lends its pip settings and that
   authority's bundle to the build as build secrets: mounted while pip runs, never in the image.

It prints the build's wall time and the image's size; tests/image then runs the server inside the image.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "endpoint" / "Dockerfile"
IMAGE = "localhost/infery-whisper:check"
DEBIAN_SUITE = "bookworm"
TOOLS = {"mmdebstrap": "mmdebstrap", "buildah": "buildah"}  # command: its Debian package
HOST_PIP_CONFIG = Path("/etc/pip.conf")
# where endpoint/Dockerfile mounts the lent certificate bundle (its build secret "pip-certificates"): beside, not over,
# the image's own bundle, which Debian's ca-certificates package writes while the build installs it
LENT_CERTIFICATES = "/run/secrets/pip-certificates.crt"


class ImageCheckError(Exception):
    pass


def default_base_image(dockerfile: str) -> str:
    found = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    if not found:
        raise ImageCheckError(f"{DOCKERFILE.relative_to(ROOT)} declares no default BASE_IMAGE")
    return found.group(1)


def ensure_tools() -> None:
    missing = [command for command in TOOLS if shutil.which(command) is None]
    if not missing:
        return
    packages = [TOOLS[command] for command in missing]
    if os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        install = ["apt-get", "install", "-y", "-qq", *packages]
        subprocess.run(install, check=True, env=environment, stdout=subprocess.DEVNULL)
        return
    raise ImageCheckError(
        f"the image check needs {', '.join(missing)}: on Debian or Ubuntu, `sudo apt-get install {' '.join(packages)}` "
        "(the check runs buildah as root). Elsewhere, `docker build -f endpoint/Dockerfile .` builds the same image "
        "but this check does not run it."
    )


def _buildah(*arguments: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *arguments], check=True, text=True, capture_output=capture)


def _has_image(name: str) -> bool:
    found = subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True, text=True)
    return found.returncode == 0


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infery"


def ensure_base_image(name: str) -> None:
    """The Debian base under the name the Dockerfile pulls by default, made from Debian's registry, not pulled."""
    if _has_image(name):
        print(f"base image {name}: already in buildah's storage")
        return
    if not re.search(rf"debian:{DEBIAN_SUITE}(-slim)?$", name):
        raise ImageCheckError(f"the Dockerfile's default base is {name}; this check makes Debian {DEBIAN_SUITE} only")
    root_filesystem = _cache_dir() / f"debian-{DEBIAN_SUITE}-minbase.tar"
    if not root_filesystem.is_file():
        root_filesystem.parent.mkdir(parents=True, exist_ok=True)
        partial = root_filesystem.with_suffix(".partial.tar")
        started = time.monotonic()
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", DEBIAN_SUITE, str(partial)], check=True)
        partial.rename(root_filesystem)
        print(f"mmdebstrap: Debian {DEBIAN_SUITE} root file system in {time.monotonic() - started:.0f} s")
    container = _buildah("from", "scratch").stdout.strip()
    try:
        _buildah("add", container, str(root_filesystem), "/")
        _buildah("config", "--cmd", "bash", container)
        _buildah("commit", "--quiet", container, name)
    finally:
        _buildah("rm", container)
    print(f"base image {name}: made from {root_filesystem}")


def lent_pip_settings(directory: Path) -> list[str]:
    """``--secret`` arguments that lend the host's pip settings and certificate authority to the build.

    The host's pip.conf is lent as it is, except that a ``cert`` it names is lent too and the copy points there.
    """
    if not HOST_PIP_CONFIG.is_file():
        return []
    settings = configparser.ConfigParser(interpolation=None)
    settings.read(HOST_PIP_CONFIG)
    secrets: list[str] = []
    for section in settings.sections():
        certificates = settings.get(section, "cert", fallback=None)
        if certificates:
            if not secrets:
                secrets.append(f"id=pip-certificates,src={Path(certificates).resolve()}")
            settings.set(section, "cert", LENT_CERTIFICATES)
    lent_config = directory / "pip.conf"
    with lent_config.open("w") as file:
        settings.write(file)
    return [f"id=pip.conf,src={lent_config}", *secrets]


def build(image: str) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="infery-image-") as directory:
        # --layers commits each step on its own: the diarization step's 6 GB is held three times while it is committed
        # (the step's files, the layer's tar stream, the layer), not the whole image's 8 GB, which filled this disk
        command = ["bud", "--isolation=chroot", "--network=host", "--pull=never", "--layers", "--file", str(DOCKERFILE)]
        for secret in lent_pip_settings(Path(directory)):
            command += ["--secret", secret]
        _buildah(*command, "--tag", image, str(ROOT), capture=False)
    elapsed = time.monotonic() - started
    size = json.loads(_buildah("images", "--json", image).stdout)[0]["size"]
    print(f"image {image}: built in {elapsed:.0f} s, {size}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=IMAGE, help="the tag to build")
    arguments = parser.parse_args(argv)
    try:
        ensure_tools()
        ensure_base_image(default_base_image(DOCKERFILE.read_text()))
        build(arguments.image)
    except ImageCheckError as error:
        print(f"image check: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        command = " ".join(map(str, error.cmd[:3]))
        print(f"image check: {command} failed, exit status {error.returncode}\n{error.stderr or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
