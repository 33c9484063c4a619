"""Masking secrets in connection strings, for `print-config`, /status and logs.

Every place a password can hide in what ingestd is configured with:

- URL userinfo: `postgresql://user:secret@host/db`, `redis://:secret@host`,
  `rediss://user:secret@host`;
- URL query parameters: `postgresql://host/db?password=secret&sslpassword=...`,
  `redis://host?password=secret`;
- libpq's keyword/value form: `host=db user=x password=secret`, with quoting
  (`password='s e\\'cret'`) and spaces around `=` (`password = secret`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"

# libpq and redis-py parameters that carry a secret (libpq: password, sslpassword; redis-py
# takes `password` from the query too).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "pass", "passwd", "token"})

# key = value pairs of libpq's keyword form: a value is either single-quoted (backslash
# escapes \' and \\) or runs to the next whitespace.
_KEYWORD_PAIR = re.compile(
    r"(?P<key>\b[A-Za-z_]+)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s']\S*)", re.DOTALL
)


def mask_secrets(text: str) -> str:
    """*text* with every password it holds replaced by `***` (URL or libpq keyword form)."""
    if "://" in text:
        return _mask_url(text)
    if "=" in text:
        return _mask_keywords(text)
    return text


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Not parseable as a URL (bad port, brackets): mask everything after the scheme's
        # userinfo rather than risk printing a secret.
        return re.sub(r"(://[^/@]*:)[^/@]*@", rf"\g<1>{MASK}@", url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, _, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            query = "&".join(
                f"{quote(key, safe='')}="
                + (MASK if key.lower() in _SECRET_PARAMS else quote(value, safe=""))
                for key, value in pairs
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_keywords(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("key").lower() not in _SECRET_PARAMS:
            return match.group(0)
        return f"{match.group('key')}{match.group('eq')}{MASK}"

    return _KEYWORD_PAIR.sub(replace, text)
