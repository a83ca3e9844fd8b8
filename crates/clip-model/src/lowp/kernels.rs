//! The arithmetic of [`super`]: rows of activations rounded to bf16 or quantized to uint8, and the
//! micro-kernels that multiply them with packed weight panels — AVX-512F (`vfmadd231ps`, f32),
//! AVX-512 BF16 (`vdpbf16ps`) and VNNI (`vpdpbusd`) where the CPU has them, AVX2+FMA for all three
//! elsewhere, and a portable loop with the same per-lane arithmetic on CPUs without AVX2.

use super::{LANES, MR, NV, Precision};

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN). Branch-free so that slices convert
/// in vector registers.
#[inline(always)]
pub(super) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16;
    if x.is_nan() { 0x7fc0 } else { rounded }
}

#[inline(always)]
pub(super) fn bf16_value(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// A micro-tile's sums: f32 (f32, bf16) or i32 (int8).
pub(super) struct Tile {
    pub(super) f: [[f32; NV * LANES]; MR],
    pub(super) i: [[i32; NV * LANES]; MR],
}

impl Default for Tile {
    fn default() -> Tile {
        Tile {
            f: [[0.0; NV * LANES]; MR],
            i: [[0; NV * LANES]; MR],
        }
    }
}

/// `out = [relu]([out +] sums [+ bias])`: a finished tile row into the output (`bias` empty:
/// none), in one vectorised pass (compiled for the baseline alone, this loop cost a fifth of a
/// product with 64 inputs).
pub(super) fn add_row(sums: &[f32], bias: &[f32], out: &mut [f32], accumulate: bool, relu: bool) {
    add_row_into(crate::fastmath::kernel(), sums, bias, out, accumulate, relu)
}

multiversion!(
    fn add_row_into(sums: &[f32], bias: &[f32], out: &mut [f32], accumulate: bool, relu: bool) {
        match (bias.is_empty(), accumulate) {
            (true, false) => out.copy_from_slice(&sums[..out.len()]),
            (true, true) => {
                for (o, s) in out.iter_mut().zip(sums) {
                    *o += s;
                }
            }
            (false, false) => {
                for ((o, s), b) in out.iter_mut().zip(sums).zip(bias) {
                    *o = s + b;
                }
            }
            (false, true) => {
                for ((o, s), b) in out.iter_mut().zip(sums).zip(bias) {
                    *o += s + b;
                }
            }
        }
        if relu {
            for o in out.iter_mut() {
                // NaN stays NaN, as in PyTorch
                *o = if *o < 0.0 { 0.0 } else { *o };
            }
        }
    }
);

/// A row rounded to bf16, two values per word (the lower index in the low half).
pub(super) fn pack_row_bf16(x: &[f32], out: &mut [u32]) {
    pack_bf16_into(crate::fastmath::kernel(), x, out)
}

multiversion!(
    fn pack_bf16_into(x: &[f32], out: &mut [u32]) {
        let pairs = x.chunks_exact(2);
        let last = pairs.remainder().first().copied();
        for (o, p) in out.iter_mut().zip(pairs) {
            *o = bf16_bits(p[0]) | (bf16_bits(p[1]) << 16);
        }
        if let Some(v) = last {
            out[x.len() / 2] = bf16_bits(v);
        }
    }
);

/// A row quantized to uint8, four values per word: returns (scale, zero point) with
/// `x ≈ scale·(q − zero)`; the range always includes 0 (so padding and zeros are exact).
pub(super) fn quantize_row(x: &[f32], out: &mut [u32]) -> (f32, i32) {
    quantize_row_with(avx512_quantizer(), x, out)
}

/// Whether [`quantize_row`] runs its AVX-512F code (else the copy of the portable loop compiled for
/// the CPU's vector width).
pub(super) fn avx512_quantizer() -> bool {
    crate::fastmath::kernel() == "avx512"
}

/// [`quantize_row`] by the AVX-512 code when `fast` (the caller checked [`avx512_quantizer`]),
/// else portably; both give the same bytes.
pub(super) fn quantize_row_with(fast: bool, x: &[f32], out: &mut [u32]) -> (f32, i32) {
    let (lo, hi, nan) = {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `fast` means the CPU has AVX-512F (see `avx512_quantizer`).
            unsafe { avx512::range(x) }
        } else {
            range(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        range(x)
    };
    let range = hi - lo;
    if nan || !(range > 0.0 && range.is_finite()) {
        out.fill(0);
        return (if nan || range.is_nan() { f32::NAN } else { 1.0 }, 0);
    }
    let scale = range / 255.0;
    let zero = (-lo / scale).round().clamp(0.0, 255.0);
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: as above; `out` holds ⌈len/4⌉ words (asserted inside).
        unsafe { avx512::quantize(x, 1.0 / scale, zero, out) };
        return (scale, zero as i32);
    }
    quantize_into(crate::fastmath::kernel(), x, 1.0 / scale, zero, out);
    (scale, zero as i32)
}

/// (min(0, x), max(0, x), whether x holds a NaN).
fn range(x: &[f32]) -> (f32, f32, bool) {
    let (mut lo, mut hi, mut nan) = (0f32, 0f32, false);
    for &v in x {
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
        nan |= v.is_nan();
    }
    (lo, hi, nan)
}

multiversion!(
    fn quantize_into(x: &[f32], inv: f32, zero: f32, out: &mut [u32]) {
        // round half to even by the 1.5·2²³ trick (the values lie in [0, 255] after the shift), so
        // that the loop has no libm call and vectorises
        const MAGIC: f32 = 12_582_912.0;
        let q = |v: f32| (((v * inv + zero) + MAGIC) - MAGIC).clamp(0.0, 255.0) as u32;
        let quads = x.chunks_exact(4);
        let rest = quads.remainder();
        for (o, c) in out.iter_mut().zip(quads) {
            *o = q(c[0]) | (q(c[1]) << 8) | (q(c[2]) << 16) | (q(c[3]) << 24);
        }
        if !rest.is_empty() {
            // the padding bytes stay 0: they meet the weights' zero padding rows
            let mut word = 0;
            for (s, &v) in rest.iter().enumerate() {
                word |= q(v) << (8 * s);
            }
            out[x.len() / 4] = word;
        }
    }
);

/// The vector kernels a CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX-512F for f32, with BF16 for bf16 and VNNI for int8
    Avx512,
    /// AVX2 and FMA (also what an AVX-512 CPU without BF16 or VNNI runs for those)
    Avx2,
}

/// Which vector kernel multiplies `precision` on this CPU, `None` for the portable loop
/// (`CLIP_NO_AVX512=1` rules out the AVX-512 ones).
pub(super) fn isa(precision: Precision) -> Option<Isa> {
    // asked once per micro-tile: detected once per precision
    static ISA: [std::sync::OnceLock<Option<Isa>>; 3] = [const { std::sync::OnceLock::new() }; 3];
    let slot = match precision {
        Precision::F32 => 0,
        Precision::Bf16 => 1,
        Precision::Int8 => 2,
    };
    *ISA[slot].get_or_init(|| detect(precision))
}

fn detect(precision: Precision) -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = crate::fastmath::avx2_fma();
        match (crate::fastmath::kernel(), precision) {
            // `kernel()` is "avx512" where AVX-512F is there
            ("avx512", Precision::F32) => Some(Isa::Avx512),
            ("avx512", Precision::Bf16) if std::is_x86_feature_detected!("avx512bf16") => {
                Some(Isa::Avx512)
            }
            ("avx512", Precision::Int8) if std::is_x86_feature_detected!("avx512vnni") => {
                Some(Isa::Avx512)
            }
            // `kernel()` is "avx2" only where AVX2 and FMA are there; an AVX-512 CPU is checked
            // here (a hypervisor may hide FMA)
            ("avx512" | "avx2", _) if avx2 => Some(Isa::Avx2),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = precision;
        None
    }
}

/// Whether this CPU runs a vector kernel for `precision`: AVX-512 (F, BF16 or VNNI) or AVX2+FMA;
/// else the portable loop.
pub fn fast_kernels(precision: Precision) -> bool {
    isa(precision).is_some()
}

/// The output rows a finished tile goes to straight from the registers (f32 sums on AVX-512):
/// `rows[r][..cols] = [relu]([rows[r] +] sums [+ bias])`. Whoever builds one vouches that each
/// row pointer and `bias` (when given) hold `cols` values that nothing else reads or writes
/// during the call.
pub(super) struct Direct<const R: usize> {
    pub rows: [*mut f32; R],
    pub cols: usize,
    pub bias: Option<*const f32>,
    pub accumulate: bool,
    pub relu: bool,
}

/// The steps `k0 .. k0 + len` of a product; `first`: the tile starts from zero, else from the
/// sums it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub k0: usize,
    pub len: usize,
    pub first: bool,
}

impl Span {
    /// All `steps` in one pass.
    #[cfg(test)]
    pub fn all(steps: usize) -> Span {
        Span {
            k0: 0,
            len: steps,
            first: true,
        }
    }
}

/// `R` rows × `V` panels of `Σ_t a[r][t] · b[p][t]` over the steps of `span` into `tile`, by the
/// vector kernel when `fast` (the caller checked the CPU with [`fast_kernels`]) or the portable
/// one. Row `r`'s words for the span lie in `runs`: run `(offset, len)` is `len` words from
/// `a[rows[r] + offset]`, the runs in turn covering the span's steps (one run for a matrix; a
/// convolution's rows are pixels of one padded image, a run per tap, so that rows need not be
/// evenly spaced, nor their steps together). Each of `b`'s panels holds `steps` steps. With
/// `direct`, the AVX-512 f32 and bf16 kernels finish the tile into its output rows and return
/// true (no pass over a stored tile); the others fill `tile` and return false.
#[allow(clippy::too_many_arguments)]
pub(super) fn kernel<const R: usize, const V: usize>(
    a: &[u32],
    rows: [usize; R],
    runs: &[(usize, usize)],
    b: &[u32],
    steps: usize,
    span: Span,
    kind: Precision,
    fast: bool,
    tile: &mut Tile,
    direct: Option<&Direct<R>>,
) -> bool {
    // the tile holds MR rows of NV panels: the vector kernels index it without checks
    const { assert!(R >= 1 && R <= MR && V >= 1 && V <= NV) };
    // sizes checked without wrapping
    let panels = V.checked_mul(steps).and_then(|v| v.checked_mul(LANES));
    let far = rows.iter().max().copied().unwrap_or(0);
    let fits = runs.iter().all(|&(offset, len)| {
        far.checked_add(offset)
            .and_then(|v| v.checked_add(len))
            .is_some_and(|end| end <= a.len())
    });
    assert!(
        fits && runs.iter().map(|r| r.1).sum::<usize>() == span.len,
        "runs {runs:?} of rows at {rows:?} do not fit the input or the span {span:?}"
    );
    assert!(
        panels.is_some_and(|len| b.len() >= len),
        "{V} panels of {steps} steps do not fit the weights"
    );
    assert!(
        span.k0
            .checked_add(span.len)
            .is_some_and(|end| end <= steps),
        "steps {span:?} beyond {steps}"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = isa(kind).filter(|_| fast) {
        // SAFETY: `isa` names a kernel whose instructions this CPU has (detected at run time);
        // each row's runs lie inside `a`, the panels hold `steps` words each with the span (the
        // runs' steps) inside them, and R ≤ MR, V ≤ NV (all asserted above); `direct`'s rows
        // are its builder's promise.
        return unsafe {
            let a = rows.map(|r| a.as_ptr().add(r));
            let b = b.as_ptr().add(span.k0 * LANES);
            let (f, i, first) = (&mut tile.f, &mut tile.i, span.first);
            let wide = isa == Isa::Avx512;
            match kind {
                Precision::F32 if wide => avx512::fp32::<R, V>(a, runs, b, steps, first, f, direct),
                Precision::Bf16 if wide => {
                    avx512::bf16::<R, V>(a, runs, b, steps, first, f, direct)
                }
                Precision::Int8 if wide => {
                    avx512::int8::<R, V>(a, runs, b, steps, first, i, direct)
                }
                Precision::F32 => {
                    avx2::fp32::<R, V>(a, runs, b, steps, first, f);
                    false
                }
                Precision::Bf16 => {
                    avx2::bf16::<R, V>(a, runs, b, steps, first, f);
                    false
                }
                Precision::Int8 => {
                    avx2::int8::<R, V>(a, runs, b, steps, first, i);
                    false
                }
            }
        };
    }
    let _ = (fast, direct);
    match kind {
        Precision::F32 => portable::<_, R, V>(a, rows, runs, b, steps, span, &mut tile.f, f32_fma),
        Precision::Bf16 => {
            portable::<_, R, V>(a, rows, runs, b, steps, span, &mut tile.f, bf16_pair)
        }
        Precision::Int8 => {
            portable::<_, R, V>(a, rows, runs, b, steps, span, &mut tile.i, u8_i8_quad)
        }
    }
    false
}

/// The portable tile: `out[r][lane] (+)= Σ_t mac(·, a[r][t], b[v][t][lane])` over the span, with
/// the per-instruction arithmetic `mac` of [`f32_fma`], [`bf16_pair`] or [`u8_i8_quad`].
#[allow(clippy::too_many_arguments)]
fn portable<T: Copy + Default, const R: usize, const V: usize>(
    a: &[u32],
    rows: [usize; R],
    runs: &[(usize, usize)],
    b: &[u32],
    steps: usize,
    span: Span,
    out: &mut [[T; NV * LANES]; MR],
    mac: impl Fn(T, u32, u32) -> T,
) {
    for (r, out) in out.iter_mut().enumerate().take(R) {
        let mut acc = if span.first {
            [T::default(); NV * LANES]
        } else {
            *out
        };
        let words = runs
            .iter()
            .flat_map(|&(offset, len)| &a[rows[r] + offset..][..len]);
        for (i, &x) in words.enumerate() {
            for v in 0..V {
                let panel = &b[(v * steps + span.k0 + i) * LANES..][..LANES];
                for (l, &w) in panel.iter().enumerate() {
                    acc[v * LANES + l] = mac(acc[v * LANES + l], x, w);
                }
            }
        }
        *out = acc;
    }
}

/// `vfmadd231ps`'s arithmetic per lane: one product added with a single rounding.
#[inline(always)]
fn f32_fma(acc: f32, x: u32, w: u32) -> f32 {
    f32::from_bits(x).mul_add(f32::from_bits(w), acc)
}

/// `vdpbf16ps`'s arithmetic per lane: the odd product, then the even one, each added in f32.
#[inline(always)]
fn bf16_pair(acc: f32, x: u32, w: u32) -> f32 {
    let acc = acc + bf16_value(x >> 16) * bf16_value(w >> 16);
    acc + bf16_value(x & 0xffff) * bf16_value(w & 0xffff)
}

/// `vpdpbusd`'s arithmetic per lane: four u8 × i8 products added to an i32.
#[inline(always)]
fn u8_i8_quad(acc: i32, x: u32, w: u32) -> i32 {
    let (x, w) = (x.to_le_bytes(), w.to_le_bytes());
    acc + (0..4).map(|i| x[i] as i32 * w[i] as i8 as i32).sum::<i32>()
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod avx2;
