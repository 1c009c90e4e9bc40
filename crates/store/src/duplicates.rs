//! Finding memories that say the same thing.
//!
//! Until vectors are available, similarity is the Jaccard index of the two memories' word
//! sets. Candidate pairs come from an inverted index over each memory's rarest words; a
//! word shared by more than [`MAX_BUCKET`] memories is not rare and proposes no pairs, and a
//! pair is compared once, under its first shared key word. So the work is bounded by
//! memories x key words x bucket size, not by the square of the memories.

use std::collections::{BTreeSet, HashMap};

use haivemind_core::{InvalidInput, MemoryId};

use crate::full_text::words;
use crate::search::{MemoryFilter, Selection};
use crate::{Store, StoreError};

/// The most memories one duplicate scan reads.
const MAX_SCANNED: usize = 20_000;
/// How many of a memory's rarest words are used to find its candidates.
const KEY_WORDS: usize = 4;
/// A key word held by more memories than this proposes no candidate pairs.
const MAX_BUCKET: usize = 200;

/// A request to find duplicates.
#[derive(Debug, Clone)]
pub struct DuplicateQuery {
    /// Similarity from 0 to 1 at or above which two memories count as duplicates.
    pub threshold: f64,
    /// Only memories matching this filter are compared.
    pub filter: MemoryFilter,
    /// The most groups to return.
    pub limit: usize,
}

/// Memories that are duplicates of each other.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateGroup {
    /// The oldest memory of the group: the natural one to keep.
    pub keep: MemoryId,
    /// The others.
    pub duplicates: Vec<MemoryId>,
    /// The lowest pairwise similarity that joined the group.
    pub similarity: f64,
}

impl Store {
    /// Groups live memories whose word sets overlap at least `threshold`.
    pub fn find_duplicates(
        &self,
        query: &DuplicateQuery,
    ) -> Result<Vec<DuplicateGroup>, StoreError> {
        if !(query.threshold > 0.0 && query.threshold <= 1.0) {
            return Err(
                InvalidInput::new("threshold", "must be greater than 0 and at most 1").into(),
            );
        }
        query.filter.check(self)?;
        let memories = self.list_where(&Selection {
            order: "m.created_at, m.rowid",
            limit: MAX_SCANNED,
            ..Selection::new("m.deleted_at IS NULL", &query.filter)
        })?;
        let word_sets: Vec<BTreeSet<String>> = memories
            .iter()
            .map(|m| words(&m.content).into_iter().collect())
            .collect();
        let mut frequency: HashMap<&str, usize> = HashMap::new();
        for set in &word_sets {
            for word in set {
                *frequency.entry(word.as_str()).or_default() += 1;
            }
        }
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut keys_of: Vec<Vec<&str>> = Vec::with_capacity(word_sets.len());
        for (i, set) in word_sets.iter().enumerate() {
            let mut rarest: Vec<&str> = set.iter().map(String::as_str).collect();
            rarest.sort_by_key(|w| (frequency[w], *w));
            rarest.truncate(KEY_WORDS);
            for word in &rarest {
                by_key.entry(word).or_default().push(i);
            }
            keys_of.push(rarest);
        }
        // Union-find over indices, joining pairs at or above the threshold.
        let mut parent: Vec<usize> = (0..memories.len()).collect();
        let mut weakest: Vec<f64> = vec![1.0; memories.len()];
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (key, members) in &by_key {
            if members.len() > MAX_BUCKET {
                continue;
            }
            for (a_pos, &a) in members.iter().enumerate() {
                for &b in &members[a_pos + 1..] {
                    // Compare each pair once: under the first key word the two share.
                    let first_shared = keys_of[a].iter().find(|k| {
                        keys_of[b].contains(k)
                            && by_key.get(**k).is_some_and(|m| m.len() <= MAX_BUCKET)
                    });
                    if first_shared != Some(key) {
                        continue;
                    }
                    let similarity = jaccard(&word_sets[a], &word_sets[b]);
                    if similarity >= query.threshold {
                        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                        if ra != rb {
                            let (low, high) = (ra.min(rb), ra.max(rb));
                            parent[high] = low;
                            weakest[low] = weakest[low].min(weakest[high]).min(similarity);
                        }
                    }
                }
            }
        }
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in 0..memories.len() {
            let r = root(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
        let mut out: Vec<DuplicateGroup> = groups
            .into_iter()
            .filter(|(_, members)| members.len() > 1)
            .map(|(r, mut members)| {
                members.sort_unstable();
                DuplicateGroup {
                    keep: memories[members[0]].id,
                    duplicates: members[1..].iter().map(|&i| memories[i].id).collect(),
                    similarity: weakest[r],
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.duplicates
                .len()
                .cmp(&a.duplicates.len())
                .then(a.keep.cmp(&b.keep))
        });
        out.truncate(query.limit);
        Ok(out)
    }
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(b).count();
    shared as f64 / (a.len() + b.len() - shared) as f64
}
