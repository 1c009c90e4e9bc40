//! The real model, from the folder `scripts/fetch-model` fills (`$HAIVEMIND_MODEL_DIR`, or
//! `~/.local/share/haivemind/models/all-MiniLM-L6-v2`). `scripts/test` fetches it first.

use std::path::PathBuf;
use std::sync::OnceLock;

use haivemind_core::Embedder;
use haivemind_embed::{DIMENSIONS, LoadError, MODEL_ID, MiniLm, REFERENCE_MODEL_ID};

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

/// The plain-f32 encoder the served (bfloat16) vectors are checked against.
fn reference() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| MiniLm::load_fp32_reference(&model_dir()).expect("the model loads"))
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
fn the_reference_matches_the_published_embeddings() {
    assert_eq!(reference().model_id(), REFERENCE_MODEL_ID);
    let vectors = reference()
        .embed(&["This is an example sentence", "Each sentence is converted"])
        .unwrap();
    assert_eq!(vectors[0].len(), DIMENSIONS);
    assert_close(&vectors[0][..8], &EXAMPLE, 1e-4);
    assert_close(&vectors[1][..8], &EACH, 1e-4);
}

/// Texts of every kind a memory holds: prose, logs, code, numbers, other scripts, emoji,
/// one word, and one past the 256-token cut.
fn varied_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "This is an example sentence",
        "ES heap blew up",
        "Elasticsearch ran out of JVM memory on node es-data-3 after the reindex; raised -Xmx to 16g",
        "2026-11-30T04:12:55Z nginx[812]: upstream timed out (110: Connection timed out) while reading response header from upstream",
        "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{v:?}\"); }",
        "SELECT count(*) FROM memories WHERE deleted_at IS NULL AND user_id = $1",
        "Die Datenbank ist nach dem Update nicht mehr gestartet, das Log zeigt einen Checksum-Fehler.",
        "データベースのバックアップは毎晩3時に実行されます",
        "deploy finished 🚀 all 12 pods healthy ✅",
        "ok",
        "Caroline went to the LGBTQ support group on 7 May 2023 and said it was powerful.",
    ]
    .map(String::from)
    .to_vec();
    texts.push("the quick brown fox jumps over the lazy dog ".repeat(60));
    texts
}

#[test]
fn served_vectors_stay_within_a_cosine_of_0_999_of_the_reference() {
    assert_eq!(model().model_id(), MODEL_ID);
    assert_ne!(MODEL_ID, REFERENCE_MODEL_ID);
    let texts = varied_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let served = model().embed(&refs).unwrap();
    let exact = reference().embed(&refs).unwrap();
    for ((text, s), e) in texts.iter().zip(&served).zip(&exact) {
        let similarity = cosine(s, e);
        assert!(similarity >= 0.999, "cosine {similarity} for {text:?}");
    }
    // The published values themselves, to the looser tolerance bfloat16 leaves.
    assert_close(&served[0][..8], &EXAMPLE, 5e-3);
}

#[test]
fn a_text_gets_the_same_vector_alone_and_among_others() {
    let long = "a much longer sentence that, in a padded batch, would force every other text to be padded well past its own length";
    let vectors = model()
        .embed(&[
            "Each sentence is converted",
            long,
            "This is an example sentence",
        ])
        .unwrap();
    let alone = model()
        .embed(&["Each sentence is converted", "This is an example sentence"])
        .unwrap();
    assert_close(
        &vectors[0],
        &model().embed(&["Each sentence is converted"]).unwrap()[0],
        1e-6,
    );
    assert_close(&vectors[0], &alone[0], 1e-6);
    assert_close(&vectors[2], &alone[1], 1e-6);
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
    assert!((similarity - 0.755337).abs() < 2e-3, "cosine {similarity}");
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
