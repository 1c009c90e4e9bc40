//! The BERT encoder of all-MiniLM-L6-v2, written for this one model and for small inputs:
//! a store embeds one 40-token note, a search one short query.
//!
//! - No padding: the texts of a batch are laid end to end, one row per token, so every
//!   matrix product runs over real tokens only, and attention runs text by text.
//! - The query, key and value projections are one product (384 → 1152).
//! - Products use weights packed at load ([`crate::matmul`]), split by output columns
//!   between the pool's threads; the loops between them (layer norm, GELU, softmax,
//!   attention) are compiled for the CPU's widest vectors.
//! - GELU uses a rational approximation of erf (Eigen's and XLA's, a few ulp in f32) and
//!   softmax a polynomial `exp` (Cephes'), both branch-free so they vectorise, instead of
//!   scalar libm calls.
//!
//! The products run on bfloat16 weights and token states with f32 sums
//! ([`Precision::Bf16`]); everything else is f32. Loaded with [`Precision::Fp32`], the same
//! encoder is the plain-f32 reference, which matches sentence-transformers' published values
//! to 1e-4; the served vectors stay within a cosine of 0.999 of it (`tests/minilm.rs`).

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::matmul::{Kernel, Linear, Precision, multiversion};

/// The fields of `config.json` the encoder uses.
#[derive(Debug, Deserialize)]
pub(crate) struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    #[serde(default = "gelu_name")]
    hidden_act: String,
}

fn gelu_name() -> String {
    "gelu".to_owned()
}

/// One text's tokens, as the tokenizer gives them.
pub(crate) struct Tokens<'a> {
    pub(crate) ids: &'a [u32],
    pub(crate) types: &'a [u32],
}

pub(crate) struct Encoder {
    hidden: usize,
    heads: usize,
    vocabulary: usize,
    positions: usize,
    type_count: usize,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    kernel: Kernel,
}

struct Layer {
    query_key_value: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// Reads the tensors of a safetensors file by name.
struct Tensors<'a> {
    file: SafeTensors<'a>,
    /// `""` or `"bert."`, whichever the file's names start with.
    prefix: &'static str,
}

impl Tensors<'_> {
    /// The f32 tensor `name` of exactly `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .file
            .tensor(&full)
            .map_err(|e| format!("tensor {full}: {e}"))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor {full} is {:?}, expected F32", view.dtype()));
        }
        if view.shape() != shape {
            return Err(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                view.shape()
            ));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn linear(
        &self,
        name: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        Ok((
            self.get(&format!("{name}.weight"), &[outputs, inputs])?,
            self.get(&format!("{name}.bias"), &[outputs])?,
        ))
    }

    fn norm(&self, name: &str, size: usize, eps: f32) -> Result<Norm, String> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[size])?,
            bias: self.get(&format!("{name}.bias"), &[size])?,
            eps,
        })
    }
}

fn prepared(
    (weight, bias): (Vec<f32>, Vec<f32>),
    outputs: usize,
    inputs: usize,
    precision: Precision,
) -> Result<Linear, String> {
    Linear::new(weight, bias, outputs, inputs, precision).map_err(|e| e.to_string())
}

impl Encoder {
    /// Builds the encoder from the weights file's bytes. Errors say which tensor or field
    /// is wrong.
    pub(crate) fn load(
        weights: &[u8],
        config: &Config,
        precision: Precision,
    ) -> Result<Self, String> {
        if config.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only gelu)",
                config.hidden_act
            ));
        }
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            ));
        }
        let file = SafeTensors::deserialize(weights).map_err(|e| e.to_string())?;
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else {
            "bert."
        };
        let tensors = Tensors { file, prefix };
        let eps = config.layer_norm_eps as f32;
        let (intermediate_size, mut layers) = (config.intermediate_size, Vec::new());
        for i in 0..config.num_hidden_layers {
            let name = |part: &str| format!("encoder.layer.{i}.{part}");
            let (query, query_bias) =
                tensors.linear(&name("attention.self.query"), hidden, hidden)?;
            let (key, key_bias) = tensors.linear(&name("attention.self.key"), hidden, hidden)?;
            let (value, value_bias) =
                tensors.linear(&name("attention.self.value"), hidden, hidden)?;
            let query_key_value = (
                [query, key, value].concat(),
                [query_bias, key_bias, value_bias].concat(),
            );
            let linear = |part: &str, outputs: usize, inputs: usize| -> Result<Linear, String> {
                prepared(
                    tensors.linear(&name(part), outputs, inputs)?,
                    outputs,
                    inputs,
                    precision,
                )
            };
            layers.push(Layer {
                query_key_value: prepared(query_key_value, 3 * hidden, hidden, precision)?,
                attention_output: linear("attention.output.dense", hidden, hidden)?,
                attention_norm: tensors.norm(&name("attention.output.LayerNorm"), hidden, eps)?,
                intermediate: linear("intermediate.dense", intermediate_size, hidden)?,
                output: linear("output.dense", hidden, intermediate_size)?,
                output_norm: tensors.norm(&name("output.LayerNorm"), hidden, eps)?,
            });
        }
        Ok(Self {
            hidden,
            heads,
            vocabulary: config.vocab_size,
            positions: config.max_position_embeddings,
            type_count: config.type_vocab_size,
            word_embeddings: tensors.get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            position_embeddings: tensors.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, hidden],
            )?,
            token_type_embeddings: tensors.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, hidden],
            )?,
            embeddings_norm: tensors.norm("embeddings.LayerNorm", hidden, eps)?,
            layers,
            kernel: Kernel::best(),
        })
    }

    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The longest text, in tokens, the position embeddings allow.
    pub(crate) fn max_tokens(&self) -> usize {
        self.positions
    }

    /// Sentence vectors (mean of each text's token states, unit length) for `texts`, in
    /// order. Run inside the rayon pool that should share the work.
    pub(crate) fn embed(&self, texts: &[Tokens]) -> Result<Vec<Vec<f32>>, String> {
        let hidden = self.hidden;
        let lengths: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let rows: usize = lengths.iter().sum();
        let mut states = vec![0f32; rows * hidden];
        let mut row = 0;
        for text in texts {
            if text.ids.len() != text.types.len() || text.ids.len() > self.positions {
                return Err(format!(
                    "a text of {} tokens ({} types): at most {} tokens fit",
                    text.ids.len(),
                    text.types.len(),
                    self.positions
                ));
            }
            for (position, (&id, &kind)) in text.ids.iter().zip(text.types).enumerate() {
                let (id, kind) = (id as usize, kind as usize);
                if id >= self.vocabulary || kind >= self.type_count {
                    return Err(format!(
                        "token {id} of type {kind} is outside the vocabulary"
                    ));
                }
                let out = &mut states[row * hidden..(row + 1) * hidden];
                let word = &self.word_embeddings[id * hidden..(id + 1) * hidden];
                let place = &self.position_embeddings[position * hidden..(position + 1) * hidden];
                let kind = &self.token_type_embeddings[kind * hidden..(kind + 1) * hidden];
                for (((out, w), p), t) in out.iter_mut().zip(word).zip(place).zip(kind) {
                    *out = w + t + p;
                }
                row += 1;
            }
        }
        self.embeddings_norm.apply(self.kernel, &mut states, hidden);
        let mut buffers = Buffers::new(
            rows,
            hidden,
            self.layers.first().map_or(0, |l| l.intermediate.outputs()),
        );
        for layer in &self.layers {
            layer.forward(self, &mut states, &lengths, &mut buffers);
        }
        let mut vectors = Vec::with_capacity(texts.len());
        let mut start = 0;
        for &length in &lengths {
            let mut mean = vec![0f32; hidden];
            for token in states[start * hidden..(start + length) * hidden].chunks_exact(hidden) {
                for (m, x) in mean.iter_mut().zip(token) {
                    *m += x;
                }
            }
            let count = length.max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= count);
            let norm = mean.iter().map(|m| m * m).sum::<f32>().sqrt().max(1e-12);
            mean.iter_mut().for_each(|m| *m /= norm);
            vectors.push(mean);
            start += length;
        }
        Ok(vectors)
    }
}

/// Scratch space for one pass, sized once for all layers.
struct Buffers {
    query_key_value: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    expanded: Vec<f32>,
}

impl Buffers {
    fn new(rows: usize, hidden: usize, intermediate: usize) -> Self {
        Self {
            query_key_value: vec![0.0; rows * 3 * hidden],
            context: vec![0.0; rows * hidden],
            projected: vec![0.0; rows * hidden],
            expanded: vec![0.0; rows * intermediate],
        }
    }
}

impl Layer {
    fn forward(
        &self,
        encoder: &Encoder,
        states: &mut [f32],
        lengths: &[usize],
        buffers: &mut Buffers,
    ) {
        let kernel = encoder.kernel;
        let (hidden, heads) = (encoder.hidden, encoder.heads);
        let rows = states.len() / hidden;
        self.query_key_value
            .apply(kernel, states, rows, &mut buffers.query_key_value);
        attention(
            kernel,
            &buffers.query_key_value,
            lengths,
            heads,
            hidden,
            &mut buffers.context,
        );
        self.attention_output
            .apply(kernel, &buffers.context, rows, &mut buffers.projected);
        add(kernel, states, &buffers.projected);
        self.attention_norm.apply(kernel, states, hidden);
        self.intermediate
            .apply(kernel, states, rows, &mut buffers.expanded);
        gelu(kernel, &mut buffers.expanded);
        self.output
            .apply(kernel, &buffers.expanded, rows, &mut buffers.projected);
        add(kernel, states, &buffers.projected);
        self.output_norm.apply(kernel, states, hidden);
    }
}

impl Norm {
    fn apply(&self, kernel: Kernel, rows: &mut [f32], width: usize) {
        layer_norm(kernel, rows, width, &self.weight, &self.bias, self.eps);
    }
}

/// Self-attention of every text over its own tokens, heads shared out between the pool's
/// threads. `qkv` holds each token's query, key and value side by side (`3 × hidden` per
/// row); `context` receives `hidden` per row.
fn attention(
    kernel: Kernel,
    qkv: &[f32],
    lengths: &[usize],
    heads: usize,
    hidden: usize,
    context: &mut [f32],
) {
    use rayon::prelude::*;
    let head_size = hidden / heads;
    // Each task owns one head of one text: the columns `head × head_size ..` of that
    // text's rows. Gathered per task and written back after, so no two tasks share a slice.
    let mut tasks = Vec::with_capacity(lengths.len() * heads);
    let mut start = 0;
    for &length in lengths {
        for head in 0..heads {
            tasks.push((start, length, head));
        }
        start += length;
    }
    let parallel = rayon::current_num_threads() > 1 && start * start * hidden >= 1 << 16;
    let run = |&(start, length, head): &(usize, usize, usize)| {
        let mut out = vec![0f32; length * head_size];
        let mut scratch = vec![0f32; attention_scratch(length, head_size)];
        attend_head(
            kernel,
            &qkv[start * 3 * hidden..(start + length) * 3 * hidden],
            head * head_size,
            head_size,
            hidden,
            &mut scratch,
            &mut out,
        );
        out
    };
    let results: Vec<Vec<f32>> = if parallel {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    for ((start, length, head), out) in tasks.iter().zip(results) {
        for (token, values) in out.chunks_exact(head_size).enumerate().take(*length) {
            let at = (start + token) * hidden + head * head_size;
            context[at..at + head_size].copy_from_slice(values);
        }
    }
}

multiversion! {
    /// One head of one text: for each token, softmax(q·kᵀ/√d) over the text's tokens, then
    /// the weighted sum of their values into `out` (`tokens × head_size`). `scratch` holds
    /// [`attention_scratch`] floats.
    fn attend_head(
        qkv: &[f32],
        column: usize,
        head_size: usize,
        hidden: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let width = 3 * hidden;
        let tokens = out.len() / head_size;
        let padded = tokens.div_ceil(LANES) * LANES;
        let scale = 1.0 / (head_size as f32).sqrt();
        // Keys transposed (one row per dimension, one column per token, padded with zeros to
        // whole blocks), so a block of scores is `head_size` multiply-adds kept in registers.
        let (keys, scores) = scratch.split_at_mut(head_size * padded);
        let scores = &mut scores[..padded];
        keys.fill(0.0);
        for (token, row) in qkv.chunks_exact(width).take(tokens).enumerate() {
            let key = &row[hidden + column..][..head_size];
            for (d, &k) in key.iter().enumerate() {
                keys[d * padded + token] = k;
            }
        }
        for (token, out) in out.chunks_exact_mut(head_size).enumerate() {
            let query = &qkv[token * width + column..][..head_size];
            for (block, scores) in scores.chunks_exact_mut(LANES).enumerate() {
                let mut sums = [0f32; LANES];
                for (&q, keys) in query.iter().zip(keys.chunks_exact(padded)) {
                    let keys = &keys[block * LANES..][..LANES];
                    for (sum, &k) in sums.iter_mut().zip(keys) {
                        *sum = q.mul_add(k, *sum);
                    }
                }
                for (score, sum) in scores.iter_mut().zip(sums) {
                    *score = sum * scale;
                }
            }
            let scores = &mut scores[..tokens];
            let largest = lane_max(scores);
            for score in scores.iter_mut() {
                *score = exp(*score - largest);
            }
            let inverse = 1.0 / lane_sum(scores);
            let values = qkv.chunks_exact(width).map(|row| &row[2 * hidden + column..][..head_size]);
            if let Ok(out) = <&mut [f32; 32]>::try_from(&mut *out) {
                // MiniLM's heads: 32 sums held in registers across the tokens.
                let mut sums = [0f32; 32];
                for (&weight, value) in scores.iter().zip(values) {
                    for (sum, &v) in sums.iter_mut().zip(value) {
                        *sum = weight.mul_add(v, *sum);
                    }
                }
                for (o, sum) in out.iter_mut().zip(sums) {
                    *o = sum * inverse;
                }
            } else {
                out.fill(0.0);
                for (&weight, value) in scores.iter().zip(values) {
                    for (o, &v) in out.iter_mut().zip(value) {
                        *o = weight.mul_add(v, *o);
                    }
                }
                out.iter_mut().for_each(|o| *o *= inverse);
            }
        }
    }
}

/// Scores computed at once in [`attend_head`].
const LANES: usize = 16;

/// The scratch [`attend_head`] needs for a text of `tokens`.
fn attention_scratch(tokens: usize, head_size: usize) -> usize {
    tokens.div_ceil(LANES) * LANES * (head_size + 1)
}

multiversion! {
    fn add(into: &mut [f32], from: &[f32]) {
        for (x, y) in into.iter_mut().zip(from) {
            *x += y;
        }
    }
}

multiversion! {
    fn layer_norm(rows: &mut [f32], width: usize, weight: &[f32], bias: &[f32], eps: f32) {
        for row in rows.chunks_exact_mut(width) {
            let mean = lane_sum(row) / width as f32;
            let variance = lane_squares(row, mean) / width as f32;
            let scale = 1.0 / (variance + eps).sqrt();
            for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *x = (*x - mean) * scale * w + b;
            }
        }
    }
}

/// A sum in sixteen independent lanes, so it vectorises without reordering a single sum.
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest value (not NaN-aware: scores are finite), in lanes like [`lane_sum`].
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let mut largest = f32::NEG_INFINITY;
    for &v in chunks.remainder() {
        largest = if v > largest { v } else { largest };
    }
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes
        .iter()
        .fold(largest, |a, &b| if b > a { b } else { a })
}

/// Σ (x − mean)², in lanes like [`lane_sum`].
#[inline(always)]
fn lane_squares(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

multiversion! {
    /// GELU with erf, in place: `x/2 · (1 + erf(x/√2))`.
    fn gelu(values: &mut [f32]) {
        for x in values.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// erf as a rational function of x (Eigen's `generic_fast_erf_float`): odd numerator of
/// degree 13 over an even denominator of degree 8, on x clamped to [-4, 4], where erf is
/// ±1 to f32 precision.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    p *= x;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329_3e-3);
    q = x2.mul_add(q, -1.426_473_9e-2);
    p / q
}

/// e^x for x ≤ 0 (softmax after subtracting the largest score), Cephes' `expf`: x is split
/// into n·ln 2 plus r with |r| ≤ ln 2 / 2, a degree-6 polynomial gives e^r, and 2^n goes
/// into the exponent bits. Within 2 ulp; no branches, so it vectorises.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5 × 2^23 rounds to the nearest integer (the default
    // rounding mode) without a call to `roundf`.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2_E + ROUNDER) - ROUNDER;
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = r.mul_add(1.987_569_1e-4, 1.398_199_9e-3);
    p = r.mul_add(p, 8.333_452e-3);
    p = r.mul_add(p, 4.166_579_6e-2);
    p = r.mul_add(p, 1.666_666_5e-1);
    p = r.mul_add(p, 0.5);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // n is an integer in [-126, 0], so the biased exponent n + 127 is in [1, 127]. Added to
    // 2^23 it lands in the low mantissa bits, read without a float-to-int conversion (whose
    // saturating semantics would keep the loop from vectorising).
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xFF;
    let scale = f32::from_bits(biased << 23);
    e_r * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_the_series_to_f32_precision() {
        // erf by its Taylor series in f64, exact enough for |x| <= 3.
        fn reference(x: f64) -> f64 {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        for i in -300..=300 {
            let x = i as f64 / 100.0;
            let error = (f64::from(erf(x as f32)) - reference(x)).abs();
            assert!(error < 2e-6, "erf({x}) off by {error}");
        }
        assert!((erf(10.0) - 1.0).abs() < 1e-6);
        assert!((erf(-10.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn exp_is_within_a_few_ulp_over_the_softmax_range() {
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let expected = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - expected) / expected).abs() < 3e-7,
                "exp({x}) = {got}, expected {expected}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37, "far below the range it clamps");
    }

    #[test]
    fn every_kernel_computes_the_same_layer_norm_and_attention() {
        let width = 64;
        let values: Vec<f32> = (0..width * 3)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let weight: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 100.0).collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 50.0).collect();
        let mut expected = values.clone();
        for row in expected.chunks_exact_mut(width) {
            let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / width as f64;
            let variance = row
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / width as f64;
            for ((x, w), b) in row.iter_mut().zip(&weight).zip(&bias) {
                *x = ((f64::from(*x) - mean) / (variance + 1e-12).sqrt()) as f32 * w + b;
            }
        }
        for kernel in Kernel::available() {
            let mut rows = values.clone();
            layer_norm(kernel, &mut rows, width, &weight, &bias, 1e-12);
            for (got, want) in rows.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-4, "{kernel:?}: {got} vs {want}");
            }
        }
        // Attention of 5 tokens, one head of 8 over a hidden size of 16.
        let (tokens, hidden, head_size) = (5, 16, 8);
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let reference = {
            let mut out = vec![0f64; tokens * head_size];
            for t in 0..tokens {
                let q = &qkv[t * 3 * hidden + head_size..][..head_size];
                let scores: Vec<f64> = (0..tokens)
                    .map(|o| {
                        let k = &qkv[o * 3 * hidden + hidden + head_size..][..head_size];
                        q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>()
                            / (head_size as f64).sqrt()
                    })
                    .collect();
                let largest = scores.iter().cloned().fold(f64::MIN, f64::max);
                let total: f64 = scores.iter().map(|s| (s - largest).exp()).sum();
                for (o, s) in scores.iter().enumerate() {
                    let v = &qkv[o * 3 * hidden + 2 * hidden + head_size..][..head_size];
                    for d in 0..head_size {
                        out[t * head_size + d] += (s - largest).exp() / total * f64::from(v[d]);
                    }
                }
            }
            out
        };
        for kernel in Kernel::available() {
            let mut out = vec![0f32; tokens * head_size];
            let mut scratch = vec![0f32; attention_scratch(tokens, head_size)];
            attend_head(
                kernel,
                &qkv,
                head_size,
                head_size,
                hidden,
                &mut scratch,
                &mut out,
            );
            for (got, want) in out.iter().zip(&reference) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-5,
                    "{kernel:?}: {got} vs {want}"
                );
            }
        }
    }
}
