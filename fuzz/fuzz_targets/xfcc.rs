//! `x-forwarded-client-cert` (proxy/src/xfcc.rs): what a client sent is removed,
//! meshward's element set from the verified peer.
//!
//! Input, as lines: the peer's SPIFFE ID (as its certificate's URI SAN says), the
//! pod's, then XFCC values the client sent; the whole input stands for the
//! peer's leaf certificate (hashed).
//!
//! Asserts: exactly one XFCC is left with a verified peer and none without one;
//! read back as Envoy's XFCC grammar (`;`-separated `key=value`, `,` between
//! elements) it is one element with exactly `By` = the pod, `Hash` = 64 lower-case
//! hex digits, `Subject=""`, `URI` = the peer: no ID can inject a key or an element.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meshward_proxy::xfcc::{self, PeerCertificate, XFCC};
use meshward_spiffe::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let (Some(peer), Some(server)) = (lines.next(), lines.next()) else {
        return;
    };
    let (Ok(peer), Ok(server)) = (SpiffeId::parse(peer), SpiffeId::parse(server)) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for sent in lines {
        if let Ok(value) = HeaderValue::from_str(sent) {
            headers.append(XFCC, value);
        }
    }
    let mut plaintext = headers.clone();
    xfcc::set(&mut plaintext, xfcc::value(Some(&server), None));
    assert!(plaintext.get(&XFCC).is_none(), "a client's XFCC survived");

    let hash = xfcc::leaf_hash(data);
    let certificate = PeerCertificate {
        spiffe_id: &peer,
        leaf_hash: &hash,
    };
    xfcc::set(&mut headers, xfcc::value(Some(&server), Some(&certificate)));
    let values: Vec<_> = headers.get_all(&XFCC).iter().collect();
    assert_eq!(values.len(), 1, "{values:?}");
    let value = values[0].to_str().expect("XFCC is text");
    assert!(!value.contains(','), "more than one element: {value}");
    let pairs: Vec<(&str, &str)> = value
        .split(';')
        .map(|pair| pair.split_once('=').expect("key=value"))
        .collect();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["By", "Hash", "Subject", "URI"], "{value}");
    assert_eq!(pairs[0].1, server.as_str());
    assert!(
        pairs[1].1.len() == 64
            && pairs[1]
                .1
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(pairs[2].1, "\"\"");
    assert_eq!(pairs[3].1, peer.as_str());
});
