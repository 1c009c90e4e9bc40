//! Importing a conversation transcript as memories, one per turn.
//!
//! A line like `Alice: the deploy failed` starts a turn; following lines without a speaker
//! belong to it. A transcript with no speaker lines is split into paragraphs instead. Each
//! piece is stored in the `conversation` category, with the conversation's id, title, turn
//! number and speaker in its metadata, all in one transaction.

use haivemind_core::{InvalidInput, Memory, MemoryId, NewMemory};
use serde_json::{Map, Value, json};

use crate::{Store, StoreError};

/// The largest transcript accepted, in bytes.
pub const MAX_TRANSCRIPT_BYTES: usize = 4 * 1024 * 1024;
/// Paragraphs are merged into pieces of about this many bytes.
const PARAGRAPH_PIECE_BYTES: usize = 1500;

/// A transcript to import.
#[derive(Debug, Clone)]
pub struct ConversationImport {
    /// The whole transcript.
    pub text: String,
    /// A title, kept as each memory's context.
    pub title: Option<String>,
    /// The owner of the memories.
    pub user_id: String,
    /// Tags for every memory; `conversation` is always added.
    pub tags: Vec<String>,
    /// The project, if any.
    pub project: Option<String>,
    /// The importing agent.
    pub agent_id: Option<String>,
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportedConversation {
    /// The id shared by every memory of the conversation (in `metadata.conversation_id`).
    pub conversation_id: String,
    /// The memories, in transcript order.
    pub memories: Vec<Memory>,
}

struct Turn {
    speaker: Option<String>,
    text: String,
}

fn speaker_of(line: &str) -> Option<(&str, &str)> {
    let (speaker, rest) = line.split_once(':')?;
    let speaker = speaker.trim();
    let plausible = !speaker.is_empty()
        && speaker.len() <= 40
        && speaker.chars().next().is_some_and(char::is_alphabetic)
        && speaker
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '\''));
    (plausible && speaker.split_whitespace().count() <= 3 && !rest.starts_with("//"))
        .then_some((speaker, rest.trim()))
}

fn split_turns(text: &str) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    for line in text.lines() {
        if let Some((speaker, rest)) = speaker_of(line) {
            turns.push(Turn {
                speaker: Some(speaker.to_string()),
                text: rest.to_string(),
            });
        } else if let Some(last) = turns.last_mut() {
            if !line.trim().is_empty() {
                last.text.push('\n');
                last.text.push_str(line.trim_end());
            }
        } else if !line.trim().is_empty() {
            turns.push(Turn {
                speaker: None,
                text: line.trim_end().to_string(),
            });
        }
    }
    let with_speakers = turns.iter().filter(|t| t.speaker.is_some()).count();
    if with_speakers >= 2 {
        turns.retain(|t| !t.text.trim().is_empty());
        return turns;
    }
    let mut pieces: Vec<Turn> = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        match pieces.last_mut() {
            Some(last) if last.text.len() + paragraph.len() < PARAGRAPH_PIECE_BYTES => {
                last.text.push_str("\n\n");
                last.text.push_str(paragraph);
            }
            _ => pieces.push(Turn {
                speaker: None,
                text: paragraph.to_string(),
            }),
        }
    }
    pieces
}

/// Cuts `text` into pieces of at most `max` bytes, on character boundaries.
fn cut(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        pieces.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    pieces.push(rest.to_string());
    pieces
}

impl Store {
    /// Stores a transcript as one memory per turn (or paragraph), atomically.
    pub fn import_conversation(
        &self,
        import: ConversationImport,
    ) -> Result<ImportedConversation, StoreError> {
        if import.text.trim().is_empty() {
            return Err(InvalidInput::new("conversation_text", "must not be empty").into());
        }
        if let Some(title) = &import.title {
            haivemind_core::memory::check_name("title", title)?;
        }
        if import.text.len() > MAX_TRANSCRIPT_BYTES {
            return Err(InvalidInput::new(
                "conversation_text",
                format!("longer than {MAX_TRANSCRIPT_BYTES} bytes"),
            )
            .into());
        }
        let conversation_id = MemoryId::generate().to_string();
        let mut tags = import.tags.clone();
        tags.push("conversation".into());
        let max = self.rules.max_content_bytes;
        let mut news = Vec::new();
        for (turn_number, turn) in split_turns(&import.text).into_iter().enumerate() {
            let prefix = turn
                .speaker
                .as_ref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default();
            let body_max = max.saturating_sub(prefix.len()).max(1);
            for (part, piece) in cut(&turn.text, body_max).into_iter().enumerate() {
                let mut metadata = Map::new();
                metadata.insert("conversation_id".into(), json!(conversation_id));
                metadata.insert("turn".into(), json!(turn_number));
                if part > 0 {
                    metadata.insert("part".into(), json!(part));
                }
                if let Some(title) = &import.title {
                    metadata.insert("title".into(), json!(title));
                }
                if let Some(speaker) = &turn.speaker {
                    metadata.insert("speaker".into(), Value::String(speaker.clone()));
                }
                let mut new = NewMemory::new(format!("{prefix}{piece}"));
                new.category = "conversation".into();
                new.context = import.title.clone();
                new.tags = tags.clone();
                new.metadata = metadata;
                new.user_id = import.user_id.clone();
                new.project = import.project.clone();
                new.agent_id = import.agent_id.clone();
                news.push(new);
            }
        }
        let memories = self.create_batch(news)?;
        Ok(ImportedConversation {
            conversation_id,
            memories,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_lines_start_turns_and_continuations_join_them() {
        let turns =
            split_turns("Alice: the deploy failed\nstack trace here\n\nBob: retry it\nAlice: ok");
        let got: Vec<_> = turns
            .iter()
            .map(|t| (t.speaker.as_deref(), t.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("Alice"), "the deploy failed\nstack trace here"),
                (Some("Bob"), "retry it"),
                (Some("Alice"), "ok")
            ]
        );
    }

    #[test]
    fn urls_and_prose_are_not_speakers() {
        assert!(speaker_of("https://example.com/x").is_none());
        assert!(speaker_of("this is a long sentence that has a colon: here").is_none());
    }

    #[test]
    fn text_without_speakers_becomes_paragraph_pieces() {
        let turns = split_turns("first para\n\nsecond para");
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].text, "first para\n\nsecond para");
    }

    #[test]
    fn cutting_respects_character_boundaries() {
        let pieces = cut("ééé", 3);
        assert_eq!(pieces, ["é", "é", "é"]);
    }
}
