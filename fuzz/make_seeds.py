#!/usr/bin/env python3
"""Writes the seed inputs under corpus/<target>/seed-* that need keys, signatures
or DER (tokens, certificates, CSRs, protobuf). Hand-written seeds are committed
as they are; this makes the rest. Needs Python's `cryptography`.

The signing key is a fixed, public test key (its scalar is below): the JWKS in
fuzz_targets/jwt.rs is its public half, so seeds made again still verify there.
Signatures are randomized, so a re-run changes the token and certificate bytes.

    python3 fuzz/make_seeds.py
"""

import base64
import datetime
import hashlib
import json
import os
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

HERE = os.path.dirname(os.path.abspath(__file__))
ISSUER = "https://issuer.example"
# Not a secret: the fuzz targets' fixed test key.
SCALAR = int.from_bytes(hashlib.sha256(b"meshward fuzz signing key").digest(), "big")
KEY = ec.derive_private_key(SCALAR, ec.SECP256R1())
FAR = 4102444800  # 2100-01-01: the seeds stay unexpired


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(target: str, name: str, data) -> None:
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


def jwks() -> str:
    numbers = KEY.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "fuzz", "alg": "ES256", "use": "sig",
                                 "x": b64u(numbers.x.to_bytes(32, "big")),
                                 "y": b64u(numbers.y.to_bytes(32, "big"))}]})


def es256(claims: dict, header=None) -> str:
    header = header or {"alg": "ES256", "typ": "JWT", "kid": "fuzz"}
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def unsigned(claims: dict, alg: str) -> str:
    header = {"alg": alg, "typ": "JWT"}
    return b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode()) + "."


def jwt_seeds() -> None:
    good = {"iss": ISSUER, "sub": "alice", "aud": "api", "exp": FAR, "org": {"team": "payments"}}
    svid = {"sub": "spiffe://example.org/ns/default/sa/client", "aud": ["api"], "exp": FAR}
    # input: the query string, then header lines
    write("jwt", "bearer", "\nauthorization: Bearer " + es256(good) + "\n")
    write("jwt", "query", "access_token=" + es256(good) + "&x=1\n")
    write("jwt", "cookie", "\ncookie: a=b; session=" + es256(good) + "\n")
    write("jwt", "svid", "\nx-jwt: " + es256(svid) + "\n")
    write("jwt", "expired", "\nauthorization: Bearer " + es256(dict(good, exp=1000)) + "\n")
    write("jwt", "audience", "\nauthorization: Bearer " + es256(dict(good, aud="other")) + "\n")
    write("jwt", "alg-none", "\nauthorization: Bearer " + unsigned(good, "none") + "\n")
    write("jwt", "hs256", "\nauthorization: Bearer " + unsigned(good, "HS256") + "c2ln\n")
    write("jwt", "two-tokens", "access_token=" + es256(good) + "\nauthorization: Bearer "
          + es256(dict(good, sub="bob")) + "\nx-jwt-payload: forged\n")
    write("jwks", "es256", jwks())
    write("jwks", "rsa-okp", json.dumps({"keys": [
        {"kty": "RSA", "kid": "r", "alg": "RS256", "use": "sig", "e": "AQAB",
         "n": b64u((2**2047 + 12345).to_bytes(256, "big"))},
        {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": b64u(bytes(range(32)))},
        {"kty": "oct", "k": "c2VjcmV0"}]}))


def certificates() -> None:
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    ca_key = KEY
    ca = (x509.CertificateBuilder()
          .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org")]))
          .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org")]))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=36500))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")]), critical=False)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.derive_private_key(SCALAR + 1, ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=36500))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/ns/default/sa/client")]), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_der = ca.public_bytes(serialization.Encoding.DER)
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    write("x509_svid", "leaf.der", leaf_der)
    write("x509_svid", "ca.der", ca_der)
    numbers = ca_key.public_key().public_numbers()
    write("spiffe_bundle", "bundle.json", json.dumps({
        "keys": [
            {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": b64u(numbers.x.to_bytes(32, "big")),
             "y": b64u(numbers.y.to_bytes(32, "big")), "x5c": [base64.b64encode(ca_der).decode()]},
            {"kty": "EC", "use": "jwt-svid", "kid": "fuzz", "crv": "P-256",
             "x": b64u(numbers.x.to_bytes(32, "big")), "y": b64u(numbers.y.to_bytes(32, "big"))},
            {"kty": "RSA", "use": "jwt-svid", "kid": "ignored", "n": "AQAB", "e": "AQAB"}],
        "spiffe_sequence": 7, "spiffe_refresh_hint": 60}, indent=2))
    write("spiffe_bundle", "bundle.pem", ca.public_bytes(serialization.Encoding.PEM)
          + leaf.public_bytes(serialization.Encoding.PEM))

    def csr(key, uris, name=None, extra=None):
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(name or []))
        if uris:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
        for ext, critical in extra or []:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    write("csr", "plain.der", csr(leaf_key, []))
    write("csr", "uri.der", csr(leaf_key, ["spiffe://example.org/ns/default/sa/client"]))
    write("csr", "other-uri.der", csr(leaf_key, ["spiffe://example.org/ns/admin/sa/root"]))
    write("csr", "subject.der", csr(leaf_key, [], [x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    write("csr", "ca.der", csr(leaf_key, [], extra=[(x509.BasicConstraints(ca=True, path_length=None), True)]))
    write("csr", "p384.der", csr(ec.generate_private_key(ec.SECP384R1()), []))


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number: int, value) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def header_option(key, value, append=None, action=None) -> bytes:
    out = field(1, field(1, key) + field(2, value))
    if append is not None:
        out += field(2, field(1, int(append)) if append else b"")
    if action is not None:
        out += field(3, action)
    return out


def extauthz() -> None:
    ok = field(1, field(1, 0)) + field(3, field(2, header_option("x-user", "alice"))
                                       + field(2, header_option("x-forwarded-client-cert", "URI=spiffe://evil"))
                                       + field(5, "Authorization")
                                       + field(6, header_option("x-trace", "1", append=True))
                                       + field(2, header_option("x-once", "1", action=1)))
    denied = field(1, field(1, 7) + field(2, "denied")) + field(2, field(1, field(1, 401))
                                                               + field(2, header_option("www-authenticate", "Bearer"))
                                                               + field(3, "no"))
    write("extauthz_grpc", "ok", ok)
    write("extauthz_grpc", "denied", denied)
    write("extauthz_grpc", "denied-bad-status", field(1, field(1, 7)) + field(2, field(1, field(1, 99))))
    write("extauthz_grpc", "empty", b"")


if __name__ == "__main__":
    jwt_seeds()
    certificates()
    extauthz()
    print("JWKS for fuzz_targets/jwt.rs:", jwks())
