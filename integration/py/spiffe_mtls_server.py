"""A workload in a meshward pod that authenticates callers of a foreign trust
domain with py-spiffe (PyPI `spiffe`), as a SPIFFE-aware server would: for every
connection it asks the Workload API for its X.509 context (its own X509-SVID and
the bundles its entry lets it have), serves TLS with its SVID, and requires a
client certificate that chains to the bundle of the caller's trust domain and
names a SPIFFE ID of it. A verified caller gets 200 and a JSON body with its ID
and the trust domains the context held; any other handshake fails.

Usage: spiffe_mtls_server.py SOCKET PORT CALLER_TRUST_DOMAIN
"""
import json
import os
import socket
import ssl
import sys
import tempfile

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import TrustDomain, WorkloadApiClient


def context_for(client, caller_td, workdir):
    """A TLS server context from the Workload API's current X.509 context."""
    x509 = client.fetch_x509_context()
    svid = x509.default_svid
    chain, key = os.path.join(workdir, "svid.pem"), os.path.join(workdir, "svid.key")
    svid.save(chain, key, Encoding.PEM)
    held = sorted(str(b.trust_domain) for b in x509.x509_bundle_set.bundles)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    bundle = x509.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(caller_td))
    if bundle is not None:
        pem = "".join(
            cert.public_bytes(Encoding.PEM).decode() for cert in bundle.x509_authorities
        )
        ctx.load_verify_locations(cadata=pem)
    # without the caller's bundle the context trusts nothing: every handshake fails
    return ctx, str(svid.spiffe_id), held


def peer_id(conn):
    uris = [v for k, v in conn.getpeercert().get("subjectAltName", ()) if k == "URI"]
    return uris[0] if len(uris) == 1 else None


def main():
    sock_path, port, caller_td = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workdir = tempfile.mkdtemp()
    listener = socket.create_server(("0.0.0.0", port))
    print(f"listening on {port}", flush=True)
    with WorkloadApiClient(socket_path=f"unix://{sock_path}") as client:
        while True:
            raw, addr = listener.accept()
            raw.settimeout(10)
            try:
                ctx, own_id, held = context_for(client, caller_td, workdir)
                with ctx.wrap_socket(raw, server_side=True) as conn:
                    caller = peer_id(conn)
                    if caller is None or not caller.startswith(f"spiffe://{caller_td}/"):
                        print(f"refused {addr}: peer {caller}", flush=True)
                        continue
                    conn.recv(65536)
                    body = json.dumps(
                        {"caller": caller, "server": own_id, "bundles": held}
                    ).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                        + body
                    )
                    print(f"served {caller}", flush=True)
            except (OSError, ssl.SSLError) as e:
                print(f"handshake with {addr} failed: {e}", flush=True)
            finally:
                raw.close()


if __name__ == "__main__":
    main()
