#!/usr/bin/env python3
"""Check a Chromium screenshot of the browser-test site: the 64x64 red PNG
and the blue box from style.css are visible, and some dark text rendered.

Standard library only: decodes 8-bit RGB/RGBA non-interlaced PNGs."""
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        t = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if t == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif t == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def main():
    w, h, bpp, rows = decode(sys.argv[1])
    red = blue = dark = 0
    for r in rows:
        for x in range(0, w * bpp, bpp):
            R, G, B = r[x], r[x + 1], r[x + 2]
            if R > 240 and G < 20 and B < 20:
                red += 1
            elif B > 240 and R < 20 and G < 20:
                blue += 1
            elif R < 80 and G < 80 and B < 80:
                dark += 1
    print(f"screenshot {w}x{h}: red {red} px (image), blue {blue} px (styled box), dark {dark} px (text)")
    ok = red >= 64 * 64 * 0.9 and blue >= 120 * 60 * 0.9 and dark >= 200
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
