//! The inner loop of vector search: dot products of one quantised query with many stored
//! `i8` vectors, and the running selection of the best scores.
//!
//! The kernel is chosen once, at run time, from what the CPU offers: AVX-512 VNNI (one
//! instruction multiplies and sums 64 byte pairs), else AVX2, else plain Rust that the
//! compiler vectorises as it can. Every kernel computes the same exact integer sums, so the
//! choice changes speed, never results (a unit test holds each one to the plain loop).

use std::sync::OnceLock;

/// A query quantised for the kernels: its `i8` codes, and the same plus 128 as `u8` (VNNI
/// multiplies unsigned by signed bytes; the stored row sums take the 128 back out).
pub(crate) struct QueryCodes {
    pub(crate) codes: Vec<i8>,
    shifted: Vec<u8>,
}

impl QueryCodes {
    pub(crate) fn new(codes: Vec<i8>) -> Self {
        let shifted = codes.iter().map(|&c| (i16::from(c) + 128) as u8).collect();
        Self { codes, shifted }
    }
}

/// The sum of a row's codes, stored beside it for the VNNI kernel's correction.
pub(crate) fn code_sum(codes: &[i8]) -> i32 {
    // At most 127 × the dimensions: never near overflow, so no checks in the way.
    codes
        .iter()
        .fold(0i32, |sum, &c| sum.wrapping_add(i32::from(c)))
}

/// Which implementation of [`Kernel::dots`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs, chosen once per process.
    pub(crate) fn best() -> Kernel {
        static CHOSEN: OnceLock<Kernel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let chosen = Kernel::available()
                .into_iter()
                .next()
                .unwrap_or(Kernel::Portable);
            tracing::debug!(kernel = ?chosen, "vector scan kernel");
            chosen
        })
    }

    /// Every kernel this CPU can run, fastest first.
    pub(crate) fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if has_vnni() {
                kernels.push(Kernel::Vnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    /// `out[i]` = the dot product of the query with row `rows[i]` of `matrix` (rows of
    /// `dims` codes, each in -127..=127 as quantisation makes them; `sums[r]` is
    /// [`code_sum`] of row `r`).
    ///
    /// # Panics
    /// If a row lies outside `matrix` or `sums`, or `out` is shorter than `rows`.
    pub(crate) fn dots(
        self,
        matrix: &[i8],
        sums: &[i32],
        dims: usize,
        rows: &[u32],
        query: &QueryCodes,
        out: &mut [i32],
    ) {
        assert!(query.codes.len() == dims && out.len() >= rows.len());
        assert!(
            rows.iter()
                .all(|&r| (r as usize + 1) * dims <= matrix.len() && (r as usize) < sums.len())
        );
        match self {
            // SAFETY: the CPU has the features each kernel is compiled for (checked here,
            // whoever named the kernel; std caches the answer), and every row was
            // bounds-checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni if has_vnni() => unsafe {
                dots_vnni(matrix, sums, dims, rows, query, out)
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe {
                dots_avx2(matrix, dims, rows, &query.codes, out)
            },
            _ => dots_portable(matrix, dims, rows, &query.codes, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[inline(always)]
fn dots_portable(matrix: &[i8], dims: usize, rows: &[u32], query: &[i8], out: &mut [i32]) {
    for (&row, dot) in rows.iter().zip(out.iter_mut()) {
        let start = row as usize * dims;
        *dot = matrix[start..start + dims]
            .iter()
            .zip(query)
            .map(|(&a, &b)| i32::from(i16::from(a) * i16::from(b)))
            .sum();
    }
}

/// AVX2: `vpmaddubsw` multiplies unsigned by signed bytes into pairs of 16-bit sums; with
/// |query| as the unsigned side and the row codes carrying the query's signs, no pair can
/// overflow (2 × 128 × 127 < 2¹⁵).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2(matrix: &[i8], dims: usize, rows: &[u32], query: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::{
        __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_hadd_epi32, _mm256_abs_epi8,
        _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_loadu_si256,
        _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_setzero_si256,
        _mm256_sign_epi8,
    };
    let blocks = dims / 32;
    let tail = blocks * 32;
    let ones = _mm256_set1_epi16(1);
    for (&row, dot) in rows.iter().zip(out.iter_mut()) {
        let start = row as usize * dims;
        let codes = &matrix[start..start + dims];
        let mut acc = _mm256_setzero_si256();
        for block in 0..blocks {
            // SAFETY: `block * 32 + 32 <= dims`, the length of both `codes` and the query.
            let (q, c) = unsafe {
                (
                    _mm256_loadu_si256(query.as_ptr().add(block * 32).cast::<__m256i>()),
                    _mm256_loadu_si256(codes.as_ptr().add(block * 32).cast::<__m256i>()),
                )
            };
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(c, q));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
        }
        let halves = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let quarters = _mm_hadd_epi32(halves, halves);
        let mut sum = _mm_cvtsi128_si32(_mm_hadd_epi32(quarters, quarters));
        for (&c, &q) in codes[tail..].iter().zip(&query[tail..]) {
            sum += i32::from(c) * i32::from(q);
        }
        *dot = sum;
    }
}

/// VNNI: `vpdpbusd` sums 64 products of unsigned query bytes (code + 128) and signed row
/// codes per instruction; subtracting 128 × the row's code sum gives the signed dot.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dots_vnni(
    matrix: &[i8],
    sums: &[i32],
    dims: usize,
    rows: &[u32],
    query: &QueryCodes,
    out: &mut [i32],
) {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_reduce_add_epi32,
        _mm512_setzero_si512,
    };
    let blocks = dims / 64;
    let tail = blocks * 64;
    let query_ptr = query.shifted.as_ptr();
    for (&row, dot) in rows.iter().zip(out.iter_mut()) {
        let start = row as usize * dims;
        let codes = &matrix[start..start + dims];
        let mut acc = _mm512_setzero_si512();
        for block in 0..blocks {
            // SAFETY: `block * 64 + 64 <= dims`, the length of both `codes` and the query.
            let (q, c) = unsafe {
                (
                    _mm512_loadu_si512(query_ptr.add(block * 64).cast::<__m512i>()),
                    _mm512_loadu_si512(codes.as_ptr().add(block * 64).cast::<__m512i>()),
                )
            };
            acc = _mm512_dpbusd_epi32(acc, q, c);
        }
        let mut shifted_dot = _mm512_reduce_add_epi32(acc);
        for (&c, &q) in codes[tail..].iter().zip(&query.shifted[tail..]) {
            shifted_dot += i32::from(c) * i32::from(q);
        }
        *dot = shifted_dot - 128 * sums[row as usize];
    }
}

/// The `n` best-scoring rows offered, without sorting or keeping every score: offers below
/// the current `n`-th best are dropped as they come.
pub(crate) struct TopK {
    n: usize,
    kept: Vec<(f32, u32)>,
    /// Scores below this cannot be among the best `n` any more.
    floor: f32,
}

impl TopK {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            kept: Vec::with_capacity(2 * n.max(1)),
            floor: f32::NEG_INFINITY,
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, score: f32, row: u32) {
        if self.n == 0 || score < self.floor {
            return;
        }
        self.kept.push((score, row));
        if self.kept.len() == 2 * self.n {
            self.cut();
        }
    }

    /// Keeps the best `n` and raises the floor to the worst of them.
    fn cut(&mut self) {
        if self.kept.len() > self.n {
            self.kept
                .select_nth_unstable_by(self.n - 1, |a, b| b.0.total_cmp(&a.0));
            self.kept.truncate(self.n);
            self.floor = self.kept[self.n - 1].0;
        }
    }

    /// Offers every row `other` kept.
    pub(crate) fn merge(&mut self, other: TopK) {
        for (score, row) in other.kept {
            self.offer(score, row);
        }
    }

    /// The best `n` rows offered, best first.
    pub(crate) fn into_sorted(mut self) -> Vec<u32> {
        self.cut();
        self.kept.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.kept.into_iter().map(|(_, row)| row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(seed: &mut u64, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // The full range quantisation makes, both extremes included: -127..=127.
                (((*seed >> 33) % 255) as i64 - 127) as i8
            })
            .collect()
    }

    /// Only the kernels this CPU runs are compared: the VNNI one is checked on machines
    /// with AVX-512 VNNI alone (this project's CI machine has it at the time of writing).
    #[test]
    fn every_kernel_this_cpu_runs_gives_the_exact_integer_dots() {
        let mut seed = 3;
        // 384 (the model's size, whole VNNI blocks) and 100 (a tail of 36 bytes).
        for dims in [384, 100, 64, 7] {
            let matrix = codes(&mut seed, dims * 40);
            let sums: Vec<i32> = matrix.chunks_exact(dims).map(code_sum).collect();
            let query = QueryCodes::new(codes(&mut seed, dims));
            let rows: Vec<u32> = vec![39, 0, 17, 17, 5];
            let mut expected = vec![0; rows.len()];
            for (i, &r) in rows.iter().enumerate() {
                let row = &matrix[r as usize * dims..(r as usize + 1) * dims];
                expected[i] = row
                    .iter()
                    .zip(&query.codes)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
            }
            for kernel in Kernel::available() {
                let mut out = vec![0; rows.len()];
                kernel.dots(&matrix, &sums, dims, &rows, &query, &mut out);
                assert_eq!(out, expected, "{kernel:?} at {dims} dims");
            }
        }
    }

    #[test]
    fn top_k_keeps_the_best_in_order_across_cuts() {
        let mut top = TopK::new(3);
        let scores = [0.1, 0.9, 0.3, 0.8, 0.2, 0.95, 0.4, 0.85, 0.0, 0.5];
        for (row, score) in scores.iter().enumerate() {
            top.offer(*score, row as u32);
        }
        assert_eq!(top.into_sorted(), [5, 1, 7]);
        let mut none = TopK::new(0);
        none.offer(1.0, 1);
        assert!(none.into_sorted().is_empty());
        let mut few = TopK::new(5);
        few.offer(0.5, 9);
        few.offer(0.7, 4);
        assert_eq!(few.into_sorted(), [4, 9]);
        // Two halves scanned apart give what one scan gives.
        let (mut first, mut second) = (TopK::new(3), TopK::new(3));
        for (row, score) in scores.iter().enumerate() {
            let half = if row % 2 == 0 {
                &mut first
            } else {
                &mut second
            };
            half.offer(*score, row as u32);
        }
        first.merge(second);
        assert_eq!(first.into_sorted(), [5, 1, 7]);
    }
}
