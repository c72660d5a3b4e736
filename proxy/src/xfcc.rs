//! `x-forwarded-client-cert`, as Envoy writes it (SANITIZE_SET): whatever XFCC the
//! client sent is removed, then one element is set from the verified mTLS peer:
//! `By=<our SPIFFE ID>;Hash=<sha256 of the client leaf DER, lower hex>;Subject="";URI=<client SPIFFE ID>`.
//! Requests without a verified peer (plaintext, PERMISSIVE) carry no XFCC at all.

use http::{HeaderMap, HeaderName, HeaderValue};
use meshward_spiffe::SpiffeId;

pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The verified client of a connection.
#[derive(Debug, Clone)]
pub struct PeerCertificate<'a> {
    /// The client's SPIFFE ID (its leaf's URI SAN).
    pub spiffe_id: &'a SpiffeId,
    /// [`leaf_hash`] of the client's leaf certificate: hashed once per
    /// connection, not per request (it was 12% of an HTTP request's instructions).
    pub leaf_hash: &'a str,
}

/// One XFCC element. SPIFFE IDs hold none of `,;="`, so nothing needs quoting
/// but the (always empty) subject, which Envoy always quotes.
pub fn element(server_id: &SpiffeId, peer: &PeerCertificate<'_>) -> String {
    format!(
        "By={server_id};Hash={};Subject=\"\";URI={}",
        peer.leaf_hash, peer.spiffe_id
    )
}

/// The XFCC a request carries to the pod when the peer is verified (and so the
/// pod, `server_id`, has an identity); `None`: no XFCC at all. The same for
/// every request of a stream, so a stream makes it once.
pub fn value(
    server_id: Option<&SpiffeId>,
    peer: Option<&PeerCertificate<'_>>,
) -> Option<HeaderValue> {
    let (server_id, peer) = (server_id?, peer?);
    // a SPIFFE ID and a hex hash are visible ASCII: this cannot fail
    HeaderValue::from_str(&element(server_id, peer)).ok()
}

/// Removes every XFCC the request carried and sets `ours` ([`value`]).
pub fn set(headers: &mut HeaderMap, ours: Option<HeaderValue>) {
    headers.remove(&XFCC);
    if let Some(value) = ours {
        headers.insert(XFCC, value);
    }
}

/// XFCC's `Hash`: the SHA-256 of a leaf certificate's DER, lower hex.
pub fn leaf_hash(leaf_der: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "spiffe://math.example.com/ns/default/sa/curl-spire";
    const SERVER: &str = "spiffe://math.example.com/ns/echoserver/sa/default";

    fn id(text: &str) -> SpiffeId {
        SpiffeId::parse(text).unwrap()
    }

    #[test]
    fn envoy_format_byte_for_byte() {
        // sha256("abc"), the FIPS 180-2 test vector, as the "leaf"
        let client = id(CLIENT);
        let hash = leaf_hash(b"abc");
        let peer = PeerCertificate {
            spiffe_id: &client,
            leaf_hash: &hash,
        };
        assert_eq!(
            element(&id(SERVER), &peer),
            format!(
                "By={SERVER};Hash=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad;Subject=\"\";URI={CLIENT}"
            )
        );
    }

    #[test]
    fn a_client_sent_xfcc_never_survives() {
        let mut headers = HeaderMap::new();
        headers.append(
            XFCC,
            HeaderValue::from_static(
                "By=spiffe://evil/x;URI=spiffe://math.example.com/ns/admin/sa/root",
            ),
        );
        headers.append(XFCC, HeaderValue::from_static("URI=spiffe://evil/y"));
        let (client, server) = (id(CLIENT), id(SERVER));
        let hash = leaf_hash(b"abc");
        let peer = PeerCertificate {
            spiffe_id: &client,
            leaf_hash: &hash,
        };
        set(&mut headers, value(Some(&server), Some(&peer)));
        let values: Vec<_> = headers.get_all(&XFCC).iter().collect();
        assert_eq!(values.len(), 1);
        assert!(
            values[0]
                .to_str()
                .unwrap()
                .ends_with(&format!("URI={CLIENT}"))
        );
        // plaintext: none at all
        set(&mut headers, value(Some(&server), None));
        assert!(headers.get(&XFCC).is_none());
    }
}
