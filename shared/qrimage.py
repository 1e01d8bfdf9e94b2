"""Render QR codes to PNG and read them back the way a real scanner does (zxing-cpp)."""

from __future__ import annotations

import io

import segno
import zxingcpp
from PIL import Image


def render_png(text: str, *, scale: int = 6, error: str = "m") -> bytes:
    """PNG of `text` as a QR code with the standard 4-module quiet zone."""
    code = segno.make_qr(text, error=error, boost_error=False)
    buffer = io.BytesIO()
    code.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


def qr_version(text: str, *, error: str = "m") -> int:
    """The QR version (1-40) segno picks for `text`; the dynamic QR must stay at 11 or lower."""
    version = segno.make_qr(text, error=error, boost_error=False).version
    assert isinstance(version, int)
    return version


def decode_png(png: bytes) -> list[str]:
    """Every QR code zxing-cpp finds in the image, in reading order."""
    image = Image.open(io.BytesIO(png)).convert("L")
    # QR codes only: a full symbology search "finds" short codes in page text now and then.
    found = zxingcpp.read_barcodes(
        image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    return [result.text for result in found]
