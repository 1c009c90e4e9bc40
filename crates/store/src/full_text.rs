//! Turning a person's query into an FTS5 match expression.
//!
//! FTS5 has its own query syntax, in which `"`, `*`, `-`, `:` and words like `NOT` mean
//! something. A user's query is never passed through: it is split into words, each word is
//! quoted, and the words are joined with OR so that BM25 ranks documents by how many of the
//! rarer words they share. Common English words are dropped when other words remain: they
//! match nearly every document, cost time, and add nothing to the ranking.

const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me",
    "my", "no", "not", "of", "on", "or", "our", "she", "so", "some", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "to", "up", "us", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// The longest query, in words, that is matched; more words add cost and little recall.
const MAX_QUERY_WORDS: usize = 32;

/// The words of `text` as FTS5 sees them (lower-cased runs of letters and digits).
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The FTS5 match expression for a user query, or `None` when it has no words at all.
pub(crate) fn match_expression(query: &str) -> Option<String> {
    let all = words(query);
    if all.is_empty() {
        return None;
    }
    let meaningful: Vec<&String> = all
        .iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect();
    let chosen: Vec<&String> = if meaningful.is_empty() {
        all.iter().collect()
    } else {
        meaningful
    };
    let mut unique: Vec<&String> = Vec::new();
    for word in chosen {
        if !unique.contains(&word) && unique.len() < MAX_QUERY_WORDS {
            unique.push(word);
        }
    }
    Some(
        unique
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_words_and_drops_syntax() {
        assert_eq!(
            match_expression("NOT nginx* \"502\" -proxy:2").as_deref(),
            Some("\"nginx\" OR \"502\" OR \"proxy\" OR \"2\"")
        );
    }

    #[test]
    fn drops_stop_words_unless_nothing_else_is_left() {
        assert_eq!(
            match_expression("how do I fix the heap").as_deref(),
            Some("\"fix\" OR \"heap\"")
        );
        assert_eq!(
            match_expression("to be or not").as_deref(),
            Some("\"to\" OR \"be\" OR \"or\" OR \"not\"")
        );
    }

    #[test]
    fn has_nothing_to_match_without_words() {
        assert_eq!(match_expression(" ?! "), None);
    }

    #[test]
    fn keeps_non_ascii_words() {
        assert_eq!(
            match_expression("Größe café").as_deref(),
            Some("\"größe\" OR \"café\"")
        );
    }
}
