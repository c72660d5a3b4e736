//! The policy engine's behaviour, topic by topic, through its public API.
//! One test binary with topic modules keeps link time down.
#![allow(unreachable_pub, clippy::unwrap_used)] // test helpers, shared by topic modules

#[path = "authz/support.rs"]
mod support;

#[path = "authz/actions.rs"]
mod actions;
#[path = "authz/advisories.rs"]
mod advisories;
#[path = "authz/loading.rs"]
mod loading;
#[path = "authz/properties.rs"]
mod properties;
#[path = "authz/request_fields.rs"]
mod request_fields;
#[path = "authz/selection.rs"]
mod selection;
#[path = "authz/source_fields.rs"]
mod source_fields;
#[path = "authz/tcp.rs"]
mod tcp;
