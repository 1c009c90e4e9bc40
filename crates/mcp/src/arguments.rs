//! Parsing tool arguments into typed inputs, with errors that name the field.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ToolError;

/// Parses a tool's arguments. Messages look like `limit: invalid type: string "ten",
/// expected u32`, `content: is required` or `catgory: unknown field, expected one of ...`.
pub(crate) fn parse<T: DeserializeOwned>(
    arguments: Option<Map<String, Value>>,
) -> Result<T, ToolError> {
    let value = Value::Object(arguments.unwrap_or_default());
    serde_path_to_error::deserialize::<_, T>(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let (field, rule) = if let Some(rest) = message.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default();
            (join(&path, name), "is required".to_string())
        } else if let Some(rest) = message.strip_prefix("unknown field `") {
            let mut parts = rest.splitn(2, "`, ");
            let name = parts.next().unwrap_or_default();
            let expected = parts.next().unwrap_or("");
            // The path already ends at the unknown field.
            let field = if path == "." { name.to_string() } else { path };
            (field, format!("unknown field, {expected}"))
        } else {
            (path, message)
        };
        // Both may repeat the caller's input (an unknown key, a wrong value): bounded.
        ToolError::InvalidArguments {
            field: haivemind_core::error::cut(&field, 128),
            rule: haivemind_core::error::cut(&rule, 512),
        }
    })
}

fn join(path: &str, name: &str) -> String {
    if path == "." || path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A `category` argument, with the seed's names read as ours: its API defaulted to
/// `general`, which is our `global` (haivemind_core::memory::SEED_CATEGORIES).
pub(crate) fn category<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let named: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(named.map(haivemind_core::memory::from_seed_category))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Args {
        #[allow(dead_code)]
        content: String,
        #[serde(default)]
        #[allow(dead_code)]
        limit: u32,
    }

    fn err(json: Value) -> String {
        let Value::Object(map) = json else { panic!() };
        parse::<Args>(Some(map)).unwrap_err().to_string()
    }

    #[test]
    fn names_the_missing_wrong_and_unknown_fields() {
        assert_eq!(err(serde_json::json!({})), "content: is required");
        assert!(
            err(serde_json::json!({"content": 5}))
                .starts_with("content: invalid type: integer `5`")
        );
        assert!(
            err(serde_json::json!({"content": "x", "limit": -1}))
                .starts_with("limit: invalid value")
        );
        assert!(
            err(serde_json::json!({"content": "x", "lmit": 1}))
                .starts_with("lmit: unknown field, expected")
        );
    }

    #[test]
    fn a_huge_wrong_value_or_unknown_key_is_not_repeated_in_full() {
        let huge = "v".repeat(100_000);
        assert!(err(serde_json::json!({"content": "x", "limit": huge})).len() < 1_000);
        let mut map = serde_json::Map::new();
        map.insert("content".into(), "x".into());
        map.insert(huge.clone(), 1.into());
        assert!(err(Value::Object(map)).len() < 1_000);
    }

    #[test]
    fn the_seeds_general_category_is_our_global() {
        #[derive(Debug, serde::Deserialize)]
        struct Args {
            #[serde(default, deserialize_with = "super::category")]
            category: Option<String>,
        }
        let read =
            |value: serde_json::Value| parse::<Args>(value.as_object().cloned()).unwrap().category;
        assert_eq!(
            read(serde_json::json!({"category": "general"})).as_deref(),
            Some("global")
        );
        assert_eq!(
            read(serde_json::json!({"category": "runbooks"})).as_deref(),
            Some("runbooks")
        );
        assert_eq!(read(serde_json::json!({})), None);
        assert_eq!(read(serde_json::json!({"category": null})), None);
    }
}
