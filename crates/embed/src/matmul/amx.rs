//! The AMX kernel (Intel Sapphire Rapids and later): `tdpbf16ps` multiplies a 16 × 32 tile
//! of bfloat16 token states by a 32 × 16 tile of bfloat16 weights into 16 × 16 f32 sums,
//! 8,192 multiply-adds per instruction. Rust has no stable AMX intrinsics, so the handful of
//! instructions are written as inline assembly; the compiler never uses the tile registers
//! itself, so they keep their values between the blocks.
//!
//! Linux lends the tile registers to a process only on request (`arch_prctl`), once per
//! process; [`usable`] asks the first time and remembers the answer.

use std::arch::asm;
use std::sync::OnceLock;

use super::{BLOCK, STRIPE};

/// Whether the CPU has AMX with bfloat16 and the kernel lets this process use it.
pub(super) fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 22 AMX-BF16.
        let features = std::arch::x86_64::__cpuid_count(7, 0);
        let has_amx = features.edx & (1 << 24) != 0 && features.edx & (1 << 22) != 0;
        has_amx && super::avx512_detected() && request_permission()
    })
}

/// Asks Linux for the tile data state (`ARCH_REQ_XCOMP_PERM`, `XFEATURE_XTILEDATA`).
#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which register state this
    // process may use; it reads and writes no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    result == 0
}

/// Other systems are not asked: the multiply-add kernels serve there.
#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// The tile registers configured for [`block_sums`] on this thread, released on drop.
pub(super) struct Tiles(());

/// Palette 1, eight tiles of 16 rows × 64 bytes: tmm0–3 hold sums (16 × 16 f32), tmm4–5
/// token states (16 rows × 32 bf16), tmm6–7 weights (16 input pairs × 16 outputs × 2).
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut tile = 0;
    while tile < 8 {
        bytes[16 + 2 * tile] = 64;
        bytes[48 + tile] = 16;
        tile += 1;
    }
    Config(bytes)
};

impl Tiles {
    /// # Safety
    /// [`usable`] must have returned true.
    pub(super) unsafe fn configure() -> Self {
        // SAFETY: AMX is usable (the caller's promise); CONFIG is a valid palette-1 config.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured, so AMX is usable.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `sums[r][j]` for 32 rows of `bits` (bfloat16 token states, `k` per row) and one stripe
/// of packed weights.
///
/// # Safety
/// AMX must be usable and configured on this thread ([`Tiles::configure`]); `bits` holds 32
/// rows of `k`, `weights` one stripe (`k × 32`), and `k` is a multiple of [`BLOCK`].
pub(super) unsafe fn block_sums(
    bits: &[u16],
    k: usize,
    weights: &[u16],
    sums: &mut [[f32; STRIPE]; 32],
) {
    assert!(bits.len() == 32 * k && weights.len() == k * STRIPE && k.is_multiple_of(BLOCK));
    let row_bytes = k * 2;
    let states = bits.as_ptr();
    let tiles = weights.as_ptr();
    // SAFETY: every load reads 16 rows of 64 bytes inside `bits` (rows 0–15 or 16–31, bytes
    // block × 64 ..) or inside the stripe (tile 2 × block or 2 × block + 1 of 1,024 bytes);
    // every store writes 16 rows of 64 bytes inside `sums` (stride 128 bytes).
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for block in 0..k / BLOCK {
            asm!(
                "tileloadd tmm4, [{top} + {stride} * 1]",
                "tileloadd tmm5, [{bottom} + {stride} * 1]",
                "tileloadd tmm6, [{left} + {tile_stride} * 1]",
                "tileloadd tmm7, [{right} + {tile_stride} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                top = in(reg) states.add(block * BLOCK),
                bottom = in(reg) states.add(16 * k + block * BLOCK),
                left = in(reg) tiles.add(2 * block * 512),
                right = in(reg) tiles.add((2 * block + 1) * 512),
                stride = in(reg) row_bytes,
                tile_stride = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        let out = sums.as_mut_ptr().cast::<f32>();
        asm!(
            "tilestored [{a} + {stride} * 1], tmm0",
            "tilestored [{b} + {stride} * 1], tmm1",
            "tilestored [{c} + {stride} * 1], tmm2",
            "tilestored [{d} + {stride} * 1], tmm3",
            a = in(reg) out,
            b = in(reg) out.add(16),
            c = in(reg) out.add(16 * STRIPE),
            d = in(reg) out.add(16 * STRIPE + 16),
            stride = in(reg) STRIPE * 4,
            options(nostack)
        );
    }
}
