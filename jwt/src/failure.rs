//! Why a token was refused. The `Display` text is Envoy's (jwt_verify_lib), the
//! body of the `401` a client gets; the variant says more in the log.

/// A token refused: the request gets `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtFailure {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    Malformed,
    /// `none`, HMAC, or an algorithm this build cannot verify.
    #[error("Jwt verification fails")]
    UnsupportedAlgorithm(String),
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    /// The keys of the rule could not be had (fetch failed, bundle missing): never
    /// any other key instead.
    #[error("Jwks remote fetch is failed")]
    KeysUnavailable(String),
    #[error("Jwt verification fails")]
    Signature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    Audience,
    /// A claim the rule needs is missing or malformed (`exp` not a number, a
    /// JWT-SVID without `sub` or `aud`, ...).
    #[error("Jwt verification fails")]
    Claims(String),
    /// More than one distinct token at the locations the rules read: policy
    /// would judge one identity while the pod could read another's.
    #[error("Jwt is not unique: the request carries multiple tokens")]
    MultipleTokens,
}

impl JwtFailure {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm(_) => "algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::NoMatchingKey => "no_matching_key",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Audience => "audience",
            Self::Claims(_) => "claims",
            Self::MultipleTokens => "multiple_tokens",
        }
    }
}

/// A JWKS that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JWKS: {0}")]
pub struct InvalidJwks(pub String);
