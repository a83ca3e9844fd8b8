//! Running a packed product: the rows of activations (a matrix, or a convolution's taps read
//! in place), the split into parallel tasks and micro-tiles, the passes over blocks of steps, and
//! what each finished tile does to the output ([`Epilogue`]).

use rayon::prelude::*;

use super::kernels::{self, Span, Tile, kernel, pack_row_bf16, quantize_row};
use super::{LANES, MR, NV, PackedLinear, Weights, fast_kernels};

/// Rows per parallel task at most (a multiple of `MR`); [`row_block`] evens them out.
pub(super) const ROW_BLOCK: usize = 16 * MR;

/// Rows per parallel task for `m` rows: as few blocks as `ROW_BLOCK` allows, of equal size (a
/// multiple of `MR`), so that the last one is not a sliver that leaves a thread idle (800 rows,
/// ViT-B-32 at batch 16: 9 blocks of 90 instead of 8 of 96 and one of 32; +4–8% there, and +3–5%
/// on RN50 at batch 16, in 3 interleaved pairs on 2 threads of an AMD EPYC). Which rows a task
/// takes does not change any row's sums.
pub(super) fn row_block(m: usize) -> usize {
    let blocks = m.div_ceil(ROW_BLOCK).max(1);
    m.div_ceil(blocks).div_ceil(MR).max(1) * MR
}
/// Packed steps per pass over a task's rows: the weights' `KC × 64` block (256 KiB in f32) stays
/// in L2 while every row tile of the task uses it; the partial sums wait in the tiles, stored and
/// reloaded as they are (the same sums, in the same order, as one pass over all steps). Without
/// it a 3×3 convolution of RN50's last stage (4,608 inputs, 1.2 MB per 64 columns) streamed its
/// weights from L3 once per 6 rows. 1,024 rather than 256 (a block that fit a smaller L2): +5–7%
/// on ViT-B-32's and RN50's products, +3–10% on their f32 towers, bf16 and int8 unchanged, on an
/// AVX-512 EPYC with 1 MiB of L2 per core; 128 was 2–6% slower, 2,048 no better than 1,024.
pub(super) const KC: usize = 1024;

impl PackedLinear {
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
        let k = self.k;
        assert!(ld >= k, "row stride {ld} is below the row length {k}");
        self.check_dst(m, dst);
        if m == 0 || self.n == 0 {
            return;
        }
        assert!(
            (m - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(k))
                .is_some_and(|len| x.len() >= len),
            "input holds fewer than {m} rows of {k}, {ld} apart"
        );
        let steps = self.steps();
        // each row of x rounded or quantized once, into `steps` packed words (f32 rows are read
        // where they are, `ld` apart)
        match self.w {
            Weights::F32(_) => self.product(m, f32_bits(x), Rows::Dense { ld }, None, dst, then),
            Weights::Bf16(_) => {
                let mut words = vec![0u32; m * steps];
                words
                    .par_chunks_mut(steps)
                    .enumerate()
                    .for_each(|(r, out)| pack_row_bf16(&x[r * ld..r * ld + k], out));
                self.product(m, &words, Rows::Dense { ld: steps }, None, dst, then)
            }
            Weights::Int8 { .. } => {
                let mut words = vec![0u32; m * steps];
                let mut row_scale = vec![(1f32, 0i32); m];
                words
                    .par_chunks_mut(steps)
                    .zip(row_scale.par_iter_mut())
                    .enumerate()
                    .for_each(|(r, (out, s))| *s = quantize_row(&x[r * ld..r * ld + k], out));
                let rows = Rows::Dense { ld: steps };
                self.product(m, &words, rows, Some(&row_scale), dst, then)
            }
        }
    }

    /// Whether [`PackedLinear::conv_into`] serves these weights: f32 and bf16 (int8 quantizes
    /// each im2col row with its own scale, which only a gathered row has).
    pub fn convolves(&self) -> bool {
        !matches!(self.w, Weights::Int8 { .. })
    }

    /// A convolution as one product without an im2col copy: output row `r`'s inputs for tap `j`
    /// are the `c = k / taps.len()` values of `x` from `pixel[r] + taps[j]` (`x` a channels-last
    /// image with a zero border wide enough that every tap lands inside it). The same sums in the
    /// same order as [`PackedLinear::matmul_into`] on the gathered rows `[tap 0 | tap 1 | …]`,
    /// so the same bits; `then` as there. bf16 needs even `c`, offsets and length (each word
    /// then holds the pair the gathered row would). Panics for int8 ([`PackedLinear::convolves`]),
    /// or when an offset reaches past `x` or `dst` is short.
    pub fn conv_into(
        &self,
        x: &[f32],
        pixel: &[usize],
        taps: &[usize],
        dst: &mut [f32],
        then: Epilogue,
    ) {
        let m = pixel.len();
        assert!(
            !taps.is_empty() && self.k.is_multiple_of(taps.len()),
            "{} inputs are not {} taps of whole pixels",
            self.k,
            taps.len()
        );
        assert!(self.convolves(), "int8 convolutions take gathered rows");
        self.check_dst(m, dst);
        let c = self.k / taps.len();
        // the farthest pixel's farthest tap, summed without wrapping
        let (far_pixel, far_tap) = (pixel.iter().max(), taps.iter().max());
        let reach = far_pixel
            .zip(far_tap)
            .map(|(p, t)| p.checked_add(*t)?.checked_add(c));
        assert!(
            reach.is_none_or(|end| end.is_some_and(|e| e <= x.len())),
            "a tap reaches past the input"
        );
        if m == 0 || self.n == 0 {
            return;
        }
        match self.w {
            Weights::F32(_) => {
                let rows = Rows::Taps {
                    pixel,
                    taps,
                    per_tap: c,
                    unit: 1,
                };
                self.product(m, f32_bits(x), rows, None, dst, then)
            }
            _ => {
                let even = c.is_multiple_of(2) && x.len().is_multiple_of(2);
                assert!(
                    even && pixel.iter().chain(taps).all(|o| o.is_multiple_of(2)),
                    "bf16 convolutions need pixels of whole words"
                );
                let mut words = vec![0u32; x.len() / 2];
                words
                    .par_chunks_mut(1 << 12)
                    .zip(x.par_chunks(1 << 13))
                    .for_each(|(out, x)| pack_row_bf16(x, out));
                let rows = Rows::Taps {
                    pixel,
                    taps,
                    per_tap: c / 2,
                    unit: 2,
                };
                self.product(m, &words, rows, None, dst, then)
            }
        }
    }

    fn check_dst(&self, m: usize, dst: &[f32]) {
        let n = self.n;
        // sizes checked without wrapping: a stride near usize::MAX must not pass as a small one
        assert!(
            m.checked_mul(n).is_some_and(|len| dst.len() >= len),
            "output holds fewer than {m}×{n} values"
        );
    }

    /// The product over packed activation words `a` whose rows `rows` places, on all of rayon's
    /// threads; `row_scale` holds int8's per-row scale and zero point.
    fn product(
        &self,
        m: usize,
        a: &[u32],
        rows: Rows,
        row_scale: Option<&[(f32, i32)]>,
        dst: &mut [f32],
        then: Epilogue,
    ) {
        let n = self.n;
        let fast = fast_kernels(self.precision());
        let steps = self.steps();
        let col_blocks = n.div_ceil(NV * LANES);
        let rows_per_task = row_block(m);
        let row_blocks = m.div_ceil(rows_per_task);
        let out = SharedOut(dst.as_mut_ptr());
        // consecutive tasks (which rayon hands to the same thread) share the larger operand's
        // block: a row block's activations where there are more rows than columns, else a
        // column block's weights (layers of few pixels or tokens, whose weights stream from
        // memory once instead of once per row block)
        let rows_outer = m >= n;
        (0..row_blocks * col_blocks)
            .into_par_iter()
            .for_each(|task| {
                let (rb, cb) = if rows_outer {
                    (task / col_blocks, task % col_blocks)
                } else {
                    (task % row_blocks, task / row_blocks)
                };
                let c0 = cb * NV * LANES;
                let panels = (n - c0).div_ceil(LANES).min(NV);
                let (r_start, r_end) = (rb * rows_per_task, ((rb + 1) * rows_per_task).min(m));
                let tiles_here = (r_end - r_start).div_ceil(MR);
                // Over one pass each tile is finished as soon as it is computed, through one
                // scratch tile; over several, every tile's sums wait in a tile of their own (the
                // first pass overwrites the rows and panels that later passes and `finish`
                // read). Tiles allocated and zeroed for every task cost as much as the products
                // of 64 inputs (3 KiB each, 16 per task).
                let passes = steps.div_ceil(KC);
                let mut tiles: Vec<Tile> = (0..if passes > 1 { tiles_here } else { 1 })
                    .map(|_| Tile::default())
                    .collect();
                // tiles the kernel finished into `dst` itself (several passes)
                let mut written = vec![false; if passes > 1 { tiles_here } else { 0 }];
                let cols = (n - c0).min(panels * LANES);
                let bias = then.bias.then(|| self.bias[c0..].as_ptr());
                // the rows of tile `ti` (which starts at row r0) into `dst`
                let finish_tile = |tile: &Tile, r0: usize| {
                    for r in 0..(r_end - r0).min(MR) {
                        // SAFETY: tasks cover disjoint (row block × column block) rectangles of
                        // `dst`, checked to hold m×n values; this task writes only row
                        // r0 + r < m, columns c0 .. c0 + cols ≤ n.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.get().add((r0 + r) * n + c0), cols)
                        };
                        let scale = row_scale.map_or((1.0, 0), |s| s[r0 + r]);
                        self.finish(tile, r, c0, scale, row, then);
                    }
                };
                let mut runs = Vec::new();
                for k0 in (0..steps).step_by(KC) {
                    let end = (k0 + KC).min(steps);
                    rows.runs(k0, end, &mut runs);
                    let span = Span {
                        k0,
                        len: end - k0,
                        first: k0 == 0,
                    };
                    for ti in 0..tiles_here {
                        let r0 = r_start + ti * MR;
                        let count = (r_end - r0).min(MR);
                        let base = |r: usize| rows.base(r0 + r);
                        // the output rows, for the last pass: as for `finish_tile`, row
                        // r0 + r < m of this task's rectangle, `cols` values from c0
                        let row = |r: usize| out.get().wrapping_add((r0 + r) * n + c0);
                        let direct = (end == steps).then_some(DirectTo {
                            row: &row,
                            cols,
                            bias,
                            then,
                        });
                        let tiling = (count, c0 / LANES, panels);
                        let tile = &mut tiles[if passes > 1 { ti } else { 0 }];
                        let done = self.tile(a, &base, &runs, tiling, span, fast, tile, direct);
                        if passes > 1 {
                            written[ti] = done;
                        } else if !done {
                            finish_tile(tile, r0);
                        }
                    }
                }
                if passes > 1 {
                    for (ti, tile) in tiles.iter().enumerate() {
                        if !written[ti] {
                            finish_tile(tile, r_start + ti * MR);
                        }
                    }
                }
            });
    }

    /// One micro-tile: `rows` rows of packed activations (row `r`'s words for the span are the
    /// `runs` from `a[base(r)]`, see [`kernels::kernel`]) × `panels` panels from `p0`, over the
    /// steps of `span`.
    /// With `direct` the kernel may finish the tile into the output itself (then true).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile(
        &self,
        a: &[u32],
        base: &dyn Fn(usize) -> usize,
        runs: &[(usize, usize)],
        (rows, p0, panels): (usize, usize, usize),
        span: Span,
        fast: bool,
        tile: &mut Tile,
        direct: Option<DirectTo>,
    ) -> bool {
        let steps = self.steps();
        let (Weights::F32(w) | Weights::Bf16(w) | Weights::Int8 { q: w, .. }) = &self.w;
        let kind = self.precision();
        let b = &w[p0 * steps * LANES..(p0 + panels) * steps * LANES];
        macro_rules! go {
            ($r:literal, $v:literal) => {
                kernel::<$r, $v>(
                    a,
                    std::array::from_fn(base),
                    runs,
                    b,
                    steps,
                    span,
                    kind,
                    fast,
                    tile,
                    direct
                        .map(|d| kernels::Direct::<$r> {
                            rows: std::array::from_fn(d.row),
                            cols: d.cols,
                            bias: d.bias,
                            accumulate: d.then.accumulate,
                            relu: d.then.relu,
                        })
                        .as_ref(),
                )
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
    pub(super) fn finish(
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

/// Where each row of a product's packed activations lies.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// row `r`, step `t` at `r·ld + t`
    Dense { ld: usize },
    /// a convolution's implicit im2col: row `r`, step `t` at
    /// `(pixel[r] + taps[t / per_tap]) / unit + t % per_tap` (`unit` values per word)
    Taps {
        pixel: &'a [usize],
        taps: &'a [usize],
        per_tap: usize,
        unit: usize,
    },
}

impl Rows<'_> {
    /// Where row `r`'s words are counted from.
    fn base(&self, r: usize) -> usize {
        match *self {
            Rows::Dense { ld } => r * ld,
            Rows::Taps { pixel, unit, .. } => pixel[r] / unit,
        }
    }

    /// Steps `k0 .. end` as runs `(offset from a row's base, steps)` that lie together in every
    /// row, into `out`.
    fn runs(&self, k0: usize, end: usize, out: &mut Vec<(usize, usize)>) {
        out.clear();
        match *self {
            Rows::Dense { .. } => out.push((k0, end - k0)),
            Rows::Taps {
                taps,
                per_tap,
                unit,
                ..
            } => {
                let mut t = k0;
                while t < end {
                    let (tap, within) = (t / per_tap, t % per_tap);
                    let len = (per_tap - within).min(end - t);
                    out.push((taps[tap] / unit + within, len));
                    t += len;
                }
            }
        }
    }
}

/// Where a tile's last pass may write its rows (see [`kernels::Direct`]).
#[derive(Clone, Copy)]
pub(super) struct DirectTo<'a> {
    pub(super) row: &'a dyn Fn(usize) -> *mut f32,
    pub(super) cols: usize,
    pub(super) bias: Option<*const f32>,
    pub(super) then: Epilogue,
}

/// f32 values as the words the kernels read.
fn f32_bits(x: &[f32]) -> &[u32] {
    // SAFETY: f32 and u32 have the same size and alignment; the kernels read these words back
    // as f32 bits.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u32>(), x.len()) }
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
