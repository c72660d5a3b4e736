"""py-spiffe (PyPI `spiffe`) against meshward's Workload API, as a workload would
use it. Prints one JSON object: the X509-SVID ID, the bundles' trust domains, a
JWT-SVID's ID and its validation by the API. Usage: spiffe_client.py SOCKET AUDIENCE
"""
import json
import sys

from spiffe import WorkloadApiClient


def main() -> None:
    socket, audience = sys.argv[1], sys.argv[2]
    with WorkloadApiClient(socket_path=f"unix://{socket}") as client:
        svid = client.fetch_x509_svid()
        bundles = client.fetch_x509_bundles()
        jwt = client.fetch_jwt_svid(audience={audience})
        validated = client.validate_jwt_svid(jwt.token, audience)
    print(json.dumps({
        "x509_spiffe_id": str(svid.spiffe_id),
        "chain_length": len(svid.cert_chain),
        "bundle_trust_domains": sorted(str(b.trust_domain) for b in bundles.bundles),
        "jwt_spiffe_id": str(jwt.spiffe_id),
        "validated_spiffe_id": str(validated.spiffe_id),
    }))


if __name__ == "__main__":
    main()
