"""``python ci/uv_pip.py install ARGS...``: run ``uv pip`` with this machine's pip configuration.

uv does not read pip's configuration files or ``PIP_*`` variables; this reads them through
``pip config list`` (files and environment alike) and passes the ones an install depends on to uv:
index-url, extra-index-url, find-links, constraint, and cert (as ``SSL_CERT_FILE``). uv installs
the same packages as pip, resolved the way pip resolves across indexes (``unsafe-best-match``: the
best version from any index, so a CPU wheel in a local folder wins as it does for pip), in a
fraction of the time. The interpreter is the one running this script.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

_FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
          "constraint": "--constraint"}


def pip_config() -> dict[str, str]:
    """pip's effective settings, ``key -> value``; the environment (``:env:``) wins over files."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        scope_key, sep, value = line.partition("=")
        if not sep:
            continue
        scope, _, key = scope_key.rpartition(".")
        if scope not in ("global", "install", ":env:"):
            continue
        value = shlex.split(value)[0] if value.strip() else ""
        if scope == ":env:" or key not in found:
            found[key] = value
    return found


def uv_command(config: dict[str, str], args: list[str]) -> list[str]:
    uv = Path(sys.executable).with_name("uv")
    cmd = [str(uv), "pip", *args[:1], "--python", sys.executable]
    if args[:1] == ["install"]:
        # No --compile-bytecode: compiling every installed module (torch, vLLM, transformers, ...)
        # took ~100 s of a 138 s setup; ci/setup.sh compiles what a server imports instead.
        cmd += ["--index-strategy", "unsafe-best-match"]
        for key, flag in _FLAGS.items():
            for value in config.get(key, "").split():
                cmd += [flag, value]
    return cmd + args[1:]


def main(argv: list[str]) -> int:
    config = pip_config()
    env = dict(os.environ)
    if config.get("cert"):
        env.setdefault("SSL_CERT_FILE", config["cert"])
    return subprocess.run(uv_command(config, argv), env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
