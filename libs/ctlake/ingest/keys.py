"""The de-identification site key: from an environment variable or a file, never from the repo.

One key per site keeps pseudonyms, remapped UIDs and date shifts stable across runs and
machines; whoever holds it can link pseudonyms back to nothing but the same input, so it is a
secret all the same. Local profiles may generate a throw-away key under the state folder.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from ctlake.config import Config
from ctlake.errors import ConfigError

MIN_KEY_BYTES = 16


def _decode(text: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = text.encode()
    return raw


def site_key(cfg: Config) -> bytes:
    """The site key for ``cfg`` (see ``deid`` in conf/base.yaml)."""
    d = cfg.deid
    raw: bytes | None = None
    source = ""
    if os.environ.get(d.site_key_env):
        raw, source = _decode(os.environ[d.site_key_env]), f"${d.site_key_env}"
    elif d.site_key_file:
        path = Path(d.site_key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"deid.site_key_file: {path} does not exist")
        raw, source = _decode(path.read_text()), str(path)
    elif d.generate_local_key:
        path = cfg.state_dir / "deid" / "site.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            print(f"[ctlake] generated a local de-identification key at {path} "
                  f"(set ${d.site_key_env} at a real site)", file=sys.stderr)
        raw, source = _decode(path.read_text()), str(path)
    if raw is None:
        raise ConfigError(
            f"no de-identification site key: set ${d.site_key_env} (hex or text, >= {MIN_KEY_BYTES} bytes) "
            "or deid.site_key_file")
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(f"the de-identification key from {source} is {len(raw)} bytes; need >= {MIN_KEY_BYTES}")
    return raw
