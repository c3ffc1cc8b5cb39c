#!/usr/bin/env python3
"""Computes the anchored-head vectors of docs/VAULT.md ("Anchored backup heads") independently of
the Swift code (hashlib, hmac, the `cryptography` package) and writes
Tests/CofferVaultTests/Vectors/vault-heads.json. The Swift tests recompute every value."""
import hashlib, hmac, json, os
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def hkdf(ikm, info, n=32):
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()   # empty salt = 32 zero bytes
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest(); out += t; i += 1
    return out[:n]
def hm(k, m): return hmac.new(k, m, hashlib.sha256).digest()

K = bytes((11 * i + 5) & 0xFF for i in range(32))
repository = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
writer = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
seq = 42
snapshot = bytes(range(0x40, 0x60))
time_ms = 1_800_000_123_456
realm_id = bytes.fromhex("00112233445566778899aabbccddeeff")

k_seal = hkdf(K, b"coffer/v1/vault-head-seal")
k_slot = hkdf(K, b"coffer/v1/vault-head-slot")
k_auth = hkdf(K, b"coffer/v1/vault-head-auth")
k_nonce = hkdf(K, b"coffer/v1/vault-head-nonce")
slot = hm(k_slot, repository + writer)[:16]
plain = bytes([1]) + repository + writer + seq.to_bytes(8, "big") + snapshot + time_ms.to_bytes(8, "big")
assert len(plain) == 81
nonce = hm(k_nonce, plain)[:12]
sealed = nonce + AESGCM(k_seal).encrypt(nonce, plain, b"coffer/v1/vault-head" + slot)
assert len(sealed) == 109
auth = hm(k_auth, realm_id + slot)

out = {
    "source": "scripts/head_vectors.py (hashlib, hmac, cryptography)",
    "K": K.hex(), "repositoryID": repository.hex(), "writerID": writer.hex(), "seq": seq,
    "snapshotID": snapshot.hex(), "timeMilliseconds": time_ms, "realmID": realm_id.hex(),
    "K_seal": k_seal.hex(), "K_slot": k_slot.hex(), "K_auth": k_auth.hex(), "K_nonce": k_nonce.hex(),
    "plaintext": plain.hex(), "slotID": slot.hex(), "nonce": nonce.hex(), "sealedHead": sealed.hex(),
    "writeAuth": auth.hex(),
}
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "CofferVaultTests", "Vectors", "vault-heads.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
    f.write("\n")
print(json.dumps(out, indent=2, sort_keys=True))
