//! The seam through which an embedding model plugs into the engine.
//!
//! The engine (`haivemind-store`) holds an `Option<Arc<dyn Embedder>>`; with none, search is
//! full-text only and says so. The binary wires a concrete model in.

/// Why a text could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model could not run on this input.
    #[error("embedding failed: {0}")]
    Inference(String),
}

/// Turns texts into unit-length vectors that can be compared by dot product.
pub trait Embedder: Send + Sync {
    /// Identifies the model and its settings. Vectors are stored with it, and vectors of
    /// different ids are never compared.
    fn model_id(&self) -> &str;
    /// The length of every vector this model returns.
    fn dimensions(&self) -> usize;
    /// Embeds each text, in order. Every returned vector has [`Self::dimensions`] entries and
    /// an L2 norm of 1.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// How many tokens the model's tokenizer makes of `text` (without special tokens and
    /// without truncation), when it can say; for budgets such as a context pack's.
    fn count_tokens(&self, _text: &str) -> Option<usize> {
        None
    }
}

/// A token count for `text` when no tokenizer is at hand: about four bytes a token, the
/// usual rate for English under subword tokenizers, rounded up.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}
