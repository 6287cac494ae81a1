"""File names from clients: kept for display and downloads, never used as paths."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\:*?\"<>|]+")
#: Unicode categories dropped from names: format characters (the bidi overrides and isolates
#: such as U+202E, which make "gpj.exe" look like "exe.jpg", zero-width characters, BOMs),
#: line and paragraph separators, private use and unpaired surrogates.
_DROPPED = frozenset({"Cf", "Zl", "Zp", "Co", "Cs"})
MAX_NAME = 120


def safe_name(raw: str | None, fallback: str = "image", max_bytes: int = MAX_NAME) -> str:
    """A display name with no directory parts, control, bidi or reserved characters, at most
    `max_bytes` long in UTF-8 (shortened keeping the extension)."""
    name = raw or ""
    if not (name.isascii() and name.isprintable()):  # none of those is in _DROPPED
        name = unicodedata.normalize("NFC", name)
        name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        return fallback
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    ext = _clip(ext, 10)
    stem = _clip(stem, max_bytes - len(ext.encode()) - 1).rstrip(" .") or fallback
    return f"{stem}.{ext}" if ext else stem


def _clip(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` within `max_bytes` of UTF-8, never half a character."""
    return text.encode()[: max(max_bytes, 0)].decode("utf-8", "ignore")


def with_extension(name: str, ext: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem}.{ext}"


def unique_names(names: list[str]) -> list[str]:
    """Make names unique the way file managers do: photo.png, photo (2).png, ..."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        while candidate.lower() in seen:
            n += 1
            candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def content_disposition(name: str, inline: bool = False) -> dict[str, str]:
    """The Content-Disposition header that offers `name` for download (RFC 6266: an ASCII
    fallback, and the exact name in UTF-8), with no control or bidi character in it."""
    name = safe_name(name, "result", max_bytes=1024)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    kind = "inline" if inline else "attachment"
    return {"Content-Disposition":
            f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"}
