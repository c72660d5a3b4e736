//! meshward-policy: Istio AuthorizationPolicy and RequestAuthentication for meshward.
//!
//! Load `security.istio.io/v1` and `v1beta1` AuthorizationPolicy YAML
//! ([`load_paths`], [`load_str`]), compile it under [`EngineOptions`] into a
//! [`PolicySet`] indexed by namespace and labels, then decide ([`PolicySet::evaluate`])
//! or explain ([`PolicySet::explain`]) one [`Request`] to one [`Workload`].
//!
//! Pure: no sockets, no clocks, no global state. The semantics, field by field, are
//! those of `shared/reference/istio-authz.md`; the one deliberate difference is the
//! default mode ([`DefaultMode::Deny`]).

mod authn;
mod compile;
mod condition_key;
mod decision;
mod engine;
mod error;
mod explain;
mod load;
mod model;
mod normalize;
mod options;
mod request;
mod spec;
mod template;
mod value;

pub use authn::{DEFAULT_JWKS_TIMEOUT, JwtRule, KeySource, RequestAuthentication, TokenLocation};
pub use compile::MAX_VALUE_BYTES;
pub use decision::{DecidingPolicy, Decision, Effect, Reason, ShadowMatch};
pub use engine::{CustomCheck, PolicySet, PolicySummary};
pub use error::{Notice, PolicyError};
pub use explain::{Explanation, PolicyExplanation, RuleExplanation};
pub use load::{LoadReport, MAX_SOURCE_BYTES, load_objects, load_paths, load_str};
pub use meshward_spiffe::{SpiffeId, TrustDomain};
pub use model::{Action, Origin, PolicyId};
pub use normalize::{
    InvalidTarget, NormalizedTarget, PathNormalization, normalize_path, normalize_target,
};
pub use options::{DefaultMode, EngineOptions};
pub use request::{
    Authority, BadRequest, HttpRequest, JwtClaims, PseudoHeader, Request, Workload,
    reads_as_one_header_value,
};
