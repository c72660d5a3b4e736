//! Applying an authorizer's header changes, as Envoy does.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::check::{HeaderChange, HeaderMode};

/// Headers a provider may never write: identity and routing are the proxy's.
const PROTECTED: [&str; 2] = ["x-forwarded-client-cert", "host"];

/// Applies an authorizer's header changes to `headers`.
pub fn apply(headers: &mut HeaderMap, changes: &[HeaderChange], remove: &[String]) {
    for name in remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            if !PROTECTED.contains(&name.as_str()) {
                headers.remove(&name);
            }
        }
    }
    for change in changes {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(change.name.as_bytes()),
            HeaderValue::from_str(&change.value),
        ) else {
            continue;
        };
        if PROTECTED.contains(&name.as_str()) {
            continue;
        }
        match change.mode {
            HeaderMode::Overwrite => {
                headers.insert(name, value);
            }
            HeaderMode::Append => {
                headers.append(name, value);
            }
            HeaderMode::AddIfAbsent => {
                if !headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            HeaderMode::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, value: &str, mode: HeaderMode) -> HeaderChange {
        HeaderChange {
            name: name.into(),
            value: value.into(),
            mode,
        }
    }

    #[test]
    fn header_changes_follow_envoy_and_never_touch_identity() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("1"));
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("By=me"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        apply(
            &mut headers,
            &[
                change("x-a", "2", HeaderMode::Overwrite),
                change("x-b", "2", HeaderMode::Append),
                change("x-b", "3", HeaderMode::AddIfAbsent),
                change("x-c", "1", HeaderMode::OverwriteIfExists),
                change("x-d", "1", HeaderMode::AddIfAbsent),
                change(
                    "x-forwarded-client-cert",
                    "URI=spiffe://evil",
                    HeaderMode::Overwrite,
                ),
            ],
            &["authorization".into(), "x-forwarded-client-cert".into()],
        );
        assert_eq!(headers["x-a"], "2");
        let b: Vec<_> = headers.get_all("x-b").iter().collect();
        assert_eq!(b, ["1", "2"]);
        assert!(headers.get("x-c").is_none());
        assert_eq!(headers["x-d"], "1");
        assert_eq!(headers["x-forwarded-client-cert"], "By=me");
        assert!(headers.get("authorization").is_none());
    }
}
