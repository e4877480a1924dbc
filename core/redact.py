"""One redaction for every command: credentials never reach a log, an event, an error
message, a printed line or a written report.

- :func:`redact`: a URL without its credentials (``rtsp://***@host/stream``) and
  without the values of query parameters that look secret (``token=***``).
- :func:`redact_text`: every URL inside a text redacted, and given secrets (e.g. a
  password an error message quotes on its own) replaced by ``***``.
- :func:`secrets_of`: the credential strings inside a URL, for :func:`redact_text`.
- :func:`redact_value`: the same through nested dicts and lists (a report, a config).

Credentials need not be on the command line, where ``ps`` shows them to every
user of the machine: :func:`load_credentials` reads ``user:password`` from an
environment variable or a file, and :func:`with_credentials` puts them into a URL
in memory only.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from microgesture.core.errors import MicrogestureError

log = logging.getLogger(__name__)

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SENSITIVE_KEY = re.compile(r"pass|pwd|token|key|secret|auth|sig|credential|session", re.I)
_QUERY_ITEM = re.compile(r"(^|[&;])([^=&;]*)=([^&;]*)")


def redact(url: Any) -> str:
    """``url`` without its credentials: the user and password become ``***``
    (``rtsp://***@host:554/stream``) and so do the values of query parameters that look
    secret (``token``, ``key``, ``password``, ``auth``, ``signature``, ...). Anything
    that is not a URL is returned unchanged (as a string)."""
    text = str(url)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:   # malformed (e.g. a bad IPv6 literal): hide everything before '@'
        return re.sub(r"://[^/]*@", "://***@", text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _QUERY_ITEM.sub(
        lambda m: m.group(1) + m.group(2) + "=" + ("***" if _SENSITIVE_KEY.search(m.group(2))
                                                   else m.group(3)), parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(spec: Any) -> list[str]:
    """The credential strings inside a URL (raw and percent-decoded), longest first."""
    text = str(spec)
    if "://" not in text:
        return []
    found: set[str] = set()
    netloc = text.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        found.update([userinfo, *userinfo.split(":", 1)])
    for m in _QUERY_ITEM.finditer(text.partition("?")[2].partition("#")[0]):
        if _SENSITIVE_KEY.search(m.group(2)):
            found.add(m.group(3))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def redact_text(text: Any, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted and every string in ``secrets`` (e.g. a
    password that an error message quotes on its own) replaced by ``***``."""
    out = _URL_RE.sub(lambda m: redact(m.group(0)), str(text))
    for secret in secrets:
        out = out.replace(secret, "***")
    return out


def redact_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` with :func:`redact_text` applied to every string inside it (dicts,
    lists and tuples are rebuilt; other values are returned as they are)."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, secrets) for v in value)
    return value


# --------------------------------------------------------------------------- credentials

def load_credentials(env: str | None = None, file: str | os.PathLike | None = None) -> str | None:
    """``user:password`` from the environment variable ``env`` or the first line of
    ``file`` (None when neither is given). A file that other users can read is used,
    with a warning to ``chmod 600`` it."""
    if env and file:
        raise MicrogestureError("give the credentials once: --credentials-env or "
                                "--credentials-file, not both")
    if env:
        value = os.environ.get(env)
        if not value:
            raise MicrogestureError(f"the environment variable {env} is not set (or empty); set "
                                    f"it to user:password, e.g. read -s {env} && export {env}")
        return _check_userinfo(value.strip(), f"${env}")
    if file:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MicrogestureError(f"cannot read the credentials file {path}: {exc.strerror}") \
                from None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s can be read by other users: chmod 600 %s", path, path)
        line = text.strip().splitlines()[0].strip() if text.strip() else ""
        return _check_userinfo(line, str(path))
    return None


def _check_userinfo(value: str, where: str) -> str:
    if not value or ":" not in value or value.startswith(":"):
        raise MicrogestureError(f"{where} must hold user:password (one line), e.g. "
                                "admin:secret")
    return value


_KEEP = "!$&'()*+,;=-._~"


def with_credentials(url: str, userinfo: str | None) -> str:
    """``url`` with ``user:password`` put in (percent-encoded) when it is a network URL
    without credentials of its own; anything else is returned unchanged."""
    if not userinfo or "://" not in str(url):
        return url
    parts = urlsplit(str(url))
    if "@" in parts.netloc or parts.scheme.lower() not in ("rtsp", "rtsps", "rtmp", "http",
                                                           "https"):
        return url
    user, _, password = userinfo.partition(":")
    # only what would break the URL is percent-encoded (@ / ? # and spaces, : in the user)
    netloc = f"{quote(user, safe=_KEEP)}:{quote(password, safe=_KEEP + ':')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
