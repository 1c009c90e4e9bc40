//! Turning a person's query into FTS5 match expressions.
//!
//! FTS5 has its own query syntax, in which `"`, `*`, `-`, `:` and words like `NOT` mean
//! something. A user's query is never passed through: it is split into words and each word
//! is quoted. Common English words are dropped when other words remain: they match nearly
//! every document, cost time, and add nothing to the ranking.
//!
//! Search ranks in tiers (see `Store::search`): memories holding every word first, then
//! those holding all but one, and so on. [`QueryTerms`] holds the words; [`all_of`],
//! [`at_least`], [`any_of`] and [`but_not`] build each tier's expression.

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

/// The meaningful words of a query, ready to combine into FTS5 expressions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryTerms {
    /// Lower-cased words, without duplicates, in query order.
    pub(crate) words: Vec<String>,
}

impl QueryTerms {
    /// The terms of `query`, or `None` when it has no words at all.
    pub(crate) fn parse(query: &str) -> Option<Self> {
        let expression = match_expression(query)?;
        Some(Self {
            words: expression
                .split(" OR ")
                .map(|quoted| quoted.trim_matches('"').to_string())
                .collect(),
        })
    }
}

fn quoted(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| format!("\"{w}\"")).collect()
}

/// Matches memories holding every one of `words`.
pub(crate) fn all_of(words: &[&str]) -> String {
    quoted(words).join(" AND ")
}

/// Matches memories holding any of `words`.
pub(crate) fn any_of(words: &[&str]) -> String {
    quoted(words).join(" OR ")
}

/// The most words for which "at least k of them" tiers are built; the number of word
/// combinations grows fast beyond it.
pub(crate) const MAX_TIERED_WORDS: usize = 6;

/// Matches memories holding at least `k` of `words` (1 <= k <= words.len()).
pub(crate) fn at_least(k: usize, words: &[&str]) -> String {
    if k <= 1 {
        return any_of(words);
    }
    if k >= words.len() {
        return all_of(words);
    }
    let mut groups = Vec::new();
    let mut chosen = Vec::with_capacity(k);
    fn combine<'a>(
        words: &[&'a str],
        k: usize,
        start: usize,
        chosen: &mut Vec<&'a str>,
        groups: &mut Vec<String>,
    ) {
        if chosen.len() == k {
            groups.push(format!("({})", all_of(chosen)));
            return;
        }
        for i in start..words.len() {
            chosen.push(words[i]);
            combine(words, k, i + 1, chosen, groups);
            chosen.pop();
        }
    }
    combine(words, k, 0, &mut chosen, &mut groups);
    groups.join(" OR ")
}

/// Matches memories that `tier` matches and `better` does not.
pub(crate) fn but_not(tier: &str, better: &str) -> String {
    format!("({tier}) NOT ({better})")
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
    fn tiers_combine_the_same_words() {
        let terms = QueryTerms::parse("heap on elastic3").unwrap();
        assert_eq!(terms.words, ["heap", "elastic3"]);
        assert_eq!(all_of(&["heap", "elastic3"]), "\"heap\" AND \"elastic3\"");
        assert_eq!(any_of(&["heap", "elastic3"]), "\"heap\" OR \"elastic3\"");
        assert_eq!(
            at_least(2, &["a", "b", "c"]),
            "(\"a\" AND \"b\") OR (\"a\" AND \"c\") OR (\"b\" AND \"c\")"
        );
        assert_eq!(at_least(3, &["a", "b", "c"]), all_of(&["a", "b", "c"]));
        assert_eq!(at_least(1, &["a", "b"]), any_of(&["a", "b"]));
        assert_eq!(but_not("\"a\"", "\"b\""), "(\"a\") NOT (\"b\")");
    }

    #[test]
    fn keeps_non_ascii_words() {
        assert_eq!(
            match_expression("Größe café").as_deref(),
            Some("\"größe\" OR \"café\"")
        );
    }
}
