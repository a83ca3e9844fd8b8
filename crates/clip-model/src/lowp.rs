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
//! packed once: `gemm` takes f16/f32/f64 only and packs per call, and burn-flex converts bf16 and
//! quantized tensors to f32 before its matmul (no speed or memory gain). The AVX-512
//! micro-kernels hold a 6-row × 64-column tile in 24 registers over weights packed once at load
//! into panels of 16 columns. On CPUs without AVX-512 (or with `CLIP_NO_AVX512=1`), and for bf16
//! and int8 on AVX-512 CPUs without BF16 or VNNI, AVX2+FMA kernels take the same panels 16 or 8
//! columns at a time: f32 and bf16 by fused multiply-adds, int8 by widening the bytes to i16 and
//! `vpmaddwd` (exact; `vpmaddubsw` would saturate). They compute the portable kernel's sums in its
//! order, bit for bit for f32 and int8, and for bf16 wherever no product of two bf16 values
//! overflows f32 or falls below its normal range (the fused add then rounds once where the
//! portable loop rounds the product first). Without AVX2 that portable kernel runs.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

mod kernels;
use kernels::bf16_bits;
pub use kernels::fast_kernels;

/// Whether [`PackedLinear`] serves `precision` on this CPU: always for bf16 and int8 (the
/// portable kernel where the CPU has neither AVX-512 nor AVX2); for f32 only where its AVX-512
/// or AVX2+FMA kernel runs, since elsewhere `gemm` is faster than the portable loop.
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
}

mod product;
pub use product::Epilogue;
#[cfg(test)]
use {
    kernels::{Span, Tile, pack_row_bf16, quantize_row},
    product::{DirectTo, KC, ROW_BLOCK, row_block},
};

#[cfg(test)]
mod tests;
