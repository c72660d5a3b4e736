//! The node's path under `/spire/agent/`, SPIRE's `agent_path_template`: the same
//! Go-template placeholders (`{{ .AccountID }}` ...), read once at startup so a
//! typo is a configuration error, not a refused node.

use super::document::IdentityDocument;

/// SPIRE's default: `aws_iid/<account>/<region>/<instance>`.
pub const DEFAULT_AGENT_PATH_TEMPLATE: &str =
    "{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PluginName,
    AccountId,
    Region,
    AvailabilityZone,
    InstanceId,
    ImageId,
    InstanceType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(Vec<Part>);

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            let close = rest[open..]
                .find("}}")
                .ok_or_else(|| format!("{template:?}: a {{{{ without its }}}}"))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let name = rest[open + 2..open + close].trim();
            parts.push(Part::Field(field(name).ok_or_else(|| {
                format!(
                    "{template:?}: unknown field {name:?} (known: .PluginName, .AccountID, \
                     .Region, .AvailabilityZone, .InstanceID, .ImageID, .InstanceType)"
                )
            })?));
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let text_ok = parts.iter().all(|p| match p {
            Part::Text(t) => t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.')),
            Part::Field(_) => true,
        });
        if !text_ok || template.starts_with('/') || template.ends_with('/') || parts.is_empty() {
            return Err(format!(
                "{template:?}: must be a relative path of letters, digits, -_. and fields"
            ));
        }
        if !parts.contains(&Part::Field(Field::InstanceId)) {
            // one ID for many instances would let each evict or impersonate another
            return Err(format!("{template:?}: must contain {{{{ .InstanceID }}}}"));
        }
        Ok(Self(parts))
    }

    /// The path for `doc` (its fields were checked to be path-safe).
    pub fn render(&self, doc: &IdentityDocument) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Field(Field::PluginName) => meshward_api::attestation::AWS_IID,
                Part::Field(Field::AccountId) => &doc.account_id,
                Part::Field(Field::Region) => &doc.region,
                Part::Field(Field::AvailabilityZone) => &doc.availability_zone,
                Part::Field(Field::InstanceId) => &doc.instance_id,
                Part::Field(Field::ImageId) => &doc.image_id,
                Part::Field(Field::InstanceType) => &doc.instance_type,
            })
            .collect()
    }
}

fn field(name: &str) -> Option<Field> {
    Some(match name {
        ".PluginName" => Field::PluginName,
        ".AccountID" => Field::AccountId,
        ".Region" => Field::Region,
        ".AvailabilityZone" => Field::AvailabilityZone,
        ".InstanceID" => Field::InstanceId,
        ".ImageID" => Field::ImageId,
        ".InstanceType" => Field::InstanceType,
        _ => return None,
    })
}
