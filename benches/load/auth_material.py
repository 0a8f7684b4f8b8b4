#!/usr/bin/env python3
"""Key material and tokens for the load benchmark's JWT variants, made fresh for each run.

Writes into DIR: jwks.json (one RS256 public key), hs.secret, and rs256.token / hs256.token,
valid for two hours, with the issuer and audience the bench configs expect. RSA signing uses
the openssl command line, so nothing beyond python3 and openssl is needed.

Usage: auth_material.py DIR
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

ISSUER = "https://id.bench/"
AUDIENCE = "bench"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(alg: str, kid: str | None) -> bytes:
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "scope": "bench",
              "iat": now, "exp": now + 7200}
    return (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    key = os.path.join(out, "rsa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key], check=True, capture_output=True)
    modulus = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"], check=True,
                             capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    jwks = {"keys": [{"kty": "RSA", "kid": "bench-1", "use": "sig", "alg": "RS256",
                      "n": b64url(bytes.fromhex(modulus)), "e": b64url((65537).to_bytes(3, "big"))}]}
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump(jwks, f)

    rs_input = signing_input("RS256", "bench-1")
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=rs_input, check=True,
                         capture_output=True).stdout
    with open(os.path.join(out, "rs256.token"), "w") as f:
        f.write(rs_input.decode() + "." + b64url(sig))

    secret = os.urandom(32).hex().encode()
    with open(os.path.join(out, "hs.secret"), "wb") as f:
        f.write(secret)
    hs_input = signing_input("HS256", None)
    mac = hmac.new(secret, hs_input, hashlib.sha256).digest()
    with open(os.path.join(out, "hs256.token"), "w") as f:
        f.write(hs_input.decode() + "." + b64url(mac))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
