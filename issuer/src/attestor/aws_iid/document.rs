//! The EC2 instance identity document, read strictly from the bytes the
//! signature covers: one JSON object, nothing after it, no key twice (two readers
//! must never see two documents in one), and every field that becomes part of a
//! SPIFFE ID or a selector checked for the characters AWS uses.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::IidError;

/// The fields meshward uses; AWS's others are read past (it adds some now and then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDocument {
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_id: String,
    pub image_id: String,
    pub instance_type: String,
    /// When the instance last started (`pendingTime`): what the age is measured from.
    pub pending_time: OffsetDateTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    account_id: String,
    region: String,
    availability_zone: String,
    instance_id: String,
    image_id: String,
    #[serde(default)]
    instance_type: String,
    pending_time: String,
}

impl IdentityDocument {
    /// Reads `bytes` (the signed content) as one JSON object with unique keys.
    pub fn parse(bytes: &[u8]) -> Result<Self, IidError> {
        // serde_json refuses anything but whitespace after the value
        let object: UniqueKeys = serde_json::from_slice(bytes)
            .map_err(|e| IidError::Malformed(format!("identity document: {e}")))?;
        let raw: Raw =
            serde_json::from_value(serde_json::Value::Object(object.0.into_iter().collect()))
                .map_err(|e| IidError::Malformed(format!("identity document: {e}")))?;
        let pending_time = OffsetDateTime::parse(&raw.pending_time, &Rfc3339).map_err(|e| {
            IidError::Malformed(format!(
                "identity document: pendingTime {:?}: {e}",
                raw.pending_time
            ))
        })?;
        let doc = Self {
            account_id: raw.account_id,
            region: raw.region,
            availability_zone: raw.availability_zone,
            instance_id: raw.instance_id,
            image_id: raw.image_id,
            instance_type: raw.instance_type,
            pending_time,
        };
        doc.check_fields()?;
        Ok(doc)
    }

    fn check_fields(&self) -> Result<(), IidError> {
        let digits = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let id = |s: &str, prefix: &str| {
            s.strip_prefix(prefix)
                .is_some_and(|hex| !hex.is_empty() && hex.len() <= 32 && name(hex))
        };
        let checks = [
            ("accountId", digits(&self.account_id), &self.account_id),
            ("region", name(&self.region), &self.region),
            (
                "availabilityZone",
                name(&self.availability_zone),
                &self.availability_zone,
            ),
            ("instanceId", id(&self.instance_id, "i-"), &self.instance_id),
            ("imageId", id(&self.image_id, "ami-"), &self.image_id),
            (
                "instanceType",
                self.instance_type.len() <= 64
                    && self
                        .instance_type
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
                &self.instance_type,
            ),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((field, _, value)) => Err(IidError::Malformed(format!(
                "identity document: {field} {value:?} is not AWS's form"
            ))),
            None => Ok(()),
        }
    }
}

/// A JSON object whose keys are all distinct (serde_json keeps the last of a
/// duplicate silently).
struct UniqueKeys(BTreeMap<String, serde_json::Value>);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut object = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key {key:?} appears twice")));
            }
            object.insert(key, value);
        }
        Ok(UniqueKeys(object))
    }
}
