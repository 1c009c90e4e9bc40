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
}
