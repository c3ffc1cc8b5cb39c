#!/usr/bin/env python3
"""Computes the vault derivation vectors from docs/VAULT.md independently of the Swift code
(hashlib, hmac, the `cryptography` package), and writes
Tests/CofferVaultTests/Vectors/vault-derivations.json. The Swift tests recompute every value."""
import hashlib, hmac, json, os, unicodedata
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def lp(b): assert len(b) <= 0xFFFF; return len(b).to_bytes(2, "big") + b
def hkdf(ikm, info, salt=b"", n=32):
    prk = hmac.new(salt if salt else b"\0" * 32, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest(); out += t; i += 1
    return out[:n]
def hm(k, m): return hmac.new(k, m, hashlib.sha256).digest()
def gmul(a, b):
    p = 0
    for _ in range(8):
        if b & 1: p ^= a
        hi = a & 0x80; a = (a << 1) & 0xFF
        if hi: a ^= 0x1B
        b >>= 1
    return p
L = lambda s: s.encode()

tenant, user = L("coffer-dev"), "zoë@example.com".encode()
version = bytes(range(16))
policy = bytes([1, 15, 8, 1, 10])           # scrypt N=2^15, r=8, p=1, L=10 (fast for tests)
password = "Pa\u0301ss wörd "                 # decomposed á, trailing space kept
pw = unicodedata.normalize("NFC", password).encode()
salt = hashlib.sha256(L("coffer-vault/v1/salt") + version + lp(tenant) + lp(user)).digest()
h = hashlib.scrypt(pw, salt=salt, n=2**15, r=8, p=1, maxmem=2**26, dklen=32)
realm_id = bytes.fromhex("00112233445566778899aabbccddeeff")
rwd = bytes.fromhex("3333230886b562ffb8329a8be08fea8025755372817ec969d114d1203d026b4a622beab60220bf19078bca35a529b35c")
mask = hkdf(rwd, L("coffer-vault/v1/mask"), salt=realm_id)
S = bytes((7 * i + 3) & 0xFF for i in range(32))
K = bytes((11 * i + 5) & 0xFF for i in range(32))
seed = hkdf(S, L("coffer-vault/v1/record-sign"))
sk = Ed25519PrivateKey.from_private_bytes(seed)
vk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
x = 3
pk_i = bytes.fromhex("031d689686c611991b55f1a1d8f4305ccd6cb719446f660a30db61b7aa87b46acf59b7c0d4a9077b3da21c25dd482229a0")
coeffs = [bytes((13 * i + 1) & 0xFF for i in range(32)), bytes((17 * i + 2) & 0xFF for i in range(32))]
def share(xv):
    out = []
    for j in range(32):
        acc = 0
        for c in reversed(coeffs): acc = gmul(acc ^ c[j], xv)
        out.append(acc ^ S[j])
    return bytes(out)
shares = {xv: share(xv) for xv in range(1, 6)}
c_i = bytes(a ^ b for a, b in zip(shares[x], mask))
record = L("coffer-vault/v1/record") + version + realm_id + bytes([x]) + pk_i + c_i + policy
sig = sk.sign(record)
C = hm(hkdf(S, L("coffer-vault/v1/commit")), version + policy + bytes([5, 3]) + vk + lp(tenant) + lp(user))
U = hkdf(S, L("coffer-vault/v1/unlock"))
tag = hm(U, L("coffer-vault/v1/unlock-tag") + realm_id + version)
challenge = bytes(range(100, 132))
proof = hm(tag, L("coffer-vault/v1/unlock-proof") + realm_id + version + challenge)
nonce = bytes(range(200, 212))
wk = hkdf(S, L("coffer-vault/v1/wrap"))
W = nonce + AESGCM(wk).encrypt(nonce, K, version + lp(tenant) + lp(user))

out = {
    "note": "Computed by scripts/vault_vectors.py from the definitions in docs/VAULT.md",
    "tenant": tenant.hex(), "user": user.hex(), "version": version.hex(), "policy": policy.hex(),
    "password": password, "passwordNFC": pw.hex(), "salt": salt.hex(), "scrypt": h.hex(),
    "realmID": realm_id.hex(), "rwd": rwd.hex(), "mask": mask.hex(),
    "S": S.hex(), "K": K.hex(), "recordSignSeed": seed.hex(), "vk": vk.hex(),
    "shamirCoefficients": [c.hex() for c in coeffs],
    "shares": {str(k): v.hex() for k, v in shares.items()},
    "x": x, "oprfPublicKey": pk_i.hex(), "maskedShare": c_i.hex(),
    "recordMessage": record.hex(), "recordSignature": sig.hex(),
    "n": 5, "t": 3, "commitment": C.hex(), "unlockKey": U.hex(), "unlockTag": tag.hex(),
    "challenge": challenge.hex(), "unlockProof": proof.hex(), "wrapNonce": nonce.hex(), "wrapKey": wk.hex(), "W": W.hex(),
}
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "CofferVaultTests", "Vectors", "vault-derivations.json")
with open(path, "w") as f: json.dump(out, f, indent=2, ensure_ascii=False); f.write("\n")
print(json.dumps(out, indent=2, ensure_ascii=False))
