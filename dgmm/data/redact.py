"""Keep credentials out of files, logs and messages: known secrets become ``***``.

Secrets are the values of secret-looking keys (``secret``, ``token``, ``key``,
``password``, ``credential``, ``sas``, ``connection_string`` ...) in every
``storage_options`` dgmm opens a filesystem with, the values of secret-looking
environment variables (``AWS_SECRET_ACCESS_KEY``, ``AZURE_STORAGE_KEY`` ...), and the
user:password part of URLs.
"""
from __future__ import annotations

import logging
import os
import re
import threading

MASK = "***"
_SECRET_NAME = re.compile(
    r"secret|token|passw|credential|key|sas|signature|connection_string|auth", re.IGNORECASE
)
_SECRET_ENV = re.compile(
    r"SECRET|TOKEN|PASSW|CREDENTIAL|_KEY$|_KEY_ID$|ACCOUNT_KEY|SAS|CONNECTION_STRING"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s'\"]+@")
_MIN_LENGTH = 6
_known: set[str] = set()
_lock = threading.Lock()


def _collect(value, name: str | None, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, str(key), out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, name, out)
    elif (isinstance(value, str) and name is not None and _SECRET_NAME.search(name)
          and len(value) >= _MIN_LENGTH):
        out.add(value)


def register(storage_options) -> None:
    """Remember the secret values found in ``storage_options`` (nested mappings too)."""
    found: set[str] = set()
    _collect(storage_options or {}, None, found)
    if found:
        with _lock:
            _known.update(found)


def secrets() -> list[str]:
    """Every secret known now, longest first."""
    env = {value for name, value in os.environ.items()
           if _SECRET_ENV.search(name.upper()) and len(value) >= _MIN_LENGTH}
    with _lock:
        values = _known | env
    return sorted(values, key=len, reverse=True)


def redact(text) -> str:
    """``text`` with every known secret and URL password replaced by ``***``."""
    text = str(text)
    for value in secrets():
        if value in text:
            text = text.replace(value, MASK)
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logged as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_filter() -> None:
    """Redact every record passing through the root logger's handlers."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
