//! The multiply-add kernels for x86-64: bfloat16 weights widened to f32 in registers (a
//! shift for the even input of a pair, a mask for the odd one), times token states already
//! rounded to bfloat16, summed in f32: the arithmetic AMX does, on CPUs without it.

use std::arch::x86_64::*;

use super::{BLOCK, STRIPE};

/// Up to 8 rows × 32 columns in 16 registers.
///
/// # Safety
/// The CPU must have AVX-512F; `input` holds `sums.len()` rows of `k`, `weights` one packed
/// stripe of `k` inputs, and `k` is a multiple of [`BLOCK`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512(
    input: &[f32],
    k: usize,
    weights: &[u16],
    sums: &mut [[f32; STRIPE]],
) {
    // SAFETY (for the callees): the caller's promises, passed on.
    unsafe {
        match sums.len() {
            8 => rows_avx512::<8>(input, k, weights, sums),
            7 => rows_avx512::<7>(input, k, weights, sums),
            6 => rows_avx512::<6>(input, k, weights, sums),
            5 => rows_avx512::<5>(input, k, weights, sums),
            4 => rows_avx512::<4>(input, k, weights, sums),
            3 => rows_avx512::<3>(input, k, weights, sums),
            2 => rows_avx512::<2>(input, k, weights, sums),
            1 => rows_avx512::<1>(input, k, weights, sums),
            _ => unreachable!("tiles hold 1 to 8 rows"),
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows_avx512<const R: usize>(
    input: &[f32],
    k: usize,
    weights: &[u16],
    sums: &mut [[f32; STRIPE]],
) {
    assert!(
        input.len() >= R * k
            && weights.len() >= k * STRIPE
            && sums.len() >= R
            && k.is_multiple_of(BLOCK)
    );
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let x = input.as_ptr();
    // One tile row: 16 outputs × an input pair, as 16 u32 lanes (odd input in the high half).
    let w = weights.as_ptr().cast::<u32>();
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    for block in 0..k / BLOCK {
        for pair in 0..BLOCK / 2 {
            let input = block * BLOCK + 2 * pair;
            // SAFETY: block < k / 32 and pair < 16: every read is within the lengths
            // asserted above (a stripe is k × 32 u16, i.e. k × 16 u32).
            unsafe {
                let lanes0 = _mm512_loadu_si512(w.add((block * 2) * 256 + pair * 16).cast());
                let lanes1 = _mm512_loadu_si512(w.add((block * 2 + 1) * 256 + pair * 16).cast());
                let even0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes0));
                let odd0 = _mm512_castsi512_ps(_mm512_and_si512(lanes0, high));
                let even1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes1));
                let odd1 = _mm512_castsi512_ps(_mm512_and_si512(lanes1, high));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*x.add(r * k + input));
                    let b = _mm512_set1_ps(*x.add(r * k + input + 1));
                    acc[0] = _mm512_fmadd_ps(b, odd0, _mm512_fmadd_ps(a, even0, acc[0]));
                    acc[1] = _mm512_fmadd_ps(b, odd1, _mm512_fmadd_ps(a, even1, acc[1]));
                }
            }
        }
    }
    for (acc, sums) in acc.iter().zip(sums.iter_mut()) {
        // SAFETY: each row of sums holds 32 floats.
        unsafe {
            _mm512_storeu_ps(sums.as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(sums.as_mut_ptr().add(16), acc[1]);
        }
    }
}

/// Up to 4 rows × 16 columns in 8 registers, once per tile of the stripe.
///
/// # Safety
/// The CPU must have AVX2 and FMA; lengths as for [`tile_avx512`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(
    input: &[f32],
    k: usize,
    weights: &[u16],
    sums: &mut [[f32; STRIPE]],
) {
    // SAFETY (for the callees): the caller's promises, passed on.
    unsafe {
        for tile in 0..2 {
            match sums.len() {
                4 => rows_avx2::<4>(input, k, weights, sums, tile),
                3 => rows_avx2::<3>(input, k, weights, sums, tile),
                2 => rows_avx2::<2>(input, k, weights, sums, tile),
                1 => rows_avx2::<1>(input, k, weights, sums, tile),
                _ => unreachable!("tiles hold 1 to 4 rows"),
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_avx2<const R: usize>(
    input: &[f32],
    k: usize,
    weights: &[u16],
    sums: &mut [[f32; STRIPE]],
    tile: usize,
) {
    assert!(input.len() >= R * k && weights.len() >= k * STRIPE && sums.len() >= R);
    assert!(k.is_multiple_of(BLOCK) && tile < 2);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let x = input.as_ptr();
    let w = weights.as_ptr().cast::<u32>();
    let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    for block in 0..k / BLOCK {
        for pair in 0..BLOCK / 2 {
            let input = block * BLOCK + 2 * pair;
            // SAFETY: within the lengths asserted above, as in `rows_avx512`.
            unsafe {
                let row = w.add((block * 2 + tile) * 256 + pair * 16);
                let lanes0 = _mm256_loadu_si256(row.cast());
                let lanes1 = _mm256_loadu_si256(row.add(8).cast());
                let even0 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lanes0));
                let odd0 = _mm256_castsi256_ps(_mm256_and_si256(lanes0, high));
                let even1 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lanes1));
                let odd1 = _mm256_castsi256_ps(_mm256_and_si256(lanes1, high));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_ps(*x.add(r * k + input));
                    let b = _mm256_set1_ps(*x.add(r * k + input + 1));
                    acc[0] = _mm256_fmadd_ps(b, odd0, _mm256_fmadd_ps(a, even0, acc[0]));
                    acc[1] = _mm256_fmadd_ps(b, odd1, _mm256_fmadd_ps(a, even1, acc[1]));
                }
            }
        }
    }
    for (acc, sums) in acc.iter().zip(sums.iter_mut()) {
        // SAFETY: tile * 16 + 16 <= 32 floats of each row.
        unsafe {
            _mm256_storeu_ps(sums.as_mut_ptr().add(tile * 16), acc[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(tile * 16 + 8), acc[1]);
        }
    }
}
