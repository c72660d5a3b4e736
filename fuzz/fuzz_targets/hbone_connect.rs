//! The HBONE CONNECT request an inbound tunnel acts on (proxy/src/datapath/
//! inbound.rs): the destination its authority names and the source its
//! `forwarded` header claims.
//!
//! Input, as text lines: the method, the request target (the `:authority` of a
//! CONNECT), then `name: value` headers, as the HTTP/2 server would hand them
//! over (anything `http` refuses to build is skipped, as h2 refuses it).
//!
//! Asserts: a destination only for a CONNECT, and it is the authority exactly
//! (the text of the address parses back to it); a claimed source only when a
//! `forwarded` header has a `for=` pair that names it.
#![no_main]

use std::net::SocketAddr;

use http::Request;
use libfuzzer_sys::fuzz_target;
use meshward_proxy::datapath::fuzzing::{connect_destination, forwarded_for};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split("\r\n");
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return;
        };
        builder = builder.header(name, value.trim_start());
    }
    let Ok(request) = builder.body(()) else {
        return;
    };

    if let Some(destination) = connect_destination(&request) {
        assert_eq!(request.method(), http::Method::CONNECT);
        let authority = request
            .uri()
            .authority()
            .expect("a destination comes from the authority");
        assert_eq!(
            authority.as_str().parse::<SocketAddr>().ok(),
            Some(destination)
        );
        assert_eq!(
            destination.to_string().parse::<SocketAddr>().ok(),
            Some(destination)
        );
    } else if request.method() == http::Method::CONNECT {
        let parsed = request
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
        assert!(parsed.is_none(), "a CONNECT to {parsed:?} refused");
    }

    if let Some(source) = forwarded_for(&request) {
        let value = request
            .headers()
            .get("forwarded")
            .expect("a claim comes from the header");
        let value = value
            .to_str()
            .expect("a claim is text")
            .to_ascii_lowercase();
        assert!(value.contains("for="), "{value:?} claims {source}");
    }
});
