//! Durations in configuration files are written as people write them: `24h`,
//! `5m`, `90s`, `1h30m`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// serde `with` form: `#[serde(with = "meshward_config::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration (like 1h, 5m, 90s): {e}"
        ))
    })
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// A duration as a configuration file would write it (`1h 30m`), for messages.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
