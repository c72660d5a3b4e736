//! The steps of the demo: the zero-trust talk, then the federation act and the
//! JWT act. Each step is what the user changes (a policy file applied or removed,
//! a federation) and the requests whose answers must be what the talk shows.

use std::time::Duration;

/// The talk's policies, the files a user `kubectl apply`s, unchanged: (name, text).
pub(super) const DEFAULT_DENY: (&str, &str) = (
    "01-default-deny",
    include_str!("../../../docker/examples/policies/01-default-deny.yaml"),
);
pub(super) const ALLOW_CURL_SPIRE: (&str, &str) = (
    "02-allow-curl-spire",
    include_str!("../../../docker/examples/policies/02-allow-curl-spire.yaml"),
);
pub(super) const ALLOW_PAYMENT_ONLY: (&str, &str) = (
    "03-allow-payment-only",
    include_str!("../../../docker/examples/policies/03-allow-payment-only.yaml"),
);
pub(super) const ALLOW_PARTNER: (&str, &str) = (
    "04-allow-partner",
    include_str!("../../../docker/examples/policies/04-allow-partner.yaml"),
);
pub(super) const REQUEST_AUTHENTICATION: (&str, &str) = (
    "05-request-authentication",
    include_str!("../../../docker/examples/policies/05-request-authentication.yaml"),
);
pub(super) const ALLOW_JWT_PRINCIPAL: (&str, &str) = (
    "06-allow-jwt-principal",
    include_str!("../../../docker/examples/policies/06-allow-jwt-principal.yaml"),
);
/// The trust domain the policy files name.
pub(crate) const TALK_TRUST_DOMAIN: &str = "math.example.com";
/// The second cluster's trust domain (04-allow-partner.yaml names it).
pub(crate) const PARTNER_TRUST_DOMAIN: &str = "payments.example.org";
/// A policy or federation change reaches the daemons within a few seconds.
pub(super) const SETTLE: Duration = Duration::from_secs(15);

/// What a step must show.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    /// No HTTP answer at all: the connection is refused, for this reason.
    Refused(&'static str),
    /// This status; with `xfcc`, the echoserver saw an XFCC naming the caller.
    Status { code: u16, xfcc: bool },
    /// `401` with this body (Envoy's jwt_authn text) and a `www-authenticate`.
    Unauthorized(&'static str),
}

/// The `Authorization: Bearer` a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    None,
    /// A JWT-SVID the caller fetched from its node for this audience.
    JwtSvid(&'static str),
    /// The same, one character of its signature changed.
    Tampered,
}

pub(super) struct Request {
    pub(super) pod: &'static str,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    /// The pod called (its port 8080).
    pub(super) to: &'static str,
    pub(super) token: Token,
    pub(super) expect: Expect,
}

/// What a step changes before its requests, as the user would.
pub(super) enum Change {
    Apply((&'static str, &'static str)),
    /// The policy a step applied earlier goes.
    Remove((&'static str, &'static str)),
    /// Each cluster's issuer federates with the other; the echoserver's entry
    /// federates with the partner, the partner's payments entry with us.
    Federate,
}

pub(super) struct Step {
    pub(super) title: &'static str,
    pub(super) changes: Vec<Change>,
    pub(super) requests: Vec<Request>,
}

pub(super) const NO_IDENTITY: Expect = Expect::Refused(
    "refused: no identity, no mTLS, and the destination accepts only mTLS (STRICT)",
);
pub(super) const NOT_FEDERATED: Expect = Expect::Refused(
    "refused: the caller's node does not trust the other trust domain for this caller",
);
pub(super) const OK_WITH_XFCC: Expect = Expect::Status {
    code: 200,
    xfcc: true,
};
pub(super) const DENIED: Expect = Expect::Status {
    code: 403,
    xfcc: false,
};

pub(super) fn steps() -> Vec<Step> {
    let get = |pod, path, expect| Request {
        pod,
        method: "GET",
        path,
        to: "echoserver",
        token: Token::None,
        expect,
    };
    let with_token = |token, expect| Request {
        token,
        ..get("curl-spire", "/jwt", expect)
    };
    vec![
        Step {
            title: "a pod without identity is refused",
            changes: vec![],
            requests: vec![get("curl", "/", NO_IDENTITY)],
        },
        Step {
            title: "a pod with identity gets 200, and the echoserver sees who called",
            changes: vec![],
            requests: vec![get("curl-spire", "/", OK_WITH_XFCC)],
        },
        Step {
            title: "default deny for the echoserver namespace",
            changes: vec![Change::Apply(DEFAULT_DENY)],
            requests: vec![get("curl-spire", "/", DENIED)],
        },
        Step {
            title: "ALLOW the caller's SPIFFE identity",
            changes: vec![Change::Apply(ALLOW_CURL_SPIRE)],
            requests: vec![get("curl-spire", "/", OK_WITH_XFCC)],
        },
        Step {
            title: "ALLOW only POST /api/payment",
            changes: vec![
                Change::Remove(ALLOW_CURL_SPIRE),
                Change::Apply(ALLOW_PAYMENT_ONLY),
            ],
            requests: vec![
                Request {
                    method: "POST",
                    path: "/api/payment",
                    ..get("curl-spire", "", OK_WITH_XFCC)
                },
                get("curl-spire", "/list", DENIED),
            ],
        },
        Step {
            title: "a second cluster, trust domain payments.example.org: its workload is refused",
            changes: vec![],
            requests: vec![get("payments", "/", NOT_FEDERATED)],
        },
        Step {
            title: "the clusters federate: the default deny now judges the partner's workload",
            changes: vec![Change::Federate],
            requests: vec![get("payments", "/", DENIED)],
        },
        Step {
            title: "ALLOW the partner's SPIFFE ID: 200, and the echoserver sees it",
            changes: vec![Change::Apply(ALLOW_PARTNER)],
            requests: vec![get("payments", "/", OK_WITH_XFCC)],
        },
        Step {
            title: "curl-spire's entry does not federate with the partner: it cannot reach the partner",
            changes: vec![],
            requests: vec![Request {
                to: "payments",
                ..get("curl-spire", "/", NOT_FEDERATED)
            }],
        },
        Step {
            title: "RequestAuthentication: a JWT-SVID for the echoserver, sent as a Bearer token",
            changes: vec![
                Change::Apply(REQUEST_AUTHENTICATION),
                Change::Apply(ALLOW_JWT_PRINCIPAL),
            ],
            requests: vec![
                with_token(Token::JwtSvid("echoserver"), OK_WITH_XFCC),
                with_token(Token::None, DENIED),
            ],
        },
        Step {
            title: "a token that does not verify is refused before any policy: 401",
            changes: vec![],
            requests: vec![
                with_token(
                    Token::Tampered,
                    Expect::Unauthorized("Jwt verification fails"),
                ),
                with_token(
                    Token::JwtSvid("billing"),
                    Expect::Unauthorized("Audiences in Jwt are not allowed"),
                ),
            ],
        },
    ]
}
