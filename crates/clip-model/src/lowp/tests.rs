//! The packed products against f64, each precision within its rounding error; the vector kernels
//! against the portable one.

use super::kernels::{Isa, avx512_quantizer, bf16_value, isa, quantize_row_with};
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
    (5, 4500, 20),
];

#[test]
fn products_match_f64_within_each_precisions_error() {
    // the last shape takes more than one pass even in int8 (4 inputs per step)
    assert!(SHAPES.iter().any(|&(_, k, _)| k / 4 > KC));
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
    if !avx512_quantizer() {
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

/// The AVX2 kernels (what a CPU without AVX-512 runs): these tests again in a child process
/// with `CLIP_NO_AVX512=1`, where `fast_and_portable_kernels_agree` compares them bit for bit
/// with the portable loop.
#[test]
fn avx2_kernel_passes_the_same_checks() {
    if std::env::var_os("CLIP_NO_AVX512").is_some() {
        for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
            assert_eq!(isa(p), Some(Isa::Avx2), "{p}");
        }
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
                eprintln!("{p}: this CPU has no vector kernel for it; only the portable one ran");
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
            let whole = [(0, steps)];
            // row r's words start at r·steps; the runs say which of them a pass reads
            let tiling = (rows, 0, panels);
            let tile = |runs: &[(usize, usize)], span: Span, fast: bool, out: &mut Tile| {
                packed.tile(&a, &|r| r * steps, runs, tiling, span, fast, out, None)
            };
            tile(&whole, all, true, &mut fast);
            tile(&whole, all, false, &mut slow);
            // the steps in two passes, the partial sums kept in the tile: the same bits
            let half = steps / 2;
            let mut split = Tile::default();
            for (k0, len, first) in [(0, half, true), (half, steps - half, false)] {
                tile(&[(k0, len)], Span { k0, len, first }, true, &mut split);
            }
            // a tile finished straight into its output rows: the bits `finish` writes from the
            // stored tile (bias, accumulation and ReLU in the same order), with and without bias
            let cols = n.min(panels * LANES);
            for bias in [true, false] {
                let then = Epilogue {
                    accumulate: true,
                    bias,
                    relu: true,
                };
                let start = data(rows * cols, 12);
                let (mut direct_out, mut stored_out) = (start.clone(), start);
                let ptr = direct_out.as_mut_ptr();
                let row = |r: usize| ptr.wrapping_add(r * cols);
                let to = DirectTo {
                    row: &row,
                    cols,
                    bias: bias.then_some(packed.bias.as_ptr()),
                    then,
                };
                let base = |r: usize| r * steps;
                let mut scratch = Tile::default();
                let wrote =
                    packed.tile(&a, &base, &whole, tiling, all, true, &mut scratch, Some(to));
                for (r, out) in stored_out.chunks_mut(cols).enumerate() {
                    packed.finish(&fast, r, 0, (1.0, 0), out, then);
                }
                let by_registers = isa(p) == Some(Isa::Avx512) && p != Precision::Int8;
                assert_eq!(
                    wrote, by_registers,
                    "{p}: which kernels finish tiles themselves"
                );
                if wrote {
                    let pairs = || direct_out.iter().zip(&stored_out);
                    assert!(
                        pairs().all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{p}: direct and stored finishes differ"
                    );
                    assert!(pairs().any(|(a, _)| *a == 0.0) && pairs().any(|(a, _)| *a > 0.0));
                }
            }
            for r in 0..rows {
                assert_eq!(split.i[r], fast.i[r], "{p} int sums in two passes, row {r}");
                assert_eq!(split.f[r], fast.f[r], "{p} sums in two passes, row {r}");
            }
            for r in 0..rows {
                assert_eq!(fast.i[r], slow.i[r], "{p} int sums, row {r}");
                if p == Precision::F32 || isa(p) == Some(Isa::Avx2) {
                    // one fused multiply-add per step (AVX2 bf16: per bf16 product, exact in
                    // f32 for this data, none of whose products overflow or underflow), in the
                    // same order: the same bits
                    assert_eq!(fast.f[r], slow.f[r], "{p} sums, row {r}");
                }
                for (f, s) in fast.f[r].iter().zip(&slow.f[r]) {
                    assert!((f - s).abs() <= 1e-5 * (1.0 + s.abs()), "{p}: {f} vs {s}");
                }
            }
        }
    }
}

/// A 3×3 convolution (stride 1 and 2, pad 1) through `conv_into`'s implicit im2col gives the
/// bits of `matmul_into` on the gathered rows, in f32 and bf16, and int8 is refused.
#[test]
fn implicit_im2col_gives_the_gathered_products_bits() {
    // 240 channels: a pass (`KC` steps) ends inside a tap's run in f32 and bf16
    let (n, h, w, c, c_out) = (2, 7, 5, 240, 80);
    assert!((9 * c / 2) > KC && !KC.is_multiple_of(c) && !KC.is_multiple_of(c / 2));
    let (hp, wp) = (h + 2, w + 2);
    // a zero-bordered image, as the ResNet tower builds it
    let inner = data(n * h * w * c, 8);
    let mut padded = vec![0f32; n * hp * wp * c];
    for b in 0..n {
        for y in 0..h {
            let src = &inner[((b * h + y) * w) * c..][..w * c];
            padded[((b * hp + y + 1) * wp + 1) * c..][..w * c].copy_from_slice(src);
        }
    }
    let weight = data(9 * c * c_out, 9);
    let bias = data(c_out, 10);
    let taps: Vec<usize> = (0..9).map(|t| ((t / 3) * wp + t % 3) * c).collect();
    for stride in [1, 2] {
        let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        let pixel: Vec<usize> = (0..n * ho * wo)
            .map(|i| {
                let (b, r) = (i / (ho * wo), i % (ho * wo));
                ((b * hp + (r / wo) * stride) * wp + (r % wo) * stride) * c
            })
            .collect();
        let gathered: Vec<f32> = pixel
            .iter()
            .flat_map(|&p| taps.iter().flat_map(move |&t| p + t..p + t + c))
            .map(|i| padded[i])
            .collect();
        for p in [Precision::F32, Precision::Bf16] {
            let packed = PackedLinear::new(&weight, 9 * c, c_out, Some(&bias), p);
            let then = Epilogue {
                accumulate: true,
                bias: true,
                relu: true,
            };
            let start = data(pixel.len() * c_out, 11);
            let (mut want, mut got) = (start.clone(), start);
            packed.matmul_into(pixel.len(), &gathered, 9 * c, &mut want, then);
            packed.conv_into(&padded, &pixel, &taps, &mut got, then);
            assert!(
                want.iter().any(|v| *v > 0.5),
                "{p}: outputs are not trivial"
            );
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{p}, stride {stride}: implicit and gathered products differ"
            );
        }
    }
    let int8 = PackedLinear::new(&weight, 9 * c, c_out, None, Precision::Int8);
    assert!(!int8.convolves());
    let refused = std::panic::catch_unwind(|| {
        int8.conv_into(&padded, &[0], &taps, &mut vec![0f32; c_out], Epilogue::BIAS)
    });
    assert!(refused.is_err(), "int8 takes gathered rows only");
}

/// A pixel offset whose last tap reaches past the input is refused before any read.
#[test]
#[should_panic(expected = "a tap reaches past the input")]
fn a_tap_past_the_input_is_refused() {
    let (c, n) = (16, 16);
    let packed = PackedLinear::new(&data(2 * c * n, 1), 2 * c, n, None, Precision::F32);
    let x = data(3 * c, 2);
    let mut dst = vec![0f32; n];
    // taps at 0 and 2c: a pixel at c reaches 4c > 3c
    packed.conv_into(&x, &[c], &[0, 2 * c], &mut dst, Epilogue::default());
}

/// A row stride so large that `(m − 1)·ld + k` wraps around `usize` is refused, not read past the
/// input (the size checks must not overflow into a small number).
#[test]
#[should_panic(expected = "input holds fewer than 2 rows")]
fn a_stride_that_wraps_is_refused() {
    let (k, n) = (3, 16);
    let packed = PackedLinear::new(&data(k * n, 1), k, n, None, Precision::F32);
    let x = data(k, 2);
    let mut dst = vec![0f32; 2 * n];
    // (2 − 1)·ld + k wraps to 1
    packed.matmul_into(2, &x, usize::MAX - k + 2, &mut dst, Epilogue::default());
}

#[test]
fn row_blocks_are_even_multiples_of_the_tile() {
    for m in [1, 5, 6, 50, 95, 96, 97, 800, 3136, 50176] {
        let r = row_block(m);
        let blocks = m.div_ceil(r);
        assert!(r.is_multiple_of(MR) && r <= ROW_BLOCK, "{m}: {r}");
        assert_eq!(
            blocks,
            m.div_ceil(ROW_BLOCK),
            "{m}: as few blocks as ROW_BLOCK allows"
        );
        // each block is ⌈m / blocks⌉ rounded up to a tile, so the last one falls short of the
        // others by less than a tile per block
        let last = m - (blocks - 1) * r;
        assert!(
            last + blocks * MR >= r.min(m),
            "{m}: blocks of {r}, the last of {last}"
        );
    }
    // ViT-B-32 at batch 16: 9 blocks of 90 rows, the last of 80 (not 8 of 96 and one of 32)
    assert_eq!(row_block(800), 90);
}
