//! The real model, from the folder `scripts/fetch-model` fills (`$HAIVEMIND_MODEL_DIR`, or
//! `~/.local/share/haivemind/models/all-MiniLM-L6-v2`). `scripts/test` fetches it first.

use std::path::PathBuf;
use std::sync::OnceLock;

use haivemind_core::Embedder;
use haivemind_embed::{DIMENSIONS, LoadError, MiniLm};

fn model_dir() -> PathBuf {
    std::env::var_os("HAIVEMIND_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local/share/haivemind/models/all-MiniLM-L6-v2")
        })
}

fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        MiniLm::load(&model_dir()).unwrap_or_else(|e| {
            panic!(
                "cannot load the model ({e}); run scripts/fetch-model, or scripts/test which does"
            )
        })
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tolerance, "dimension {i}: {a} vs {e}");
    }
}

// sentence-transformers' published values for this sentence begin 0.0677, 0.0635, 0.0487,
// 0.0793; the rest were computed by an independent numpy forward pass over the same weights.
const EXAMPLE: [f32; 8] = [
    0.067657, 0.063496, 0.048713, 0.079305, 0.037448, 0.002653, 0.039375, -0.007098,
];
const EACH: [f32; 8] = [
    0.086439, 0.102763, 0.005395, 0.002044, -0.009963, 0.025386, 0.049288, -0.030627,
];

#[test]
fn matches_the_published_embedding_of_the_example_sentence() {
    let vectors = model().embed(&["This is an example sentence"]).unwrap();
    assert_eq!(vectors[0].len(), DIMENSIONS);
    assert_close(&vectors[0][..8], &EXAMPLE, 1e-4);
}

#[test]
fn padding_in_a_batch_does_not_change_a_vector() {
    let long = "a much longer sentence that forces every other text in the batch to be padded well past its own length";
    let vectors = model()
        .embed(&[
            "Each sentence is converted",
            long,
            "This is an example sentence",
        ])
        .unwrap();
    assert_close(&vectors[0][..8], &EACH, 1e-4);
    assert_close(&vectors[2][..8], &EXAMPLE, 1e-4);
    let alone = model().embed(&["Each sentence is converted"]).unwrap();
    assert_close(&vectors[0], &alone[0], 1e-5);
}

#[test]
fn vectors_are_unit_length_and_similar_texts_are_close() {
    let vectors = model()
        .embed(&["A man is eating food.", "A man is eating a piece of bread."])
        .unwrap();
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let similarity = cosine(&vectors[0], &vectors[1]);
    assert!((similarity - 0.755337).abs() < 1e-3, "cosine {similarity}");
}

#[test]
fn a_paraphrase_without_shared_words_is_the_nearest() {
    let texts = [
        "ES heap blew up",
        "Elasticsearch ran out of JVM memory",
        "nginx returned 502 on proxy2",
        "the quarterly budget review is on Friday",
    ];
    let vectors = model().embed(&texts).unwrap();
    let to_query: Vec<f32> = vectors[1..]
        .iter()
        .map(|v| cosine(&vectors[0], v))
        .collect();
    assert!(
        to_query[0] > to_query[1] && to_query[0] > to_query[2],
        "{to_query:?}"
    );
}

#[test]
fn many_texts_keep_their_order_across_batches_and_long_texts_are_cut() {
    let texts: Vec<String> = (0..70)
        .map(|i| format!("note number {i} about disk {i}"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = model().embed(&refs).unwrap();
    assert_eq!(vectors.len(), 70);
    let alone = model().embed(&[refs[65]]).unwrap();
    assert_close(&vectors[65], &alone[0], 1e-5);
    let long = "word ".repeat(2000);
    assert_eq!(
        model().embed(&[long.as_str()]).unwrap()[0].len(),
        DIMENSIONS
    );
    assert!(model().embed(&[]).unwrap().is_empty());
}

#[test]
fn a_damaged_weights_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model_dir().join(name), dir.path().join(name)).unwrap();
    }
    let weights = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let error = MiniLm::load(dir.path())
        .err()
        .expect("a damaged file must not load");
    assert!(
        matches!(&error, LoadError::WrongFile { path, .. } if path.ends_with("model.safetensors")),
        "{error}"
    );
}
