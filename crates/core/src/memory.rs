//! The memory model: what one memory holds, and the rules its fields obey.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::InvalidInput;

/// Categories the seed (the Python system) used, and ours for each: agents and scripts
/// written for it keep working. Its API's default category was `general`.
pub const SEED_CATEGORIES: &[(&str, &str)] = &[("general", "global")];

/// Our name for a category an agent written for the seed may send.
pub fn from_seed_category(category: String) -> String {
    SEED_CATEGORIES
        .iter()
        .find(|(seed, _)| *seed == category)
        .map_or(category, |(_, ours)| (*ours).to_string())
}

/// The categories every node knows. `memory.categories` in the config may add more.
pub const BUILTIN_CATEGORIES: &[&str] = &[
    "project",
    "conversation",
    "agent",
    "global",
    "infrastructure",
    "incidents",
    "deployments",
    "monitoring",
    "runbooks",
    "security",
];

/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// The most tags one memory may carry.
pub const MAX_TAGS: usize = 64;
/// The longest user id, project name or agent id, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The longest deletion reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// The default limit of a memory's metadata, as compact JSON, in bytes
/// (`memory.max_metadata_bytes`).
pub const DEFAULT_MAX_METADATA_BYTES: usize = 64 * 1024;

/// A memory's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryId(pub Uuid);

impl MemoryId {
    /// A new id for a memory created now.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the id given in input `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        Uuid::parse_str(text.trim()).map(Self).map_err(|_| {
            InvalidInput::new(
                field,
                format!("\"{}\" is not a UUID", crate::error::excerpt(text)),
            )
        })
    }
}

impl fmt::Display for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as it is written on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the value given in input `field`.
            pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(InvalidInput::new(field, format!(
                        "unknown value \"{}\", expected one of {}",
                        crate::error::excerpt(text),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;
            fn from_str(text: &str) -> Result<Self, InvalidInput> {
                Self::parse($field, text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Who may see a memory, and so how far it replicates.
    Scope, "scope", {
        /// Stays on the machine that wrote it.
        MachineLocal => "machine-local",
        /// Stays on the machine, visible within its project.
        ProjectLocal => "project-local",
        /// Shared with the fleet, within its project. The default.
        ProjectShared => "project-shared",
        /// Shared with the fleet, for one user across projects.
        UserGlobal => "user-global",
        /// Shared with the whole team's fleet.
        TeamGlobal => "team-global",
        /// Never leaves the machine.
        Private => "private",
    }
);

impl Scope {
    /// Whether memories of this scope may be sent to other machines at all.
    pub fn may_leave_machine(self) -> bool {
        matches!(
            self,
            Scope::ProjectShared | Scope::UserGlobal | Scope::TeamGlobal
        )
    }
}

wire_enum!(
    /// How sensitive a memory's content is.
    Confidentiality, "confidentiality_level", {
        /// Ordinary knowledge. The default.
        Normal => "normal",
        /// Internal to the team; replicates, shown to any token.
        Internal => "internal",
        /// Never leaves this machine (and, once HTTP tokens exist, is never shown to a
        /// readonly token).
        Confidential => "confidential",
        /// Personal data: as `confidential`, and erased by GDPR requests.
        Pii => "pii",
    }
);

impl Confidentiality {
    /// Whether memories at this level may be sent to other machines.
    pub fn may_leave_machine(self) -> bool {
        matches!(self, Confidentiality::Normal | Confidentiality::Internal)
    }
}

/// When and why a memory was soft-deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    /// When, in epoch milliseconds.
    pub at_ms: i64,
    /// The reason given, if any.
    pub reason: Option<String>,
    /// The machine that deleted it.
    pub by_machine: String,
}

/// One memory, as the engine stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Its id.
    pub id: MemoryId,
    /// The text, never empty.
    pub content: String,
    /// One of the configured categories.
    pub category: String,
    /// Free text about where it came from.
    pub context: Option<String>,
    /// Tags, in the order given, without duplicates.
    pub tags: Vec<String>,
    /// The caller's JSON object, kept exactly as given.
    pub metadata: Map<String, Value>,
    /// The user it belongs to (`"default"` unless given).
    pub user_id: String,
    /// The project it belongs to, if any.
    pub project: Option<String>,
    /// The machine that wrote it.
    pub machine_id: String,
    /// The agent that wrote it, if known.
    pub agent_id: Option<String>,
    /// Who may see it.
    pub scope: Scope,
    /// How sensitive it is.
    pub confidentiality: Confidentiality,
    /// Creation time, epoch milliseconds.
    pub created_at_ms: i64,
    /// Last change, epoch milliseconds.
    pub updated_at_ms: i64,
    /// 1 when created, one more for every update.
    pub version: u64,
    /// Set while it is soft-deleted.
    pub deletion: Option<Deletion>,
}

/// The rules a memory's fields obey on this node, from `memory.*` in the config.
#[derive(Debug, Clone)]
pub struct MemoryRules {
    /// The largest content, in bytes.
    pub max_content_bytes: usize,
    /// Every accepted category: the built-in ones plus the configured extras.
    pub categories: Vec<String>,
    /// The largest metadata object, as compact JSON, in bytes.
    pub max_metadata_bytes: usize,
}

impl Default for MemoryRules {
    fn default() -> Self {
        Self {
            max_content_bytes: 64 * 1024,
            categories: BUILTIN_CATEGORIES.iter().map(|c| c.to_string()).collect(),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

impl MemoryRules {
    /// Checks a memory's content.
    pub fn check_content(&self, content: &str) -> Result<(), InvalidInput> {
        if content.trim().is_empty() {
            return Err(InvalidInput::new("content", "must not be empty"));
        }
        if content.len() > self.max_content_bytes {
            return Err(InvalidInput::new(
                "content",
                format!(
                    "is {} bytes, more than the limit of {} (memory.max_content_bytes)",
                    content.len(),
                    self.max_content_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks a memory's context: free text, at most as long as content may be.
    pub fn check_context(&self, context: &str) -> Result<(), InvalidInput> {
        if context.len() > self.max_content_bytes {
            return Err(InvalidInput::new(
                "context",
                format!(
                    "is {} bytes, more than the limit of {} (memory.max_content_bytes)",
                    context.len(),
                    self.max_content_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks a category against the configured list.
    pub fn check_category(&self, category: &str) -> Result<(), InvalidInput> {
        if self.categories.iter().any(|c| c == category) {
            Ok(())
        } else {
            Err(InvalidInput::new(
                "category",
                format!(
                    "unknown value \"{}\", expected one of {}",
                    crate::error::excerpt(category),
                    self.categories.join(", ")
                ),
            ))
        }
    }
}

impl MemoryRules {
    /// Checks a metadata object: at most `max_metadata_bytes` as compact JSON.
    pub fn check_metadata(&self, metadata: &Map<String, Value>) -> Result<(), InvalidInput> {
        let size = json_size(metadata);
        if size > self.max_metadata_bytes {
            return Err(InvalidInput::new(
                "metadata",
                format!(
                    "is {size} bytes of JSON, more than the limit of {} (memory.max_metadata_bytes)",
                    self.max_metadata_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The field rules every memory obeys, however it arrives: written here, imported from
    /// a file, or replicated from a peer. Returns the tags normalised.
    #[allow(clippy::too_many_arguments)]
    fn check_fields(
        &self,
        content: &str,
        category: &str,
        context: Option<&str>,
        tags: &[String],
        metadata: &Map<String, Value>,
        user_id: &str,
        project: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<String>, InvalidInput> {
        self.check_content(content)?;
        self.check_category(category)?;
        check_name("user_id", user_id)?;
        if let Some(project) = project {
            check_name("project", project)?;
        }
        if let Some(agent) = agent_id {
            check_name("agent_id", agent)?;
        }
        if let Some(context) = context {
            self.check_context(context)?;
        }
        self.check_metadata(metadata)?;
        normalize_tags(tags)
    }

    /// Checks a whole memory that did not come through this node's own write path (a
    /// peer's replicated record): the same rules as a new memory, plus the fields only a
    /// stored memory has. Tags must already be normalised, so every node stores the same.
    pub fn check_memory(&self, memory: &Memory) -> Result<(), InvalidInput> {
        let tags = self.check_fields(
            &memory.content,
            &memory.category,
            memory.context.as_deref(),
            &memory.tags,
            &memory.metadata,
            &memory.user_id,
            memory.project.as_deref(),
            memory.agent_id.as_deref(),
        )?;
        if tags != memory.tags {
            return Err(InvalidInput::new(
                "tags",
                "must be trimmed and without duplicates",
            ));
        }
        check_name("machine_id", &memory.machine_id)?;
        if let Some(reason) = memory.deletion.as_ref().and_then(|d| d.reason.as_deref()) {
            check_reason("deletion_reason", reason)?;
        }
        Ok(())
    }
}

/// The size of a JSON value written compactly, without building the string: for limits on
/// JSON that arrives from outside.
pub fn json_size(value: &impl serde::Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and JSON values always serialise.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Checks a deletion reason (`field` names it): free text of at most [`MAX_REASON_BYTES`].
pub fn check_reason(field: &str, reason: &str) -> Result<(), InvalidInput> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(InvalidInput::new(
            field,
            format!(
                "is {} bytes, more than the limit of {MAX_REASON_BYTES}",
                reason.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a list of tags and returns it without duplicates, in first-seen order.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, InvalidInput> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidInput::new(
            "tags",
            format!("has {} tags, more than the limit of {MAX_TAGS}", tags.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim();
        if tag.is_empty() {
            return Err(InvalidInput::new(format!("tags[{i}]"), "must not be empty"));
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return Err(InvalidInput::new(
                format!("tags[{i}]"),
                format!("longer than {MAX_TAG_CHARS} characters"),
            ));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

/// Checks a short name-like field (user id, project, agent id): not blank, not huge.
pub fn check_name(field: &str, value: &str) -> Result<(), InvalidInput> {
    if value.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(InvalidInput::new(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A memory to create, as a caller gives it. The engine validates it against [`MemoryRules`].
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// The text.
    pub content: String,
    /// The category; `global` unless given.
    pub category: String,
    /// Where it came from.
    pub context: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The caller's JSON object.
    pub metadata: Map<String, Value>,
    /// The owning user; `default` unless given.
    pub user_id: String,
    /// The project.
    pub project: Option<String>,
    /// The writing agent.
    pub agent_id: Option<String>,
    /// Who may see it; `project-shared` unless given.
    pub scope: Scope,
    /// How sensitive it is; `normal` unless given.
    pub confidentiality: Confidentiality,
}

impl NewMemory {
    /// A memory with `content` and every other field at its default.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            category: "global".into(),
            context: None,
            tags: Vec::new(),
            metadata: Map::new(),
            user_id: "default".into(),
            project: None,
            agent_id: None,
            scope: Scope::ProjectShared,
            confidentiality: Confidentiality::Normal,
        }
    }

    /// Validates every field against `rules`, normalising tags.
    pub fn validate(&mut self, rules: &MemoryRules) -> Result<(), InvalidInput> {
        self.tags = rules.check_fields(
            &self.content,
            &self.category,
            self.context.as_deref(),
            &self.tags,
            &self.metadata,
            &self.user_id,
            self.project.as_deref(),
            self.agent_id.as_deref(),
        )?;
        Ok(())
    }
}

/// A change to a memory: each `Some` field replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct MemoryPatch {
    /// New text.
    pub content: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New context; `Some(None)` clears it.
    pub context: Option<Option<String>>,
    /// New tags, replacing the old list.
    pub tags: Option<Vec<String>>,
    /// New metadata, replacing the old object.
    pub metadata: Option<Map<String, Value>>,
    /// New project; `Some(None)` clears it.
    pub project: Option<Option<String>>,
    /// New scope.
    pub scope: Option<Scope>,
    /// New confidentiality level.
    pub confidentiality: Option<Confidentiality>,
}

impl MemoryPatch {
    /// Whether the patch changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.content.is_none()
            && self.category.is_none()
            && self.context.is_none()
            && self.tags.is_none()
            && self.metadata.is_none()
            && self.project.is_none()
            && self.scope.is_none()
            && self.confidentiality.is_none()
    }

    /// Validates every given field against `rules`, normalising tags.
    pub fn validate(&mut self, rules: &MemoryRules) -> Result<(), InvalidInput> {
        if self.is_empty() {
            return Err(InvalidInput::new(
                "update",
                "names no field to change (content, category, context, tags, metadata, project, scope, confidentiality_level)",
            ));
        }
        if let Some(content) = &self.content {
            rules.check_content(content)?;
        }
        if let Some(category) = &self.category {
            rules.check_category(category)?;
        }
        if let Some(Some(context)) = &self.context {
            rules.check_context(context)?;
        }
        if let Some(Some(project)) = &self.project {
            check_name("project", project)?;
        }
        if let Some(metadata) = &self.metadata {
            rules.check_metadata(metadata)?;
        }
        if let Some(tags) = &self.tags {
            self.tags = Some(normalize_tags(tags)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_seed_export_with_category_general_imports_as_global() {
        let value = serde_json::json!({"content": "from the seed", "category": "general"});
        let memory = json::from_json(&value, "here").unwrap();
        assert_eq!(memory.category, "global");
        let value = serde_json::json!({"content": "ours", "category": "runbooks"});
        assert_eq!(
            json::from_json(&value, "here").unwrap().category,
            "runbooks"
        );
    }

    use super::*;

    #[test]
    fn rejects_empty_and_oversized_content() {
        let rules = MemoryRules {
            max_content_bytes: 10,
            ..MemoryRules::default()
        };
        assert_eq!(
            rules.check_content("  \n").unwrap_err().to_string(),
            "content: must not be empty"
        );
        let err = rules.check_content("eleven byte").unwrap_err();
        assert_eq!(err.field, "content");
        assert!(err.rule.contains("limit of 10"), "{err}");
    }

    #[test]
    fn unknown_category_lists_the_accepted_ones() {
        let err = MemoryRules::default().check_category("infra").unwrap_err();
        assert_eq!(err.field, "category");
        assert!(err.rule.contains("\"infra\""));
        assert!(err.rule.contains("infrastructure"));
    }

    #[test]
    fn scope_and_confidentiality_parse_their_wire_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse("scope", scope.as_str()), Ok(*scope));
        }
        assert!(Scope::parse("scope", "public").is_err());
        assert_eq!("pii".parse::<Confidentiality>(), Ok(Confidentiality::Pii));
        let err = "secret".parse::<Confidentiality>().unwrap_err();
        assert_eq!(err.field, "confidentiality_level");
    }

    #[test]
    fn only_shared_normal_memories_may_leave() {
        assert!(Scope::TeamGlobal.may_leave_machine());
        assert!(!Scope::Private.may_leave_machine());
        assert!(!Scope::MachineLocal.may_leave_machine());
        assert!(!Confidentiality::Pii.may_leave_machine());
        assert!(Confidentiality::Internal.may_leave_machine());
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        let tags = vec![" a ".to_string(), "b".into(), "a".into()];
        assert_eq!(normalize_tags(&tags).unwrap(), vec!["a", "b"]);
        let long = vec!["ok".to_string(), "x".repeat(65)];
        assert_eq!(normalize_tags(&long).unwrap_err().field, "tags[1]");
        assert_eq!(
            normalize_tags(&["".to_string()]).unwrap_err().to_string(),
            "tags[0]: must not be empty"
        );
    }

    #[test]
    fn memory_id_must_be_a_uuid() {
        let err = MemoryId::parse("memory_id", "abc").unwrap_err();
        assert_eq!(err.to_string(), "memory_id: \"abc\" is not a UUID");
        let id = MemoryId::generate();
        assert_eq!(MemoryId::parse("memory_id", &id.to_string()), Ok(id));
    }

    #[test]
    fn metadata_and_reasons_are_bounded_and_named() {
        let rules = MemoryRules {
            max_metadata_bytes: 100,
            ..MemoryRules::default()
        };
        let mut new = NewMemory::new("text");
        new.metadata
            .insert("k".into(), Value::String("x".repeat(200)));
        let err = new.validate(&rules).unwrap_err();
        assert_eq!(err.field, "metadata");
        assert!(err.rule.contains("memory.max_metadata_bytes"), "{err}");
        let mut patch = MemoryPatch {
            metadata: Some(new.metadata.clone()),
            ..MemoryPatch::default()
        };
        assert_eq!(patch.validate(&rules).unwrap_err().field, "metadata");
        assert!(check_reason("reason", &"r".repeat(MAX_REASON_BYTES)).is_ok());
        assert_eq!(
            check_reason("reason", &"r".repeat(MAX_REASON_BYTES + 1))
                .unwrap_err()
                .field,
            "reason"
        );
    }

    #[test]
    fn a_whole_memory_obeys_the_rules_of_a_new_one() {
        let rules = MemoryRules::default();
        let good = json::from_json(
            &serde_json::json!({"id": MemoryId::generate().to_string(), "content": "c", "tags": ["a"]}),
            "m",
        )
        .unwrap();
        assert!(rules.check_memory(&good).is_ok());
        let broken = |change: &dyn Fn(&mut Memory)| {
            let mut memory = good.clone();
            change(&mut memory);
            rules.check_memory(&memory).unwrap_err().field
        };
        assert_eq!(broken(&|m| m.content = "x".repeat(70_000)), "content");
        assert_eq!(broken(&|m| m.category = "nonsense".into()), "category");
        assert_eq!(broken(&|m| m.tags = vec!["t".repeat(500)]), "tags[0]");
        assert_eq!(broken(&|m| m.tags = vec!["a".into(), "a".into()]), "tags");
        assert_eq!(broken(&|m| m.user_id = "u".repeat(10_000)), "user_id");
        assert_eq!(broken(&|m| m.machine_id = "m".repeat(300)), "machine_id");
        assert_eq!(
            broken(&|m| {
                m.deletion = Some(Deletion {
                    at_ms: 1,
                    reason: Some("r".repeat(5_000)),
                    by_machine: "m".into(),
                })
            }),
            "deletion_reason"
        );
    }

    #[test]
    fn echoed_input_is_cut_short() {
        let err = MemoryRules::default()
            .check_category(&"c".repeat(100_000))
            .unwrap_err();
        assert!(err.rule.len() < 1_000, "{} bytes", err.rule.len());
        let err = MemoryId::parse("memory_id", &"i".repeat(100_000)).unwrap_err();
        assert!(err.rule.len() < 300, "{} bytes", err.rule.len());
    }

    #[test]
    fn an_empty_patch_is_refused() {
        let err = MemoryPatch::default()
            .validate(&MemoryRules::default())
            .unwrap_err();
        assert_eq!(err.field, "update");
    }
}

/// The canonical JSON form of a memory: every field of the memory model, with `metadata`
/// exactly as given and times in RFC 3339. MCP results, REST bodies, exports and op-log
/// payloads all use this one shape, so a memory reads the same wherever it appears.
pub mod json {
    use serde_json::{Map, Value, json};

    use super::{Confidentiality, Deletion, Memory, MemoryId, Scope};
    use crate::InvalidInput;
    use crate::time_format::{ms_to_rfc3339, parse_rfc3339};

    /// Renders a memory as its canonical JSON object.
    pub fn to_json(memory: &Memory) -> Value {
        json!({
            "id": memory.id.to_string(),
            "content": memory.content,
            "category": memory.category,
            "context": memory.context,
            "tags": memory.tags,
            "metadata": Value::Object(memory.metadata.clone()),
            "user_id": memory.user_id,
            "project": memory.project,
            "machine_id": memory.machine_id,
            "agent_id": memory.agent_id,
            "scope": memory.scope.as_str(),
            "confidentiality_level": memory.confidentiality.as_str(),
            "created_at": ms_to_rfc3339(memory.created_at_ms),
            "updated_at": ms_to_rfc3339(memory.updated_at_ms),
            "version": memory.version,
            "deleted": memory.deletion.is_some(),
            "deleted_at": memory.deletion.as_ref().map(|d| ms_to_rfc3339(d.at_ms)),
            "deletion_reason": memory.deletion.as_ref().and_then(|d| d.reason.clone()),
        })
    }

    fn text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, InvalidInput> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(InvalidInput::new(key, "must be a string")),
        }
    }

    fn required(object: &Map<String, Value>, key: &str) -> Result<String, InvalidInput> {
        text(object, key)?.ok_or_else(|| InvalidInput::new(key, "is required"))
    }

    /// Reads a memory back from its canonical JSON (as written by [`to_json`]). Fields other
    /// than `id` and `content` fall back to their defaults when absent, so hand-written
    /// import files stay short.
    pub fn from_json(value: &Value, default_machine: &str) -> Result<Memory, InvalidInput> {
        let Value::Object(object) = value else {
            return Err(InvalidInput::new("memory", "must be a JSON object"));
        };
        let id = match text(object, "id")? {
            Some(id) => MemoryId::parse("id", &id)?,
            None => MemoryId::generate(),
        };
        let tags = match object.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, tag)| {
                    tag.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| InvalidInput::new(format!("tags[{i}]"), "must be a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(InvalidInput::new("tags", "must be a list of strings")),
        };
        let metadata = match object.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(InvalidInput::new("metadata", "must be a JSON object")),
        };
        let now = crate::time_format::now_ms();
        let created_at_ms = match text(object, "created_at")? {
            Some(at) => parse_rfc3339("created_at", &at)?,
            None => now,
        };
        let updated_at_ms = match text(object, "updated_at")? {
            Some(at) => parse_rfc3339("updated_at", &at)?,
            None => created_at_ms,
        };
        let version = match object.get("version") {
            None | Some(Value::Null) => 1,
            Some(v) => v.as_u64().filter(|v| *v >= 1).ok_or_else(|| {
                InvalidInput::new("version", "must be a whole number of at least 1")
            })?,
        };
        let deletion = match text(object, "deleted_at")? {
            Some(at) => Some(Deletion {
                at_ms: parse_rfc3339("deleted_at", &at)?,
                reason: text(object, "deletion_reason")?,
                by_machine: default_machine.to_string(),
            }),
            None => None,
        };
        Ok(Memory {
            id,
            content: required(object, "content")?,
            category: text(object, "category")?
                .map(super::from_seed_category)
                .unwrap_or_else(|| "global".into()),
            context: text(object, "context")?,
            tags,
            metadata,
            user_id: text(object, "user_id")?.unwrap_or_else(|| "default".into()),
            project: text(object, "project")?,
            machine_id: text(object, "machine_id")?.unwrap_or_else(|| default_machine.into()),
            agent_id: text(object, "agent_id")?,
            scope: match text(object, "scope")? {
                Some(s) => Scope::parse("scope", &s)?,
                None => Scope::ProjectShared,
            },
            confidentiality: match text(object, "confidentiality_level")? {
                Some(s) => Confidentiality::parse("confidentiality_level", &s)?,
                None => Confidentiality::Normal,
            },
            created_at_ms,
            updated_at_ms,
            version,
            deletion,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_every_field_and_nested_metadata() {
            let metadata = serde_json::json!({
                "nested": {"list": [1, 2.5, true, null, "x"], "deep": {"k": -3}},
                "flag": false
            });
            let memory = Memory {
                id: MemoryId::generate(),
                content: "ES heap blew up".into(),
                category: "incidents".into(),
                context: Some("pager".into()),
                tags: vec!["es".into(), "heap".into()],
                metadata: metadata.as_object().unwrap().clone(),
                user_id: "lance".into(),
                project: Some("infra".into()),
                machine_id: "elastic3".into(),
                agent_id: Some("agent-1".into()),
                scope: Scope::TeamGlobal,
                confidentiality: Confidentiality::Internal,
                created_at_ms: 1_790_000_000_000,
                updated_at_ms: 1_790_000_001_000,
                version: 3,
                deletion: None,
            };
            let back = from_json(&to_json(&memory), "other").unwrap();
            assert_eq!(back, memory);
        }

        #[test]
        fn names_the_field_with_the_wrong_type() {
            let err =
                from_json(&serde_json::json!({"content": "x", "tags": [1]}), "m").unwrap_err();
            assert_eq!(err.field, "tags[0]");
            let err = from_json(&serde_json::json!({"tags": []}), "m").unwrap_err();
            assert_eq!(err.to_string(), "content: is required");
        }
    }
}
