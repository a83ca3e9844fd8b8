//! Weights packed once at load for CPU inference: the linear layers and convolutions of
//! reduced precision (`--precision bf16|int8`), stored in bf16 or int8 and multiplied with f32
//! accumulation, and on CPUs with AVX-512 or AVX2+FMA those of f32 too.
//!
//! - **f32**: the values unchanged, laid out in panels of 16 columns so that the kernel streams
//!   them in order (`vfmadd231ps`, one rounding per product, summed in input order). `gemm`
//!   packs its right operand on every call, which at batch 1 (50 tokens, 49 pixels) costs as
//!   much as the product: its products run at 72–78% of the CPU's FP32 peak at those sizes,
//!   these at 86–97% (2 threads, Zen 4). Without AVX-512 an AVX2+FMA kernel (6 rows × 16
//!   columns, the same sums in the same order) takes the same panels; without AVX2 f32 stays
//!   with `gemm`.
//! - **bf16**: weights rounded to bf16 (nearest even); each activation row is rounded to bf16 too
//!   and pairs of products are summed in f32 (AVX-512 BF16's `vdpbf16ps`, as oneDNN's bf16 path
//!   does). Half the weight memory.
//! - **int8**: dynamic quantization like ONNX Runtime's `quantize_dynamic`: weights symmetric
//!   int8 with one scale per output channel, fixed at load; activations asymmetric uint8 with a
//!   scale and zero point computed at run time — per row here (ORT uses one per tensor, which
//!   loses more where rows differ in range, e.g. the class token against patch tokens).
//!   Products are summed exactly in i32 (AVX-512 VNNI's `vpdpbusd`) and rescaled once:
//!   `y = s_x·s_w·(Σ q_x·q_w − z_x·Σ q_w) + b`. A quarter of the weight memory.
//!
//! Hand-written because no crate in reach multiplies these types on the CPU, or takes a weight
//! packed once: `gemm` takes f16/f32/f64 only and packs per call, and burn-flex converts bf16 and quantized tensors to f32 before its matmul
//! (no speed or memory gain). The micro-kernels hold a 6-row × 64-column tile in 24 registers
//! over weights packed once at load into panels of 16 columns; on CPUs without AVX-512 BF16 or
//! VNNI (or with `CLIP_NO_AVX512=1`) a portable kernel computes the same sums in the same order
//! (bit-identical for int8, whose sums are exact integers).

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

mod kernels;
pub use kernels::fast_kernels;
use kernels::{Span, Tile, bf16_bits, kernel, pack_row_bf16, quantize_row};

/// Whether [`PackedLinear`] serves `precision` on this CPU: always for bf16 and int8 (the
/// portable kernel where the CPU lacks the instructions); for f32 only where its AVX-512 or
/// AVX2+FMA kernel runs, since elsewhere `gemm` is faster than the portable loop.
pub fn packs(precision: Precision) -> bool {
    precision != Precision::F32 || fast_kernels(Precision::F32)
}

/// The numeric precision of inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// single precision throughout (the reference's numbers)
    #[default]
    F32,
    /// bf16 weights and matmul inputs, f32 accumulation
    Bf16,
    /// int8 weights (per-channel scales), uint8 activations (per-row scales), i32 accumulation
    Int8,
}

impl Precision {
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "int8"];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "i8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision '{s}' (known: {})",
                Precision::NAMES.join(", ")
            )),
        }
    }
}

/// Columns per weight panel (one 512-bit vector of f32 or i32 lanes).
const LANES: usize = 16;
/// Rows per micro-tile.
const MR: usize = 6;
/// Panels per micro-tile (64 columns): 6 × 4 accumulators + 4 weight vectors + 1 broadcast fit
/// in the 32 vector registers.
const NV: usize = 4;
/// Rows per parallel task (a multiple of `MR`).
const ROW_BLOCK: usize = 16 * MR;
/// Packed steps per pass over a task's rows: the weights' `KC × 64` block (64 KiB in f32) stays in
/// L2 while every row tile of the task uses it; the partial sums wait in the tiles, stored and
/// reloaded as they are (the same sums, in the same order, as one pass over all steps). Without
/// it a 3×3 convolution of RN50's last stage (4,608 inputs, 1.2 MB per 64 columns) streamed its
/// weights from L3 once per 6 rows.
const KC: usize = 256;

/// Weights packed by panel: for panel `p` and step `t`, 16 `u32` (one per column) each holding
/// the column's values at `per` consecutive input indices (2 bf16 or 4 int8, low bits first).
enum Weights {
    /// f32 bits, one input index per step: the layout that spares `gemm` packing the weight at
    /// every call (see [`PackedLinear::new`])
    F32(Vec<u32>),
    Bf16(Vec<u32>),
    Int8 {
        q: Vec<u32>,
        /// per output column
        scale: Vec<f32>,
        /// per output column: Σ_k q[k][j]
        sum: Vec<i32>,
    },
}

/// A `[k, n]` weight (input × output, row-major: burn's linear layout and the folded
/// convolutions' `[kh][kw][in][out]`) in reduced precision, with its bias.
pub struct PackedLinear {
    k: usize,
    n: usize,
    /// input values per packed step: 1 (f32), 2 (bf16) or 4 (int8)
    per: usize,
    bias: Vec<f32>,
    w: Weights,
}

impl fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedLinear({}, {}×{})",
            self.precision(),
            self.k,
            self.n
        )
    }
}

impl PackedLinear {
    /// Pack `w` (`k×n`, row-major) and `bias` (`n` values, or none) for `precision`. f32 weights
    /// keep their values and change only their layout (panels of 16 columns): worth it only
    /// where [`fast_kernels`] is true, which callers check (the portable kernel is the
    /// reference, not a fast path). Panics when the slices do not have those sizes (callers
    /// pass tensors whose shapes the loader checked).
    pub fn new(
        w: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        precision: Precision,
    ) -> PackedLinear {
        assert_eq!(w.len(), k * n, "weight is not {k}×{n}");
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), n, "bias is not {n} values");
                b.to_vec()
            }
            None => vec![0.0; n],
        };
        let per = match precision {
            Precision::F32 => 1,
            Precision::Bf16 => 2,
            Precision::Int8 => 4,
        };
        let steps = k.div_ceil(per);
        let panels = n.div_ceil(LANES);
        let pack = |value: &(dyn Fn(usize, usize) -> u32 + Sync)| -> Vec<u32> {
            let mut out = vec![0u32; panels * steps * LANES];
            out.par_chunks_mut(steps * LANES)
                .enumerate()
                .for_each(|(p, panel)| {
                    for t in 0..steps {
                        for l in 0..LANES {
                            let j = p * LANES + l;
                            let mut word = 0u32;
                            for i in 0..per {
                                let kk = t * per + i;
                                if kk < k && j < n {
                                    word |= value(kk, j) << (i * 32 / per);
                                }
                            }
                            panel[t * LANES + l] = word;
                        }
                    }
                });
            out
        };
        let w = match precision {
            Precision::F32 => {
                // a copy of 16-column rows (the general loop's closure per value took ~1 s on
                // ViT-B-32's 150 M weights)
                let mut out = vec![0u32; panels * steps * LANES];
                out.par_chunks_mut(steps * LANES)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        let (c0, cols) = (p * LANES, (n - p * LANES).min(LANES));
                        for (t, dst) in panel.chunks_exact_mut(LANES).enumerate() {
                            for (d, v) in dst.iter_mut().zip(&w[t * n + c0..t * n + c0 + cols]) {
                                *d = v.to_bits();
                            }
                        }
                    });
                Weights::F32(out)
            }
            Precision::Bf16 => Weights::Bf16(pack(&|kk, j| bf16_bits(w[kk * n + j]))),
            Precision::Int8 => {
                // per column: the largest magnitude (row by row, so that memory is read in order)
                let mut max = vec![0f32; n];
                for row in w.chunks_exact(n.max(1)) {
                    for (m, v) in max.iter_mut().zip(row) {
                        *m = m.max(v.abs());
                    }
                }
                let scale: Vec<f32> = max
                    .iter()
                    .map(|&m| {
                        if m > 0.0 && m.is_finite() {
                            m / 127.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                // each weight quantized once, row-major
                let mut quant = vec![0i8; k * n];
                quant
                    .par_chunks_mut(n.max(1))
                    .zip(w.par_chunks(n.max(1)))
                    .for_each(|(q, row)| {
                        for ((q, v), s) in q.iter_mut().zip(row).zip(&scale) {
                            *q = (v / s).round().clamp(-127.0, 127.0) as i8;
                        }
                    });
                let mut sum = vec![0i32; n];
                for row in quant.chunks_exact(n.max(1)) {
                    for (s, &q) in sum.iter_mut().zip(row) {
                        *s += q as i32;
                    }
                }
                let q = pack(&|kk, j| quant[kk * n + j] as u8 as u32);
                Weights::Int8 { q, scale, sum }
            }
        };
        PackedLinear { k, n, per, bias, w }
    }

    pub fn precision(&self) -> Precision {
        match self.w {
            Weights::F32(_) => Precision::F32,
            Weights::Bf16(_) => Precision::Bf16,
            Weights::Int8 { .. } => Precision::Int8,
        }
    }

    /// Input size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output size.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held (packed weights, scales, sums and bias).
    pub fn bytes(&self) -> usize {
        let w = match &self.w {
            Weights::F32(q) | Weights::Bf16(q) => q.len() * 4,
            Weights::Int8 { q, scale, sum } => q.len() * 4 + scale.len() * 4 + sum.len() * 4,
        };
        w + self.bias.len() * 4
    }

    fn steps(&self) -> usize {
        self.k.div_ceil(self.per)
    }

    /// `y[m×n] = x[m×k] · W + b` with `x` row-major.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.n];
        self.matmul_into(m, x, self.k, &mut y, Epilogue::BIAS);
        y
    }

    /// `dst[m×n] = [relu]([dst +] x · W [+ b])`: rows of `x` start `ld` values apart
    /// (`ld ≥ k`); `dst` is row-major; `then` says which of the bracketed parts apply, done as
    /// each tile is written (no pass over `dst` of its own). Runs on all of rayon's threads.
    /// Panics when a slice is too short.
    pub fn matmul_into(&self, m: usize, x: &[f32], ld: usize, dst: &mut [f32], then: Epilogue) {
        let (k, n) = (self.k, self.n);
        assert!(ld >= k, "row stride {ld} is below the row length {k}");
        assert!(dst.len() >= m * n, "output holds fewer than {m}×{n} values");
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            x.len() >= (m - 1) * ld + k,
            "input holds fewer than {m} rows of {k}"
        );
        let fast = fast_kernels(self.precision());
        let steps = self.steps();
        // each row of x rounded or quantized once, into `steps` packed words (f32 rows are read
        // where they are, `ld` apart)
        let packed: Vec<u32>;
        let mut row_scale = vec![(1f32, 0i32); m];
        let (a, lda): (&[u32], usize) = match self.w {
            Weights::F32(_) => {
                // SAFETY: f32 and u32 have the same size and alignment; the kernels read these
                // words back as f32 bits.
                let bits = unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u32>(), x.len()) };
                (bits, ld)
            }
            Weights::Bf16(_) => {
                let mut words = vec![0u32; m * steps];
                words
                    .par_chunks_mut(steps)
                    .enumerate()
                    .for_each(|(r, out)| pack_row_bf16(&x[r * ld..r * ld + k], out));
                packed = words;
                (&packed, steps)
            }
            Weights::Int8 { .. } => {
                let mut words = vec![0u32; m * steps];
                words
                    .par_chunks_mut(steps)
                    .zip(row_scale.par_iter_mut())
                    .enumerate()
                    .for_each(|(r, (out, s))| *s = quantize_row(&x[r * ld..r * ld + k], out));
                packed = words;
                (&packed, steps)
            }
        };
        let col_blocks = n.div_ceil(NV * LANES);
        let row_blocks = m.div_ceil(ROW_BLOCK);
        let out = SharedOut(dst.as_mut_ptr());
        (0..row_blocks * col_blocks)
            .into_par_iter()
            .for_each(|task| {
                let (rb, cb) = (task / col_blocks, task % col_blocks);
                let c0 = cb * NV * LANES;
                let panels = (n - c0).div_ceil(LANES).min(NV);
                let (r_start, r_end) = (rb * ROW_BLOCK, ((rb + 1) * ROW_BLOCK).min(m));
                let tiles_here = (r_end - r_start).div_ceil(MR);
                // the first pass over the steps overwrites the rows and panels that later passes
                // and `finish` read
                let mut tiles: Vec<Tile> = (0..tiles_here).map(|_| Tile::default()).collect();
                for k0 in (0..steps).step_by(KC) {
                    let len = KC.min(steps - k0);
                    for (ti, tile) in tiles.iter_mut().enumerate() {
                        let r0 = r_start + ti * MR;
                        let rows = (r_end - r0).min(MR);
                        let span = Span {
                            k0,
                            len,
                            first: k0 == 0,
                        };
                        self.tile(
                            &a[r0 * lda..],
                            lda,
                            rows,
                            c0 / LANES,
                            panels,
                            span,
                            fast,
                            tile,
                        );
                    }
                }
                let cols = (n - c0).min(panels * LANES);
                for (ti, tile) in tiles.iter().enumerate() {
                    let r0 = r_start + ti * MR;
                    for r in 0..(r_end - r0).min(MR) {
                        // SAFETY: tasks cover disjoint (row block × column block) rectangles of
                        // `dst`, checked above to hold m×n values; this task writes only row
                        // r0 + r < m, columns c0 .. c0 + cols ≤ n.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.get().add((r0 + r) * n + c0), cols)
                        };
                        self.finish(tile, r, c0, row_scale[r0 + r], row, then);
                    }
                }
            });
    }

    /// One micro-tile: `rows` rows of packed activations (`lda` words apart) × `panels` panels
    /// from `p0`, over the steps of `span`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        a: &[u32],
        lda: usize,
        rows: usize,
        p0: usize,
        panels: usize,
        span: Span,
        fast: bool,
        tile: &mut Tile,
    ) {
        let steps = self.steps();
        let (Weights::F32(w) | Weights::Bf16(w) | Weights::Int8 { q: w, .. }) = &self.w;
        let kind = self.precision();
        let b = &w[p0 * steps * LANES..(p0 + panels) * steps * LANES];
        let a = &a[..(rows - 1) * lda + steps];
        macro_rules! go {
            ($r:literal, $v:literal) => {
                kernel::<$r, $v>(a, lda, b, steps, span, kind, fast, tile)
            };
        }
        macro_rules! by_panels {
            ($r:literal) => {
                match panels {
                    1 => go!($r, 1),
                    2 => go!($r, 2),
                    3 => go!($r, 3),
                    _ => go!($r, 4),
                }
            };
        }
        match rows {
            1 => by_panels!(1),
            2 => by_panels!(2),
            3 => by_panels!(3),
            4 => by_panels!(4),
            5 => by_panels!(5),
            _ => by_panels!(6),
        }
    }

    /// Row `r` of a finished tile into `out` (columns `c0..`): rescaled (int8), then `then`.
    fn finish(
        &self,
        tile: &Tile,
        r: usize,
        c0: usize,
        (sx, zx): (f32, i32),
        out: &mut [f32],
        then: Epilogue,
    ) {
        let cols = out.len();
        let bias = if then.bias {
            &self.bias[c0..c0 + cols]
        } else {
            &[][..]
        };
        let mut v = [0f32; NV * LANES];
        let sums = match &self.w {
            Weights::F32(_) | Weights::Bf16(_) => &tile.f[r][..cols],
            Weights::Int8 { scale, sum, .. } => {
                for (j, v) in v[..cols].iter_mut().enumerate() {
                    let exact = tile.i[r][j] - zx * sum[c0 + j];
                    *v = exact as f32 * (sx * scale[c0 + j]);
                }
                &v[..cols]
            }
        };
        kernels::add_row(sums, bias, out, then.accumulate, then.relu)
    }
}

/// What [`PackedLinear::matmul_into`] does with each product as it writes it:
/// `dst = [relu]([dst +] product [+ bias])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epilogue {
    /// add to what `dst` holds (else overwrite it)
    pub accumulate: bool,
    /// add the layer's bias
    pub bias: bool,
    /// `max(·, 0)` last (NaN stays NaN, as PyTorch's ReLU)
    pub relu: bool,
}

impl Epilogue {
    /// `dst = product + bias` (a linear layer).
    pub const BIAS: Epilogue = Epilogue {
        accumulate: false,
        bias: true,
        relu: false,
    };
}

/// The output pointer shared by the tasks of one product (each writes its own rectangle).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint parts of the buffer, which outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::{bf16_value, quantize_row_with};
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        // a fixed pseudo-random sequence in [-1, 1) with a few larger values
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
                if i % 97 == 0 { 4.0 * v } else { v }
            })
            .collect()
    }

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = b[j] as f64
                    + (0..k)
                        .map(|i| x[r * k + i] as f64 * w[i * n + j] as f64)
                        .sum::<f64>();
            }
        }
        y
    }

    /// The error each output may have: from rounding x and w (half a quantization step each, or
    /// bf16's relative 2^-9) plus f32 summation, per output.
    fn bound(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, p: Precision) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            let row = &x[r * k..(r + 1) * k];
            let (lo, hi) = row
                .iter()
                .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            let sx = ((hi - lo) / 255.0) as f64;
            for j in 0..n {
                let sw = (0..k).map(|i| w[i * n + j].abs()).fold(0f32, f32::max) as f64 / 127.0;
                let mut b = 0f64;
                for i in 0..k {
                    let (xv, wv) = (x[r * k + i].abs() as f64, w[i * n + j].abs() as f64);
                    b += match p {
                        Precision::F32 => 0.0,
                        Precision::Bf16 => xv * wv * (2.0 * 2f64.powi(-9) + 2f64.powi(-18)),
                        Precision::Int8 => xv * sw / 2.0 + wv * sx / 2.0 + sx * sw / 4.0,
                    } + xv * wv * k as f64 * f32::EPSILON as f64;
                }
                out[r * n + j] = b + 1e-6;
            }
        }
        out
    }

    #[test]
    fn names_parse_and_unknown_ones_are_listed() {
        assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        let e = "fp8".parse::<Precision>().unwrap_err();
        assert!(e.contains("'fp8'") && e.contains("f32, bf16, int8"), "{e}");
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one (1)
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even)
        assert_eq!(bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn quantized_rows_reconstruct_within_half_a_step() {
        let x = data(37, 3);
        let mut q = vec![0u32; 10];
        let (s, z) = quantize_row(&x, &mut q);
        let bytes: Vec<u8> = q.iter().flat_map(|w| w.to_le_bytes()).collect();
        for (i, &v) in x.iter().enumerate() {
            let back = s * (bytes[i] as i32 - z) as f32;
            assert!((back - v).abs() <= 0.5 * s + 1e-6, "{i}: {v} → {back}");
        }
        assert_eq!(bytes[37..40], [0; 3], "padding bytes are zero");
        // a constant-zero row quantizes to zeros with scale 1
        assert_eq!(quantize_row(&[0.0; 8], &mut q[..2]), (1.0, 0));
    }

    /// Sizes that exercise every tile shape: rows not a multiple of 6, columns not a multiple
    /// of 16 or 64, input sizes not a multiple of 2 or 4, more than one row block, and more
    /// steps than one pass takes (`KC`) in every precision.
    const SHAPES: [(usize, usize, usize); 5] = [
        (1, 7, 5),
        (13, 45, 70),
        (50, 67, 130),
        (200, 9, 33),
        (5, 1100, 20),
    ];

    #[test]
    fn products_match_f64_within_each_precisions_error() {
        for (m, k, n) in SHAPES {
            let (x, w, b) = (data(m * k, 1), data(k * n, 2), data(n, 3));
            let want = reference(&x, &w, &b, m, k, n);
            for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
                let packed = PackedLinear::new(&w, k, n, Some(&b), p);
                let got = packed.forward(&x, m);
                let bound = bound(&x, &w, m, k, n, p);
                let mut inexact = false;
                for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                    let e = (*g as f64 - v).abs();
                    assert!(
                        e <= bound[i],
                        "{p} {m}×{k}×{n} [{i}]: {g} vs {v} (bound {})",
                        bound[i]
                    );
                    inexact |= e > 1e-5 * v.abs();
                }
                assert!(
                    inexact || p == Precision::F32,
                    "{p} gave f32's exact results: nothing was rounded"
                );
            }
        }
    }

    #[test]
    fn strided_rows_accumulate_without_bias() {
        let (m, k, n, ld) = (9, 20, 33, 29);
        let x = data(m * ld, 4);
        let w = data(k * n, 5);
        let b = vec![100.0; n];
        let dense: Vec<f32> = (0..m)
            .flat_map(|r| x[r * ld..r * ld + k].to_vec())
            .collect();
        for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
            let packed = PackedLinear::new(&w, k, n, Some(&b), p);
            let plain = packed.forward(&dense, m);
            let mut dst = vec![1.0f32; m * n];
            let then = Epilogue {
                accumulate: true,
                ..Epilogue::default()
            };
            packed.matmul_into(m, &x, ld, &mut dst, then);
            for (d, p) in dst.iter().zip(&plain) {
                assert!((d - (1.0 + p - 100.0)).abs() < 1e-4, "{d} vs {p}");
            }
        }
    }

    #[test]
    fn fast_and_portable_quantization_agree() {
        if !fast_kernels(Precision::Int8) {
            eprintln!("no AVX-512 quantizer on this CPU");
            return;
        }
        for len in [1, 15, 16, 17, 64, 333] {
            let x = data(len, len as u32);
            let (mut a, mut b) = (vec![0u32; len.div_ceil(4)], vec![0u32; len.div_ceil(4)]);
            assert_eq!(
                quantize_row_with(true, &x, &mut a),
                quantize_row_with(false, &x, &mut b)
            );
            assert_eq!(a, b, "length {len}");
        }
    }

    /// The AVX2 f32 kernel (what a CPU without AVX-512 runs): these tests again in a child
    /// process with `CLIP_NO_AVX512=1`, where `fast_and_portable_kernels_agree` compares it bit
    /// for bit with the portable loop.
    #[test]
    fn avx2_kernel_passes_the_same_checks() {
        if std::env::var_os("CLIP_NO_AVX512").is_some() {
            assert!(fast_kernels(Precision::F32) && !fast_kernels(Precision::Int8));
            return;
        }
        if let Some(passed) = crate::fastmath::rerun_tests_without_avx512("lowp::tests::") {
            assert!(passed >= 7, "the child ran {passed} tests");
        }
    }

    #[test]
    fn fast_and_portable_kernels_agree() {
        for (m, k, n) in SHAPES {
            let (x, w) = (data(m * k, 6), data(k * n, 7));
            for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
                if !fast_kernels(p) {
                    eprintln!(
                        "{p}: this CPU has no vector kernel for it; only the portable one ran"
                    );
                    continue;
                }
                let packed = PackedLinear::new(&w, k, n, None, p);
                let steps = packed.steps();
                let mut a = vec![0u32; m.min(MR) * steps];
                for r in 0..m.min(MR) {
                    match p {
                        Precision::F32 => {
                            for (o, v) in a[r * steps..][..steps].iter_mut().zip(&x[r * k..]) {
                                *o = v.to_bits();
                            }
                        }
                        Precision::Bf16 => {
                            pack_row_bf16(&x[r * k..(r + 1) * k], &mut a[r * steps..][..steps])
                        }
                        _ => {
                            quantize_row(&x[r * k..(r + 1) * k], &mut a[r * steps..][..steps]);
                        }
                    }
                }
                let panels = n.div_ceil(LANES).min(NV);
                let rows = m.min(MR);
                let (mut fast, mut slow) = (Tile::default(), Tile::default());
                let all = Span::all(steps);
                packed.tile(&a, steps, rows, 0, panels, all, true, &mut fast);
                packed.tile(&a, steps, rows, 0, panels, all, false, &mut slow);
                // the steps in two passes, the partial sums kept in the tile: the same bits
                let half = steps / 2;
                let mut split = Tile::default();
                for (k0, len, first) in [(0, half, true), (half, steps - half, false)] {
                    let span = Span { k0, len, first };
                    packed.tile(&a, steps, rows, 0, panels, span, true, &mut split);
                }
                for r in 0..rows {
                    assert_eq!(split.i[r], fast.i[r], "{p} int sums in two passes, row {r}");
                    assert_eq!(split.f[r], fast.f[r], "{p} sums in two passes, row {r}");
                }
                for r in 0..rows {
                    assert_eq!(fast.i[r], slow.i[r], "{p} int sums, row {r}");
                    if p == Precision::F32 {
                        // one fused multiply-add per step, in the same order: the same bits
                        assert_eq!(fast.f[r], slow.f[r], "f32 sums, row {r}");
                    }
                    for (f, s) in fast.f[r].iter().zip(&slow.f[r]) {
                        assert!((f - s).abs() <= 1e-5 * (1.0 + s.abs()), "{p}: {f} vs {s}");
                    }
                }
            }
        }
    }
}
