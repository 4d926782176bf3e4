#!/usr/bin/env python3
"""Write the committed seed corpora: <crate>/fuzz/seeds/<target>/<name>.

Each seed is a small VALID input (or a recipe the target turns into one),
so a run starts on the paths past the decoders' first checks. The inputs'
layouts are described at the top of each fuzz target. Run from the
repository root; it rewrites the seed directories.
"""
import os
import shutil
import struct

WIRE_LEN = 6 + 944  # lichen_tunnel::WIRE_LEN


def cbor_text(s):
    b = s.encode()
    assert len(b) < 24
    return bytes([0x60 + len(b)]) + b


def cbor_uint(n):
    if n < 24:
        return bytes([n])
    if n < 256:
        return bytes([0x18, n])
    return bytes([0x1B]) + struct.pack(">Q", n)


def envelope(m, v=1):
    """CBOR of lichen_link's {"v": v, "m": m} (m already CBOR)."""
    return b"\xa2" + cbor_text("v") + cbor_uint(v) + cbor_text("m") + m


def ping(nonce):
    return b"\xa1" + cbor_text("Ping") + b"\xa1" + cbor_text("nonce") + cbor_uint(nonce)


def u16(n):
    return struct.pack(">H", n)


def raw_env(cbor):
    """link_frames op 1: a hand-made envelope."""
    return b"\x01" + u16(len(cbor)) + cbor


SEEDS = {
    "fuzz/seeds/block": {
        # mode 0: CHK, 32 768 bytes of 'A', convergent key: the full block.
        "chk-full": b"\x00" + u16(32768) + b"A" + b"\x00",
        "chk-empty-random-key": b"\x00" + u16(0) + b"\x00" + b"\x05",
        "chk-half": b"\x00" + u16(16000) + b"z" + b"\x03",
        # ... with one byte of the tag flipped, and cut short.
        "chk-flipped-tag": b"\x00" + u16(32768) + b"A" + b"\x00" + u16(32780) + b"\x01",
        "chk-cut": b"\x00" + u16(100) + b"q" + b"\x07" + u16(32785) + b"\x00",
        # mode 1: SSK, 1 024 bytes, metadata+zstd, docname "doc".
        "ssk-full": b"\x01\x03" + u16(1024) + b"B" + b"\x03" + b"\x03" + b"\x03\x0e\x02",
        "ssk-flipped-sig": b"\x01\x04" + u16(10) + b"C" + b"\x00" + b"\x00" + u16(1150) + b"\x80",
        # mode 2: valid tag, length trailer past the payload / within it.
        "chk-bad-trailer": b"\x02" + u16(0xFFFF) + b"\x11",
        "chk-good-trailer": b"\x02" + u16(0x0010) + b"\x11",
        # mode 3: raw bytes.
        "raw": b"\x03" + bytes(range(64)),
    },
    "fuzz/seeds/uri": {
        "chk": b"CHK@e8FSIj38PRc0cVkfkc09oaw3oULp3TcGqlbEjsFxYlc,Y836tOiXkIXo4M5UP1juI6aOmK-9~JhQeU1tyU-4KUY,AQEBAAE/name.txt",
        "ssk": b"SSK@AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI,AQECAAE/doc",
        "usk": b"USK@NHUPmL1Z-PyUbaRaqr6TO~FUpLUJThxKv0KGZQXzyX4,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI,AQACAAE/site/3/index.html",
        "ksk": b"freenet:KSK@hello/a/b",
    },
    "fuzz/seeds/metadata": {
        # docs/metadata.md test vectors.
        "redirect": bytes.fromhex("8201a1687265646972656374a266746172676574654b534b4061646d696d656a746578742f706c61696e"),
        "inline": bytes.fromhex("8201a166696e6c696e65a365636f646563006473697a65026464617461426869"),
        "manifest": bytes.fromhex("8201a1686d616e6966657374a26764656661756c746a696e6465782e68746d6c67656e7472696573a16a696e6465782e68746d6ca166696e6c696e65a365636f646563006473697a65026464617461426869"),
        "splitfile": bytes.fromhex("8201a16973706c697466696c65a56473697a65199c406f636f6d707265737365645f73697a65199c4065636f64656300667368613235365820")
        + b"\xaa" * 32
        + bytes.fromhex("687365676d656e747381a364646174610265636865636b02646b657973590100")
        + b"\x11" * 256,
    },
    "link/fuzz/seeds/link_frames": {
        # chunk 0 = all at once; op 0 = honest message: id, kind, fields.
        "ping": b"\x00" + b"\x00\x07\x00" + struct.pack(">Q", 42),
        "request": b"\x00" + b"\x00\x01\x04" + b"\x10\x01\x12",
        # A whole CHK block in a DataFound, read 61 bytes at a time.
        "datafound-chk": b"\x01" + b"\x00\x02\x05" + u16(32786) + b"\xab\x00",
        "insertdata-ssk": b"\x00" + b"\x00\x03\x06" + u16(1184) + b"\xcd\x01",
        "rekey-then-ping": b"\x00" + b"\x00\x00\x02" + b"\x00\x00\x00" + struct.pack(">Q", 1),
        "many": b"\x03" + b"\x00\x01\x07" + b"\x00\x02\x08\x09" + b"\x00\x00\x03" + b"\x00\x05\x01" + struct.pack(">Q", 9),
        # op 1 = hand-made envelopes: valid, a newer version, Rekey, garbage.
        "raw-ping": b"\x00" + raw_env(envelope(ping(5))),
        "raw-newer-version": b"\x00" + raw_env(envelope(cbor_text("Close"), v=2)),
        "raw-rekey-then-close": b"\x00" + raw_env(envelope(cbor_text("Rekey"))) + raw_env(envelope(cbor_text("Close"))),
        "raw-unknown-message": b"\x00" + raw_env(envelope(cbor_text("Frobnicate"))),
        # op 2 = a record whose header lies; op 3 = a flipped byte.
        "lying-header": b"\x00" + b"\x02\x02" + u16(5000) + u16(10) + b"0123456789",
        "flipped": b"\x00" + b"\x00\x00\x00" + struct.pack(">Q", 3) + b"\x03" + u16(20) + b"\x40",
    },
    "link/fuzz/seeds/noderef": {
        "text-prefix": b"lichen-noderef-v1:oWRib2R5QA",
        "cbor-shape": b"\xa2" + cbor_text("body") + b"\x40" + cbor_text("sig") + b"\x58\x40" + b"\x00" * 64,
    },
    "link/fuzz/seeds/handshake": {
        "zeros-msg1": bytes(48),
        "version-byte": b"\x02" + bytes(48),
    },
    "fcp/fuzz/seeds/decode": {
        "hello": b"\x01ClientHello\nName=fuzz\nExpectedVersion=2.0\nEndMessage\n",
        "get": b"\x09ClientGet\nURI=KSK@a\nIdentifier=x\nPersistence=forever\nEndMessage\n",
        "put-data": b"\x00ClientPut\nURI=CHK@\nIdentifier=p\nUploadFrom=direct\nDataLength=5\nData\nhello",
        "put-inline": b"\x05ClientHello\nName=a\nExpectedVersion=2.0\nEndMessage\nClientPut\nURI=KSK@b\nIdentifier=q\nDataLength=3\nData\nabc",
    },
    "routing/fuzz/seeds/events": {
        "zeros": bytes(64),
        "ramp": bytes(range(256)),
        "messages": bytes([1, 0, 0, 0, 0, 0, 0, 0, 5] + [i % 17 for i in range(200)]),
    },
    "tunnel/fuzz/seeds/cells": {
        # Create (type 1) circuit 1, depth 1, a 32-byte key, zero padding.
        "create": (b"\x01\x00\x00\x00\x01\x01" + b"\x42" * 32).ljust(WIRE_LEN, b"\x00"),
        "two-cells": (b"\x01\x00\x00\x00\x02\x02" + b"\x07" * 32).ljust(WIRE_LEN, b"\x00")
        + (b"\x02\x00\x00\x00\x02" + b"\x09" * 40).ljust(WIRE_LEN, b"\x00"),
        "command": b"\x01\x00\x40" + b"\x05" * 64,
    },
}

for d, files in SEEDS.items():
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{d}: {len(files)} seeds")
