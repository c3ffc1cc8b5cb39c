#!/usr/bin/env python3
"""Independent implementation of docs/FORMAT.md (format version 1) that writes format-v1.json.

Written from the spec alone, with Python's `cryptography` package and zlib, so that the Swift
implementation is checked against a second one (VectorTests). Deterministic: fixed key, repository
id and salts. Run: python3 generate_vectors.py > format-v1.json
"""
import hashlib, hmac, json, struct, zlib
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
K = bytes(range(32))
R = bytes(0xA0 + i for i in range(16))


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def expand(prk, info):
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(prk)


def subkeys(k, r):
    return {p: hkdf(k, r, b"coffer/v1/" + p.encode()) for p in
            ["chunk-id", "data", "pack-header", "metadata", "config"]}


SK = subkeys(K, R)


def chunk_id(plain, sk=SK):
    return hmac.new(sk["chunk-id"], plain, hashlib.sha256).digest()


def nonce(n):
    return b"\0" * 8 + struct.pack(">I", n)


def deflate(data, level=1):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def worthwhile(n):
    return n - (n + 7) // 8


def config_bytes(k_config, r, chunk=1 << 20, group=1 << 16, pack=8 << 20, comp=1, level=1, pad=0, floor=0,
                 version=VERSION, flags=0):
    body = b"COFFERCF" + struct.pack(">H", version) + r + struct.pack(">IIIIBBBBI", flags, chunk, group, pack,
                                                                         comp, level, pad, 0, floor)
    assert len(body) == 50
    tag = hmac.new(k_config, body, hashlib.sha256).digest()
    return body + tag + hashlib.sha256(body + tag).digest()


def blob_aad(btype, bid, comp, ulen):
    return struct.pack(">HB", VERSION, btype) + bid + struct.pack(">BI", comp, ulen)


def padme(n):
    """Padmé (Nikitin et al., PETS 2019, Algorithm 1): clear the low E - S bits, rounding up."""
    if n < 2:
        return n
    e = n.bit_length() - 1          # floor(log2 n)
    s = e.bit_length()              # floor(log2 e) + 1
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def padded_size(n, floor):
    """Stored size with padding scheme 1: max(floor, Padme(n))."""
    return max(floor, padme(n))


def pack_padding(blobs_len, count, floor):
    """Padding length P that makes the pack padded_size(unpadded) bytes long."""
    unpadded = blobs_len + 16 + 48 * count + 16 + 44
    return padded_size(unpadded, floor) - unpadded


def build_pack(salt, blobs, sk=SK, padding=0, floor=None):
    """blobs: list of dicts with type, plaintext, compress, optional id/ulen overrides."""
    pack_key = expand(sk["data"], b"coffer/v1/pack" + salt)
    header_key = expand(sk["pack-header"], b"coffer/v1/pack-header" + salt)
    out, entries, described = b"", b"", []
    for i, b in enumerate(blobs):
        plain = b["plaintext"]
        payload, comp = plain, 0
        if b["compress"] and len(plain) >= 64:
            c = deflate(plain)
            if len(c) <= worthwhile(len(plain)):
                payload, comp = c, 1
        bid = b.get("id", chunk_id(plain, sk))
        ulen = b.get("ulen", len(plain))
        aad = blob_aad(b["type"], bid, comp, ulen)
        stored = AESGCM(pack_key).encrypt(nonce(i), payload, aad)
        entries += struct.pack(">BBHIII", b["type"], comp, 0, ulen, len(out), len(stored)) + bid
        described.append({"index": i, "type": b["type"], "compression": comp, "plaintext": plain.hex(),
                          "payload": payload.hex(), "id": bid.hex(), "uncompressedLength": ulen,
                          "offset": len(out), "length": len(stored), "aad": aad.hex(), "nonce": nonce(i).hex(),
                          "stored": stored.hex()})
        out += stored
    if floor is not None:
        padding = pack_padding(len(out), len(blobs), floor)
    header = struct.pack(">HHIII", VERSION, 0, len(blobs), padding, 0) + entries + b"\0" * padding
    trailer = salt + struct.pack(">HHI", VERSION, 0, len(header) + 16) + b"CFPK"
    enc_header = AESGCM(header_key).encrypt(nonce(0), header, trailer)
    pack = out + enc_header + trailer
    return pack, {"salt": salt.hex(), "packKey": pack_key.hex(), "headerKey": header_key.hex(),
                  "blobs": described, "headerPlaintext": header.hex(), "trailer": trailer.hex(),
                  "bytes": pack.hex(), "objectID": hashlib.sha256(pack).hexdigest()}


def seal(otype, plain, salt, compress, sk=SK, padding=0, floor=None):
    key = expand(sk["metadata"], b"coffer/v1/object" + salt)
    prefix = b"CFSO" + struct.pack(">HBB", VERSION, otype, 0) + salt
    payload, comp = plain, 0
    if compress and len(plain) >= 64:
        c = deflate(plain)
        if len(c) <= worthwhile(len(plain)):
            payload, comp = c, 1
    if floor is not None:
        unpadded = 40 + 16 + len(payload) + 16
        padding = padded_size(unpadded, floor) - unpadded
    inner = struct.pack(">B3xQI", comp, len(plain), padding) + payload + b"\0" * padding
    obj = prefix + AESGCM(key).encrypt(nonce(0), inner, prefix)
    return obj, {"type": otype, "salt": salt.hex(), "objectKey": key.hex(), "compress": compress,
                 "compression": comp, "plaintext": plain.hex(), "inner": inner.hex(), "bytes": obj.hex(),
                 "objectID": hashlib.sha256(obj).hexdigest()}


def flip(b, i):
    b = bytearray(b)
    b[i] ^= 1
    return bytes(b)


def main():
    salt_blob = bytes(0x50 + i for i in range(32))
    salt_pack = bytes(0x70 + i for i in range(32))
    salt_obj = bytes(0x90 + i for i in range(32))
    salt_obj2 = bytes(0xB0 + i for i in range(32))

    chunk_inputs = [b"", b"abc", bytes(i % 256 for i in range(1000))]
    config = config_bytes(SK["config"], R)

    blob_pack, blob_desc = build_pack(salt_blob, [{"type": 1, "plaintext": b"Coffer test blob", "compress": False}])
    pack_blobs = [
        {"type": 1, "plaintext": b"hello, coffer", "compress": False},
        {"type": 2, "plaintext": b"tree entry; " * 25, "compress": True},
        {"type": 1, "plaintext": bytes(range(40)), "compress": True},  # too random to keep compressed
    ]
    pack, pack_desc = build_pack(salt_pack, pack_blobs)
    obj1, obj1_desc = seal(1, b'{"packs":[]}', salt_obj, False)
    obj2, obj2_desc = seal(2, b"snapshot " * 40, salt_obj2, True)

    # Padding scheme 1 (Padme with a floor). Small floors keep the vectors short; the engine's
    # default floor is 1 MiB.
    salt_ppack = bytes(0xD0 + i for i in range(32))
    padded_packs = []
    for floor, blobs in [(0, pack_blobs), (2048, pack_blobs[:2])]:
        pp, pp_desc = build_pack(salt_ppack, blobs, floor=floor)
        pp_desc.update(paddingScheme=1, paddingFloor=floor, paddingLength=pack_padding(
            sum(b["length"] for b in pp_desc["blobs"]), len(blobs), floor))
        padded_packs.append(pp_desc)
    assert padded_packs[0]["paddingLength"] > 0 and len(bytes.fromhex(padded_packs[1]["bytes"])) == 2048
    salt_pobj = bytes(0xE0 + i for i in range(32))
    padded_objects = []
    for floor, plain in [(0, b'{"packs":["padded"]}' * 3), (1024, b'{"snapshot":"padded"}')]:
        po, po_desc = seal(1, plain, salt_pobj, False, floor=floor)
        po_desc.update(paddingScheme=1, paddingFloor=floor, paddingLength=len(po) - (72 + len(plain)))
        padded_objects.append(po_desc)
    assert padded_objects[0]["paddingLength"] > 0 and len(bytes.fromhex(padded_objects[1]["bytes"])) == 1024
    padme_values = [[n, padme(n)] for n in [0, 1, 2, 3, 9, 100, 1000, 4097, 65537, 1000000, 1048576, 1048577,
                                            8400000, 4294967295]]

    # Expected failures (each must be reported with the given error).
    other_key = bytes([0xFF] * 32)
    lie_pack, lie_desc = build_pack(salt_pack, [{"type": 1, "plaintext": b"content", "compress": False,
                                                 "id": chunk_id(b"other")}])
    bomb_plain = b"z" * 1000
    bomb_pack, bomb_desc = build_pack(salt_pack, [{"type": 1, "plaintext": bomb_plain, "compress": True,
                                                   "ulen": 999}])
    blob0 = pack_desc["blobs"][0]
    v2 = config_bytes(SK["config"], R, version=2)
    failures = [
        {"object": "config", "description": "another backup key", "key": other_key.hex(), "bytes": config.hex(),
         "error": "wrongKey"},
        {"object": "config", "description": "one bit flipped in the body", "key": K.hex(),
         "bytes": flip(config, 40).hex(), "error": "damaged"},
        {"object": "config", "description": "one bit flipped in the tag", "key": K.hex(),
         "bytes": flip(config, 60).hex(), "error": "damaged"},
        {"object": "config", "description": "truncated", "key": K.hex(), "bytes": config[:100].hex(),
         "error": "damaged"},
        {"object": "config", "description": "format version 2, intact checksum", "key": K.hex(), "bytes": v2.hex(),
         "error": "unsupportedVersion"},
        {"object": "config", "description": "fileChunkSize 1000, authentic tag", "key": K.hex(),
         "bytes": config_bytes(SK["config"], R, chunk=1000).hex(), "error": "parameterOutOfBounds"},
        {"object": "packHeader", "description": "one bit flipped in the encrypted header", "key": K.hex(),
         "bytes": flip(pack, len(pack) - 44 - 5).hex(), "error": "authenticationFailed"},
        {"object": "packHeader", "description": "one bit flipped in the trailer's header length", "key": K.hex(),
         "bytes": flip(pack, len(pack) - 5).hex(), "error": "authenticationFailed"},
        {"object": "packHeader", "description": "trailer magic changed", "key": K.hex(),
         "bytes": flip(pack, len(pack) - 1).hex(), "error": "malformed"},
        {"object": "blob", "description": "one bit flipped in blob 0", "key": K.hex(),
         "bytes": flip(pack, 3).hex(), "entryIndex": 0, "error": "authenticationFailed"},
        {"object": "blob", "description": "entry id is not the HMAC of the plaintext", "key": K.hex(),
         "bytes": lie_pack.hex(), "entryIndex": 0, "error": "idMismatch"},
        {"object": "blob", "description": "declared uncompressed length one byte short", "key": K.hex(),
         "bytes": bomb_pack.hex(), "entryIndex": 0, "error": "decompressionFailed"},
        {"object": "sealedObject", "description": "object type relabelled in the clear prefix", "key": K.hex(),
         "bytes": (obj1[:6] + bytes([2]) + obj1[7:]).hex(), "expectType": 2, "error": "authenticationFailed"},
        {"object": "sealedObject", "description": "another backup key", "key": other_key.hex(),
         "bytes": obj1.hex(), "expectType": 1, "error": "authenticationFailed"},
        {"object": "sealedObject", "description": "opened as another type", "key": K.hex(),
         "bytes": obj1.hex(), "expectType": 2, "error": "unexpectedType"},
    ]
    assert blob0["index"] == 0

    vectors = {
        "comment": "Coffer format version 1 test vectors (docs/FORMAT.md), generated by generate_vectors.py",
        "backupKey": K.hex(),
        "repositoryID": R.hex(),
        "subkeys": {p: k.hex() for p, k in SK.items()},
        "chunkIDs": [{"plaintext": p.hex(), "id": chunk_id(p).hex()} for p in chunk_inputs],
        "config": {"fileChunkSize": 1 << 20, "sqliteGroupSize": 1 << 16, "targetPackSize": 8 << 20,
                   "compression": 1, "compressionLevel": 1, "padding": 0, "paddingFloor": 0,
                   "bytes": config.hex(), "checksum": config[-32:].hex()},
        "blob": dict(blob_desc["blobs"][0], salt=blob_desc["salt"], packKey=blob_desc["packKey"]),
        "pack": pack_desc,
        "sealedObjects": [obj1_desc, obj2_desc],
        "padme": padme_values,
        "paddedPacks": padded_packs,
        "paddedSealedObjects": padded_objects,
        "failures": failures,
    }
    print(json.dumps(vectors, indent=1))


if __name__ == "__main__":
    main()
