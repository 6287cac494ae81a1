"""How sizes are written for people, the same in every message, the page and the docs.

Bytes in binary units (50 MiB is 50 × 1024 × 1024 bytes, the default file limit), pixels as
megapixels with "MP" only where the exact count is not shown beside them.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def describe_bytes(n: int) -> str:
    """'512 B', '97.7 KiB', '50 MiB', '1.5 GiB'."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{n} B"
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return f"{text} {_UNITS[unit]}"


def describe_megapixels(pixels: int) -> str:
    """'16 MP', '0.3 MP', '12.2 MP'."""
    mp = pixels / 1e6
    return f"{mp:.0f} MP" if mp >= 100 or mp == round(mp) else f"{mp:.3g} MP"
