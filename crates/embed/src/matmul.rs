//! The encoder's matrix products: token states (one row per token) times a weight matrix,
//! plus its bias.
//!
//! The products here are short and wide (a 40-token note is 40 rows against 384 × 1536
//! weights), so what costs is reading the weights, not reusing rows. Each weight matrix is
//! rounded to bfloat16 and packed once, at load, as AMX takes it: stripes of [`STRIPE`]
//! outputs, each a run of 32 × 16 tiles (see [`Weights::Packed`]). Token states are
//! rounded to bfloat16 for each product; sums stay f32. Stripes are shared out between the
//! threads of the pool, so each core reads only its part of the weights.
//!
//! [`Kernel`] is chosen once at run time: AMX where the CPU and Linux allow it, else
//! AVX-512 or AVX2 multiply-adds on the same bfloat16 values (the same vectors to within
//! f32 rounding), else plain Rust. Every dispatch re-checks the CPU, so a kernel named on a
//! CPU without its instructions runs the plain loop instead.

use std::ops::Range;

use rayon::prelude::*;

/// Output columns per packed stripe: two AMX tiles, or two AVX-512 registers of f32.
pub(crate) const STRIPE: usize = 32;
/// Inputs per packed block: one AMX tile row of bfloat16.
pub(crate) const BLOCK: usize = 32;
/// Rows of the input kept in cache while every stripe passes over them.
const ROW_BLOCK: usize = 64;
/// Products smaller than this (rows × inputs × outputs) run on the calling thread: below
/// it, handing half to another thread costs more than it saves.
const PARALLEL_FROM: usize = 1 << 18;

/// Which instructions the products (and the encoder's other loops) are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AMX tiles for the products (32 rows × 32 columns per pass), AVX-512 for the rest.
    #[cfg(target_arch = "x86_64")]
    Amx,
    /// AVX-512F: 16 lanes, 8 rows × 32 columns in registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA: 8 lanes, 4 rows × 16 columns in registers.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust, for any CPU.
    Portable,
}

impl Kernel {
    /// The instructions, as a person would name them.
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => "AMX",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "AVX-512",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "AVX2",
            Kernel::Portable => "portable",
        }
    }

    /// The fastest kernel this CPU runs, or the one `HAIVEMIND_EMBED_KERNEL` names (`amx`,
    /// `avx512`, `avx2`, `portable`) when the CPU runs it: for measuring what a machine
    /// without AMX gets. The vectors are the same either way, to within f32 rounding.
    pub(crate) fn best() -> Self {
        let available = Self::available();
        if let Ok(wanted) = std::env::var("HAIVEMIND_EMBED_KERNEL") {
            let named = |k: &&Kernel| k.name().replace('-', "").eq_ignore_ascii_case(&wanted);
            match available.iter().find(named) {
                Some(&kernel) => return kernel,
                None => tracing::warn!(
                    wanted = ?wanted.chars().take(32).collect::<String>(),
                    "HAIVEMIND_EMBED_KERNEL names no kernel this CPU runs; using the fastest"
                ),
            }
        }
        available.into_iter().next().unwrap_or(Self::Portable)
    }

    /// Every kernel this CPU runs, fastest first.
    pub(crate) fn available() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if amx::usable() {
                kernels.push(Self::Amx);
            }
            if avx512_detected() {
                kernels.push(Self::Avx512);
            }
            if avx2_detected() {
                kernels.push(Self::Avx2);
            }
        }
        kernels.push(Self::Portable);
        kernels
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_detected() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_detected() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines `fn $name(kernel: Kernel, args…)` whose body is compiled three times: for
/// AVX-512, for AVX2 with FMA, and for the baseline CPU, so that plain loops (layer norm,
/// GELU, softmax, attention) vectorise as wide as the CPU allows. The CPU is checked at every
/// call (std caches the answer).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name(kernel: $crate::matmul::Kernel, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) { body($($arg),*) }
            match kernel {
                #[cfg(target_arch = "x86_64")]
                $crate::matmul::Kernel::Amx | $crate::matmul::Kernel::Avx512
                    if $crate::matmul::avx512_detected() =>
                {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA, checked just above.
                    unsafe { avx512($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::matmul::Kernel::Amx
                | $crate::matmul::Kernel::Avx512
                | $crate::matmul::Kernel::Avx2
                    if $crate::matmul::avx2_detected() =>
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    unsafe { avx2($($arg),*) }
                }
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// How the weights of the products are held, and so what the vectors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    /// Weights and token states rounded to bfloat16 for each product, sums in f32: what
    /// the model serves with, on every CPU (AMX does exactly this in hardware; the other
    /// kernels do it with f32 multiply-adds), so every machine makes the same vectors.
    Bf16,
    /// Plain f32 throughout, unpacked and unhurried: the reference the bf16 vectors are
    /// checked against.
    Fp32,
}

/// A weight matrix and its bias, ready for [`Linear::apply`].
pub(crate) struct Linear {
    inputs: usize,
    outputs: usize,
    weights: Weights,
    bias: Vec<f32>,
}

enum Weights {
    /// bfloat16 bits, packed as AMX takes its second operand: for each stripe of
    /// [`STRIPE`] outputs, for each block of [`BLOCK`] inputs, two tiles of 16 outputs,
    /// each 16 rows of input pairs × 16 outputs × 2 (`[stripe][block][tile][pair][output][2]`).
    Packed(Vec<u16>),
    /// f32 as stored in the file: `outputs` rows of `inputs`.
    Plain(Vec<f32>),
}

/// Why a weight matrix cannot be packed.
#[derive(Debug, thiserror::Error)]
#[error("a {outputs} × {inputs} weight with a bias of {bias}: {why}")]
pub(crate) struct ShapeError {
    outputs: usize,
    inputs: usize,
    bias: usize,
    why: &'static str,
}

/// bfloat16 bits of `x`, rounded to nearest even. The model's values are finite, but a NaN
/// must stay a NaN (rounding its bits up could carry it into an infinity, or past 2^32).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to bfloat16, as an f32.
#[inline(always)]
fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(to_bf16(x)) << 16)
}

multiversion! {
    fn round_all(input: &[f32], output: &mut [f32]) {
        for (o, &x) in output.iter_mut().zip(input) {
            *o = round_bf16(x);
        }
    }
}

multiversion! {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn bf16_all(input: &[f32], output: &mut [u16]) {
        for (o, &x) in output.iter_mut().zip(input) {
            *o = to_bf16(x);
        }
    }
}

impl Linear {
    /// Prepares `weight`, stored as PyTorch's `Linear` stores it: `outputs` rows of
    /// `inputs`.
    pub(crate) fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        outputs: usize,
        inputs: usize,
        precision: Precision,
    ) -> Result<Self, ShapeError> {
        let error = |why| ShapeError {
            outputs,
            inputs,
            bias: bias.len(),
            why,
        };
        if outputs == 0 || !outputs.is_multiple_of(STRIPE) {
            return Err(error("outputs must be a positive multiple of 32"));
        }
        if inputs == 0 || !inputs.is_multiple_of(BLOCK) {
            return Err(error("inputs must be a positive multiple of 32"));
        }
        if weight.len() != outputs * inputs {
            return Err(error("the weight's length is not outputs × inputs"));
        }
        if bias.len() != outputs {
            return Err(error("the bias's length is not outputs"));
        }
        let weights = match precision {
            Precision::Fp32 => Weights::Plain(weight),
            Precision::Bf16 => {
                let mut packed = vec![0u16; weight.len()];
                for (i, value) in packed.iter_mut().enumerate() {
                    let parity = i % 2;
                    let column = i / 2 % 16;
                    let pair = i / 32 % 16;
                    let tile = i / 512 % 2;
                    let block = i / 1024 % (inputs / BLOCK);
                    let stripe = i / (1024 * (inputs / BLOCK));
                    let output = stripe * STRIPE + tile * 16 + column;
                    let input = block * BLOCK + 2 * pair + parity;
                    *value = to_bf16(weight[output * inputs + input]);
                }
                Weights::Packed(packed)
            }
        };
        Ok(Self {
            inputs,
            outputs,
            weights,
            bias,
        })
    }

    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// `output[r] = input[r] · weightᵀ + bias` for every row `r` of `input` (`rows ×
    /// inputs`, row-major) into `output` (`rows × outputs`). Large products are split by
    /// stripes over the current rayon pool.
    ///
    /// # Panics
    /// When the slices do not hold `rows` rows: a bug in the encoder, not bad input.
    pub(crate) fn apply(&self, kernel: Kernel, input: &[f32], rows: usize, output: &mut [f32]) {
        assert_eq!(input.len(), rows * self.inputs, "input rows");
        assert_eq!(output.len(), rows * self.outputs, "output rows");
        let packed = match &self.weights {
            Weights::Plain(weight) => {
                plain_product(kernel, input, weight, &self.bias, output);
                return;
            }
            Weights::Packed(packed) => packed,
        };
        let operand = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                // Whole tiles of 16 rows; the padding rows are zeros and never written out.
                let mut bits = vec![0u16; rows.div_ceil(32) * 32 * self.inputs];
                bf16_all(kernel, input, &mut bits[..input.len()]);
                Operand::Bf16(bits)
            }
            _ => {
                let mut rounded = vec![0f32; input.len()];
                round_all(kernel, input, &mut rounded);
                Operand::Rounded(rounded)
            }
        };
        let stripes = self.outputs / STRIPE;
        let threads = rayon::current_num_threads().min(stripes);
        let target = Rows::new(output, self.outputs);
        let product = Product {
            kernel,
            operand: &operand,
            rows,
            inputs: self.inputs,
            packed,
            bias: &self.bias,
            output: &target,
        };
        if threads <= 1 || rows * self.inputs * self.outputs < PARALLEL_FROM {
            product.stripes(0..stripes);
            return;
        }
        (0..threads).into_par_iter().for_each(|part| {
            product.stripes(stripes * part / threads..stripes * (part + 1) / threads);
        });
    }
}

/// The token states as a kernel reads them.
enum Operand {
    /// Rounded to bfloat16 and kept as f32, for the multiply-add kernels.
    Rounded(Vec<f32>),
    /// bfloat16 bits, padded with zero rows to a whole number of 32-row blocks, for AMX.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Bf16(Vec<u16>),
}

/// One product in progress, shared by the threads that each compute some stripes.
struct Product<'a> {
    kernel: Kernel,
    operand: &'a Operand,
    rows: usize,
    inputs: usize,
    packed: &'a [u16],
    bias: &'a [f32],
    output: &'a Rows,
}

impl Product<'_> {
    fn stripes(&self, stripes: Range<usize>) {
        let k = self.inputs;
        let stripe_len = k * STRIPE;
        let mut sums = [[0f32; STRIPE]; 32];
        #[cfg(target_arch = "x86_64")]
        if let (Kernel::Amx, Operand::Bf16(bits)) = (self.kernel, self.operand)
            && amx::usable()
        {
            // SAFETY: AMX is usable (checked just above, permission granted); every
            // read stays within `bits` (padded to 32-row blocks) and the stripe.
            let _tiles = unsafe { amx::Tiles::configure() };
            for block in (0..self.rows).step_by(32) {
                for stripe in stripes.clone() {
                    let weights = &self.packed[stripe * stripe_len..][..stripe_len];
                    // SAFETY: as above; `block + 32` rows exist in `bits`.
                    unsafe {
                        amx::block_sums(&bits[block * k..(block + 32) * k], k, weights, &mut sums)
                    };
                    self.write(block, (self.rows - block).min(32), stripe, &sums);
                }
            }
            return;
        }
        let rounded: Vec<f32>;
        let input = match self.operand {
            Operand::Rounded(rounded) => rounded.as_slice(),
            Operand::Bf16(bits) => {
                // AMX refused after all (cannot happen once permission was granted): widen.
                rounded = bits
                    .iter()
                    .map(|&b| f32::from_bits(u32::from(b) << 16))
                    .collect();
                &rounded
            }
        };
        let tile_rows = self.kernel.tile_rows();
        for block in (0..self.rows).step_by(ROW_BLOCK) {
            let block_end = (block + ROW_BLOCK).min(self.rows);
            for stripe in stripes.clone() {
                let weights = &self.packed[stripe * stripe_len..][..stripe_len];
                let mut row = block;
                while row < block_end {
                    let tile = tile_rows.min(block_end - row);
                    tile_sums(
                        self.kernel,
                        &input[row * k..(row + tile) * k],
                        k,
                        weights,
                        &mut sums[..tile],
                    );
                    self.write(row, tile, stripe, &sums);
                    row += tile;
                }
            }
        }
    }

    /// Adds the bias to `rows` rows of sums and writes them to the stripe's columns.
    fn write(&self, first_row: usize, rows: usize, stripe: usize, sums: &[[f32; STRIPE]]) {
        let bias = &self.bias[stripe * STRIPE..][..STRIPE];
        for (offset, sums) in sums[..rows].iter().enumerate() {
            // SAFETY: `first_row + offset < rows` of the output, and this stripe's columns
            // belong to this call alone (stripe ranges given to threads are disjoint).
            let out = unsafe { self.output.columns(first_row + offset, stripe * STRIPE) };
            for ((out, sum), bias) in out.iter_mut().zip(sums).zip(bias) {
                *out = sum + bias;
            }
        }
    }
}

multiversion! {
    /// The f32 reference: one dot product per output, in sixteen lanes.
    fn plain_product(input: &[f32], weight: &[f32], bias: &[f32], output: &mut [f32]) {
        let inputs = weight.len() / bias.len();
        for (row, out) in input.chunks_exact(inputs).zip(output.chunks_exact_mut(bias.len())) {
            for ((out, weights), bias) in out.iter_mut().zip(weight.chunks_exact(inputs)).zip(bias) {
                let mut lanes = [0f32; 16];
                for (x, w) in row.chunks_exact(16).zip(weights.chunks_exact(16)) {
                    for ((lane, x), w) in lanes.iter_mut().zip(x).zip(w) {
                        *lane = x.mul_add(*w, *lane);
                    }
                }
                *out = lanes.iter().sum::<f32>() + bias;
            }
        }
    }
}

impl Kernel {
    /// Rows per register tile of the loop [`tile_sums`] will run: decided by the same CPU
    /// check as its dispatch, since a kernel named on a CPU without AVX-512 falls back to a
    /// loop that takes at most 4 rows.
    fn tile_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx | Kernel::Avx512 if avx512_detected() => 8,
            _ => 4,
        }
    }
}

/// The output matrix, shared between threads that each write their own columns.
struct Rows {
    start: *mut f32,
    rows: usize,
    width: usize,
}

// SAFETY: threads write disjoint columns (see `Rows::columns`), and the borrow of the
// output outlives every thread (`Linear::apply` returns after they end).
unsafe impl Sync for Rows {}

impl Rows {
    fn new(output: &mut [f32], width: usize) -> Self {
        Self {
            start: output.as_mut_ptr(),
            rows: output.len() / width,
            width,
        }
    }

    /// The [`STRIPE`] columns of `row` from `column`.
    ///
    /// # Safety
    /// No other live reference may overlap them.
    #[allow(clippy::mut_from_ref)]
    unsafe fn columns(&self, row: usize, column: usize) -> &mut [f32] {
        assert!(row < self.rows && column + STRIPE <= self.width);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(row * self.width + column), STRIPE) }
    }
}

/// `sums[r][j] = Σₚ input[r·k + p] · weight[j][p]` for one stripe and `sums.len()` rows,
/// with the stripe's weights packed (see [`Weights::Packed`]) and `input` already rounded.
fn tile_sums(kernel: Kernel, input: &[f32], k: usize, weights: &[u16], sums: &mut [[f32; STRIPE]]) {
    assert!(
        input.len() == sums.len() * k && weights.len() == k * STRIPE && k.is_multiple_of(BLOCK)
    );
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Amx | Kernel::Avx512 if avx512_detected() => {
            // SAFETY: the CPU has AVX-512F, checked just above; lengths as asserted.
            unsafe { x86::tile_avx512(input, k, weights, sums) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Amx | Kernel::Avx512 | Kernel::Avx2 if avx2_detected() => {
            // SAFETY: the CPU has AVX2 and FMA, checked just above; lengths as asserted.
            unsafe { x86::tile_avx2(input, k, weights, sums) }
        }
        _ => tile_portable(input, k, weights, sums),
    }
}

fn tile_portable(input: &[f32], k: usize, weights: &[u16], sums: &mut [[f32; STRIPE]]) {
    for (row, sums) in input.chunks_exact(k).zip(sums.iter_mut()) {
        *sums = [0.0; STRIPE];
        for (inputs, tiles) in row
            .chunks_exact(BLOCK)
            .zip(weights.chunks_exact(BLOCK * STRIPE))
        {
            for (tile, weights) in tiles.chunks_exact(BLOCK * 16).enumerate() {
                for (pair, weights) in weights.chunks_exact(32).enumerate() {
                    let (even, odd) = (inputs[2 * pair], inputs[2 * pair + 1]);
                    for (column, w) in weights.chunks_exact(2).enumerate() {
                        let sum = &mut sums[tile * 16 + column];
                        *sum = even.mul_add(f32::from_bits(u32::from(w[0]) << 16), *sum);
                        *sum = odd.mul_add(f32::from_bits(u32::from(w[1]) << 16), *sum);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// `input · weightᵀ + bias` in f64, on the operands rounded as the kernels round them.
    fn expected(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        inputs: usize,
        round: bool,
    ) -> Vec<f64> {
        let value = |x: f32| f64::from(if round { round_bf16(x) } else { x });
        let outputs = bias.len();
        let mut out = Vec::new();
        for row in input.chunks_exact(inputs) {
            for o in 0..outputs {
                let sum: f64 = (0..inputs)
                    .map(|i| value(row[i]) * value(weight[o * inputs + i]))
                    .sum();
                out.push(sum + f64::from(bias[o]));
            }
        }
        out
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        assert_eq!(to_bf16(-2.0), 0xC000);
        // 1 + 2^-8 lies halfway between two bfloat16 values: to the even one, 1.0.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3·2^-8 lies halfway too: to the even one above it.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(to_bf16(1.0 + 1.0 / 128.0 + 1e-4), 0x3F81);
        assert_eq!(round_bf16(3.0), 3.0);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        // The largest finite f32 rounds past bfloat16's largest: to infinity, as IEEE does.
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        // NaNs whose low bits would carry them into an infinity, or past 2^32, stay NaN.
        for bits in [0x7F80_0001_u32, 0x7FFF_FFFF, 0xFF80_0001, 0xFFFF_FFFF] {
            assert!(round_bf16(f32::from_bits(bits)).is_nan(), "{bits:#x}");
        }
    }

    #[test]
    fn every_kernel_computes_the_bfloat16_product_plus_bias() {
        let (outputs, inputs) = (96, 64);
        let weight = pseudo_random(outputs * inputs, 1);
        let bias = pseudo_random(outputs, 2);
        let linear = Linear::new(
            weight.clone(),
            bias.clone(),
            outputs,
            inputs,
            Precision::Bf16,
        )
        .unwrap();
        for rows in [1, 2, 5, 7, 8, 9, 17, 33, 70] {
            let input = pseudo_random(rows * inputs, rows as u64);
            let want = expected(&input, &weight, &bias, inputs, true);
            for kernel in Kernel::available() {
                let mut output = vec![f32::NAN; rows * outputs];
                linear.apply(kernel, &input, rows, &mut output);
                for (i, (&got, &want)) in output.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() < 1e-5,
                        "{kernel:?}, {rows} rows: [{}][{}] = {got}, expected {want}",
                        i / outputs,
                        i % outputs
                    );
                }
            }
        }
    }

    #[test]
    fn the_f32_reference_computes_the_exact_product_and_bfloat16_stays_near_it() {
        let (outputs, inputs, rows) = (64, 384, 3);
        let weight = pseudo_random(outputs * inputs, 5);
        let bias = pseudo_random(outputs, 6);
        let input = pseudo_random(rows * inputs, 7);
        let want = expected(&input, &weight, &bias, inputs, false);
        let reference = Linear::new(
            weight.clone(),
            bias.clone(),
            outputs,
            inputs,
            Precision::Fp32,
        )
        .unwrap();
        let served = Linear::new(weight, bias, outputs, inputs, Precision::Bf16).unwrap();
        for kernel in Kernel::available() {
            let (mut exact, mut rounded) = (vec![0f32; rows * outputs], vec![0f32; rows * outputs]);
            reference.apply(kernel, &input, rows, &mut exact);
            served.apply(kernel, &input, rows, &mut rounded);
            for ((&e, &r), &w) in exact.iter().zip(&rounded).zip(&want) {
                assert!((f64::from(e) - w).abs() < 1e-5, "{kernel:?}: {e} vs {w}");
                // Each operand is off by at most 2^-9 of itself; over 384 random terms the
                // sum drifts by far less than a tenth of its typical size (about 3).
                assert!((f64::from(r) - w).abs() < 0.05, "{kernel:?}: {r} vs {w}");
            }
        }
    }

    #[test]
    fn a_large_product_split_between_threads_equals_one_on_a_single_thread() {
        let (outputs, inputs, rows) = (320, 384, 40);
        let weight = pseudo_random(outputs * inputs, 3);
        let linear = Linear::new(
            weight,
            vec![0.25; outputs],
            outputs,
            inputs,
            Precision::Bf16,
        )
        .unwrap();
        let input = pseudo_random(rows * inputs, 4);
        for kernel in Kernel::available() {
            let mut split = vec![0f32; rows * outputs];
            rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap()
                .install(|| linear.apply(kernel, &input, rows, &mut split));
            let mut single = vec![0f32; rows * outputs];
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| linear.apply(kernel, &input, rows, &mut single));
            assert_eq!(split, single, "{kernel:?}");
        }
    }

    #[test]
    fn shapes_that_cannot_be_packed_are_refused() {
        let linear = |weight: usize, bias: usize, outputs: usize, inputs: usize| {
            Linear::new(
                vec![0.0; weight],
                vec![0.0; bias],
                outputs,
                inputs,
                Precision::Bf16,
            )
        };
        assert!(
            linear(31 * 32, 31, 31, 32).is_err(),
            "outputs not a multiple of 32"
        );
        assert!(
            linear(32 * 33, 32, 32, 33).is_err(),
            "inputs not a multiple of 32"
        );
        assert!(linear(32 * 32, 31, 32, 32).is_err(), "bias too short");
        assert!(linear(32 * 31, 32, 32, 32).is_err(), "weight too short");
        assert!(linear(32 * 32, 32, 32, 32).is_ok());
    }
}
