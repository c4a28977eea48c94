#!/usr/bin/env python3
"""Writes the fixed JWKS the `token` target verifies against (fuzz/fuzz_targets/token_jwks.json)
and its seed corpus (fuzz/seeds/token/): tokens signed with those keys, so the fuzzer starts from
inputs that pass the signature and reach the claim checks.

The private keys are thrown away (except Ed25519, whose fixed seed the target also uses to
re-sign inputs); rerunning this rewrites the JWKS and the seeds together.
Needs python3 with `cryptography`. Run from the repository root: python3 fuzz/seeds/gen_token_seeds.py
"""
import base64, hashlib, hmac, json, os
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# Must match fuzz/fuzz_targets/token.rs.
ISSUER_JWKS = "https://jwks.fuzz.example/"
ISSUER_HMAC = "https://hmac.fuzz.example/"
AUDIENCE = "claimgate-fuzz"
HMAC_SECRET = b"fuzz-secret-0123456789abcdef-0123456789"
ED_SEED = bytes([7] * 32)
EXP = 4102444800  # 2100-01-01

b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
p256 = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
ed = ed25519.Ed25519PrivateKey.from_private_bytes(ED_SEED)

rn = rsa_key.public_key().public_numbers()
def ec_jwk(key, crv, size, kid):
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": crv, "use": "sig", "kid": kid,
            "x": b64(uint(nums.x, size)), "y": b64(uint(nums.y, size))}
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
jwks = {"keys": [
    {"kty": "RSA", "use": "sig", "kid": "fz-rsa", "n": b64(uint(rn.n)), "e": b64(uint(rn.e))},
    ec_jwk(p256, "P-256", 32, "fz-ec256"),
    ec_jwk(p384, "P-384", 48, "fz-ec384"),
    {"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": "fz-ed", "alg": "EdDSA",
     "x": b64(ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))},
]}

def sign(alg, msg):
    if alg in ("RS256", "RS384", "RS512"):
        h = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}[alg]
        return rsa_key.sign(msg, padding.PKCS1v15(), h)
    if alg.startswith("PS"):
        h = {"PS256": hashes.SHA256(), "PS384": hashes.SHA384(), "PS512": hashes.SHA512()}[alg]
        return rsa_key.sign(msg, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if alg == "ES256":
        r, s = decode_dss_signature(p256.sign(msg, ec.ECDSA(hashes.SHA256())))
        return uint(r, 32) + uint(s, 32)
    if alg == "ES384":
        r, s = decode_dss_signature(p384.sign(msg, ec.ECDSA(hashes.SHA384())))
        return uint(r, 48) + uint(s, 48)
    if alg == "EdDSA":
        return ed.sign(msg)
    if alg.startswith("HS"):
        d = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(HMAC_SECRET, msg, d).digest()
    raise ValueError(alg)

def claims(iss, n):
    return {"iss": iss, "sub": f"user-{n}", "aud": AUDIENCE, "iat": 1700000000,
            "nbf": 1700000000, "exp": EXP, "jti": f"fz-{n}", "email": f"u{n}@example.com",
            "groups": ["readers", "writers"], "org": {"id": "org-42", "tier": "gold"},
            "scope": "openid api:read"}

def token(header, body, alg):
    msg = (b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
           b64(json.dumps(body, separators=(",", ":")).encode())).encode()
    return msg.decode() + "." + b64(sign(alg, msg))

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "..", "fuzz_targets", "token_jwks.json"), "w") as f:
    json.dump(jwks, f, indent=1)
    f.write("\n")
out = os.path.join(here, "token")
os.makedirs(out, exist_ok=True)
kids = {"RS": "fz-rsa", "PS": "fz-rsa", "ES256": "fz-ec256", "ES384": "fz-ec384", "EdDSA": "fz-ed"}
n = 0
# Mode byte 0: the rest is the token as sent.
for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]:
    kid = kids.get(alg, kids.get(alg[:2]))
    t = token({"alg": alg, "kid": kid, "typ": "JWT"}, claims(ISSUER_JWKS, n), alg)
    open(os.path.join(out, f"raw-{alg}"), "wb").write(b"\x00" + t.encode())
    n += 1
for alg in ["HS256", "HS384", "HS512"]:
    t = token({"alg": alg, "typ": "JWT"}, claims(ISSUER_HMAC, n), alg)
    open(os.path.join(out, f"raw-{alg}"), "wb").write(b"\x00" + t.encode())
    n += 1
# Mode bytes 1 (HS256) and 2 (EdDSA): header JSON, NUL, claims JSON; the target signs them.
for mode, alg, iss, extra in [(1, "HS256", ISSUER_HMAC, {}), (2, "EdDSA", ISSUER_JWKS, {"kid": "fz-ed"})]:
    header = json.dumps({"alg": alg, "typ": "JWT", **extra}).encode()
    body = json.dumps(claims(iss, n)).encode()
    open(os.path.join(out, f"signed-{alg}"), "wb").write(bytes([mode]) + header + b"\x00" + body)
    n += 1
