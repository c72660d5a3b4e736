//! Failed handshakes and connects, explained: a short reason for metrics and a
//! sentence that says what to fix, for the log line an operator reads first.

use std::io;

use rustls::{AlertDescription, CertificateError};

/// `(metric reason, what to check)` for a failed TLS handshake.
pub(crate) fn handshake(error: &io::Error) -> (&'static str, &'static str) {
    if error.kind() == io::ErrorKind::TimedOut {
        return (
            "timeout",
            "the handshake did not finish in time: a loaded or stalled peer, or a middlebox dropping packets",
        );
    }
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return (
            "io",
            "the connection broke during the handshake (the peer closed it, or it is not TLS)",
        );
    };
    match tls {
        rustls::Error::NoCertificatesPresented => (
            "no_client_certificate",
            "the client presented no certificate: the source pod has no identity (check its registration entry or template) or the client is not a meshward node",
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired) => (
            "expired",
            "the peer's certificate has expired: is its node daemon renewing SVIDs (issuer reachable)? are the clocks in sync?",
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => (
            "not_yet_valid",
            "the peer's certificate is not valid yet: check the clocks of both nodes",
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => (
            "unknown_issuer",
            "the peer's certificate does not chain to the bundle of its trust domain: another issuer, or this node's bundle is stale",
        ),
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string().contains("not in any bundle") =>
        {
            (
                "unknown_trust_domain",
                "the peer's trust domain has no bundle here: federate with it (meshward issuer federation create) or check the peer's trust domain",
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string().contains("is not federated with here") =>
        {
            (
                "not_federated",
                "the peer's trust domain is trusted on this node, but this pod's identity does not federate with it: add it to the entry's or template's federatesWith",
            )
        }
        rustls::Error::InvalidCertificate(_) => (
            "invalid_certificate",
            "the peer's certificate is not a valid X509-SVID of a trusted domain (one spiffe:// URI SAN, chain to the bundle)",
        ),
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown,
        ) => (
            "rejected_by_peer",
            "the peer rejected this side's certificate: does it trust this trust domain's bundle, and is the SVID current?",
        ),
        rustls::Error::NoApplicationProtocol => (
            "alpn",
            "the peer does not speak HBONE (ALPN h2): is it a meshward node on port 15008?",
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => (
            "protocol",
            "the peer did not speak TLS 1.3: plaintext sent to the HBONE port, or an old client",
        ),
        _ => ("other", "see the error"),
    }
}

/// What to check when the TCP connect to a peer node's HBONE port fails.
pub(crate) fn connect(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::TimedOut => {
            "no answer from port 15008: a NetworkPolicy or security group may block HBONE, or the node is down"
        }
        io::ErrorKind::ConnectionRefused => {
            "port 15008 refused: is meshward running on the destination's node?"
        }
        _ => "the destination's node is unreachable on port 15008",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn reasons_name_the_fix() {
        let (reason, hint) = handshake(&wrapped(rustls::Error::NoCertificatesPresented));
        assert_eq!(reason, "no_client_certificate");
        assert!(hint.contains("no identity"));
        let (reason, _) = handshake(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert_eq!(reason, "unknown_issuer");
        let (reason, _) = handshake(&io::Error::new(io::ErrorKind::TimedOut, "slow"));
        assert_eq!(reason, "timeout");
        assert!(
            connect(&io::Error::from(io::ErrorKind::ConnectionRefused))
                .contains("meshward running")
        );
    }
}
