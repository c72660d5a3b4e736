//! meshward's node daemon: the agent (identities) and, next, the node proxy (the
//! data path). The binary's CLI lives in `main.rs`.

pub mod agent;
pub mod readiness;
