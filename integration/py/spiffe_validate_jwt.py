"""py-spiffe (PyPI `spiffe`) asks its Workload API to validate a JWT-SVID, as a
workload receiving one would. Prints one JSON object: the validated SPIFFE ID
and audience, or the error. Usage: spiffe_validate_jwt.py SOCKET AUDIENCE TOKEN
"""
import json
import sys

from spiffe import WorkloadApiClient


def main() -> None:
    socket, audience, token = sys.argv[1], sys.argv[2], sys.argv[3]
    with WorkloadApiClient(socket_path=f"unix://{socket}") as client:
        try:
            svid = client.validate_jwt_svid(token, audience)
        except Exception as e:  # the API's refusal, as the workload sees it
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return
    print(json.dumps({"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience)}))


if __name__ == "__main__":
    main()
