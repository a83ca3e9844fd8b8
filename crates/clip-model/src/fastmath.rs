//! Exact GELU for inference in one vectorised pass. burn-flex computes `x·Φ(x)` value by value
//! through libm's scalar `erff` (branches on the argument's range, no SIMD), which the image-tower
//! profile of issue 11 lists among its costs: ViT-B-32 evaluates it 1.8 million times per image.
//! Here erf is a rational function (Eigen's `generic_fast_erf_float`: odd numerator of degree 13
//! over an even denominator of degree 8 on [-4, 4], ±1 beyond; |error| < 5e-7 against the true
//! erf, see the test) with no branches, so the compiler vectorises the loop; it is compiled for
//! AVX-512 and for AVX2+FMA besides the baseline and picked at run time. No crate offers a
//! vectorised f32 erf over a slice.

use rayon::prelude::*;

/// erf(x) in f32 (clamped to ±1 beyond |x| = 4, where f32's erf is ±1).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_600_2e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// e^x in f32 (Cephes' `expf`: x = n·ln2 + r, a degree-7 polynomial in r, 2^n put in the
/// exponent bits; relative error < 2e-7), with rounding done by adding 1.5·2²³ so that no libm
/// call stops the compiler from vectorising. Arguments are clamped to [-87.3, 88.3] (e^x stays
/// a normal f32).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// QuickGELU, x·σ(1.702x) (OpenAI's weights).
#[inline(always)]
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// GELU, x·Φ(x) = x/2·(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// QuickGELU and its derivative: `(x·s, s + 1.702·x·s·(1 − s))` with `s = σ(1.702x)`.
#[inline(always)]
pub fn quick_gelu_d(x: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + exp(-1.702 * x));
    (x * s, s + 1.702 * x * s * (1.0 - s))
}

/// GELU and its derivative: `(x·Φ(x), Φ(x) + x·φ(x))`.
#[inline(always)]
pub fn gelu_d(x: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = exp(-0.5 * x * x) * 0.398_942_3; // 1/√(2π)
    (x * cdf, cdf + x * pdf)
}

/// `fn $name(kernel, args…)`: `$body` compiled for AVX-512, for AVX2+FMA and for the baseline,
/// the copy run picked by `kernel` (from [`kernel`]); what `$body` calls must be
/// `#[inline(always)]` so that each copy vectorises.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        fn $name(kernel: &str, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the features were detected on this CPU by `kernel()`.
                "avx512" => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                "avx2" => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

/// A function's tangent line at each value, for the training graph (see
/// [`crate::transformer::activation`]): `v` (the inputs) becomes the slopes `f'(x)` and `offset`
/// the offsets `x·f'(x) − f(x)`, one vectorised pass on all threads, picked at run time like
/// [`slice_kernel`]'s.
macro_rules! tangent_kernel {
    ($name:ident, $f:path) => {
        /// Slopes into `v` (which holds the inputs), offsets into `offset` (same length).
        pub fn $name(v: &mut [f32], offset: &mut [f32]) {
            assert_eq!(v.len(), offset.len(), "one offset per value");
            multiversion!(
                fn run(v: &mut [f32], offset: &mut [f32]) {
                    for (x, o) in v.iter_mut().zip(offset) {
                        let (y, d) = $f(*x);
                        *o = *x * d - y;
                        *x = d;
                    }
                }
            );
            let kernel = kernel();
            v.par_chunks_mut(1 << 14)
                .zip(offset.par_chunks_mut(1 << 14))
                .for_each(|(c, o)| run(kernel, c, o));
        }
    };
}

/// An elementwise function over a slice, in place, vectorised for the CPU at hand (see
/// [`multiversion`]).
macro_rules! slice_kernel {
    ($name:ident, $f:path) => {
        /// Apply the function to every value, in place, on all threads.
        pub fn $name(v: &mut [f32]) {
            multiversion!(
                fn run(v: &mut [f32]) {
                    for x in v {
                        *x = $f(*x);
                    }
                }
            );
            let kernel = kernel();
            v.par_chunks_mut(1 << 14).for_each(|c| run(kernel, c));
        }
    };
}

/// Which kernel the slice functions use, for benchmarks and tests (`CLIP_NO_AVX512=1` forces
/// AVX2); decided once per process (every activation of every layer asks).
pub fn kernel() -> &'static str {
    static KERNEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::env::var_os("CLIP_NO_AVX512").is_none()
            {
                return "avx512";
            }
            if avx2_fma() {
                return "avx2";
            }
        }
        "baseline"
    })
}

/// Whether this CPU has AVX2 and FMA, what every "avx2" kernel needs (AVX-512 CPUs have them too,
/// unless a hypervisor hides FMA).
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For tests of the AVX2 paths (what a CPU without AVX-512 runs): this test binary's tests whose
/// names contain `filter`, run again in a child process with `CLIP_NO_AVX512=1` on one test
/// thread; the number that passed. `None` where it does not apply: inside that child (the caller
/// is one of the rerun tests), or on a CPU without AVX2 and FMA. Panics with the child's output
/// when one of its tests fails.
#[doc(hidden)]
pub fn rerun_tests_without_avx512(filter: &str) -> Option<usize> {
    if std::env::var_os("CLIP_NO_AVX512").is_some() || !avx2_fma() {
        return None;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([filter, "--test-threads", "1"])
        .env("CLIP_NO_AVX512", "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "with CLIP_NO_AVX512=1: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        stdout
            .split("test result: ok. ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

/// The CPU's single-precision peak in FLOP/s on all of rayon's threads, measured: independent
/// chains of fused multiply-adds at the vector width [`kernel`] picks, best of 5 runs (the
/// ceiling `bench/bench_inference.py` divides achieved FLOP/s by).
pub fn fma_peak() -> f64 {
    const ITERS: usize = 1_250_000;
    let kernel = kernel();
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            let flops: f64 = rayon::broadcast(|_| peak::fma_flops(kernel, ITERS))
                .iter()
                .sum();
            flops / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Chains of FMAs by hand: they must stay independent and in registers, which auto-vectorised
/// loops do not promise.
mod peak {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// 12 chains hide the FMA latency on two pipes (4 cycles × 2 ports, with margin).
    const CHAINS: usize = 12;

    /// Runs `iters` rounds of `CHAINS` vector FMAs with `kernel`'s width; returns the FLOPs done.
    pub fn fma_flops(kernel: &str, iters: usize) -> f64 {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            "avx512" => {
                // SAFETY: `kernel()` detected AVX-512F on this CPU.
                std::hint::black_box(unsafe { fma512(iters) });
                return (iters * CHAINS * 16 * 2) as f64;
            }
            "avx2" => {
                // SAFETY: `kernel()` detected AVX2 and FMA on this CPU.
                std::hint::black_box(unsafe { fma256(iters) });
                return (iters * CHAINS * 8 * 2) as f64;
            }
            _ => {}
        }
        let mut acc = [1f32; CHAINS];
        for _ in 0..iters {
            for a in &mut acc {
                *a = a.mul_add(0.999_9, 1e-7);
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS * 2) as f64
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fma512(iters: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        acc.iter().map(|r| _mm512_reduce_add_ps(*r)).sum()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256(iters: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let mut out = [0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, r| _mm256_add_ps(s, *r));
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
}

slice_kernel!(gelu_slice, gelu);
slice_kernel!(quick_gelu_slice, quick_gelu);
tangent_kernel!(gelu_tangent, gelu_d);
tangent_kernel!(quick_gelu_tangent, quick_gelu_d);

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (|x| ≤ 4: ~1e-11 after cancellation).
    fn erf64(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// erf, with ±1 beyond |x| = 4 (where it is ±1 in f32 and the series loses its digits).
    fn erf_ref(x: f64) -> f64 {
        if x.abs() > 4.0 { x.signum() } else { erf64(x) }
    }

    #[test]
    fn erf_and_gelu_match_the_true_functions() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4; // [-6, 6]
            let want = erf_ref(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
        // GELU through every kernel this CPU has, against the f64 formula
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect();
        let mut v = xs.clone();
        gelu_slice(&mut v);
        for (x, g) in xs.iter().zip(&v) {
            let want = 0.5 * *x as f64 * (1.0 + erf_ref(*x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (*g as f64 - want).abs() < 2e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
        for (x, g) in xs.iter().zip(&v) {
            assert!((gelu(*x) - g).abs() <= 1e-6 * g.abs().max(1.0), "{x}: {g}");
        }
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(f32::NAN).is_nan());
        assert!(gelu(-30.0).abs() < 1e-4 && (gelu(30.0) - 30.0).abs() < 1e-4);
    }

    #[test]
    fn exp_and_quick_gelu_match_the_true_functions() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 2e-7, "max relative exp error {worst:e}");
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
        let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 1e-3).collect();
        let mut v = xs.clone();
        quick_gelu_slice(&mut v);
        for (x, g) in xs.iter().zip(&v) {
            let x64 = *x as f64;
            let want = x64 / (1.0 + (-1.702 * x64).exp());
            assert!(
                (*g as f64 - want).abs() < 1e-6 * want.abs().max(1.0),
                "quick_gelu({x}) = {g}, want {want}"
            );
        }
        assert!(quick_gelu(f32::NAN).is_nan());
    }

    /// The AVX2 copies of the kernels (what a CPU without AVX-512 runs): this test binary's
    /// fastmath tests again, in a child process with `CLIP_NO_AVX512=1`.
    #[test]
    fn avx2_kernels_pass_the_same_checks() {
        if std::env::var_os("CLIP_NO_AVX512").is_some() {
            // in the child: the override took effect
            assert_ne!(kernel(), "avx512");
            return;
        }
        if let Some(passed) = rerun_tests_without_avx512("fastmath::tests::") {
            assert!(passed >= 4, "the child ran {passed} tests");
        }
    }

    #[test]
    fn tangents_give_the_derivative_and_the_value_back() {
        let xs: Vec<f32> = (-16_000..=16_000).map(|i| i as f32 * 5e-4).collect();
        fn gelu_prime(x: f64) -> f64 {
            let cdf = 0.5 * (1.0 + erf_ref(x / std::f64::consts::SQRT_2));
            cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        fn quick_prime(x: f64) -> f64 {
            let s = 1.0 / (1.0 + (-1.702 * x).exp());
            s + 1.702 * x * s * (1.0 - s)
        }
        type Case = (fn(&mut [f32], &mut [f32]), fn(f32) -> f32, fn(f64) -> f64);
        let cases: [Case; 2] = [
            (gelu_tangent, gelu, gelu_prime),
            (quick_gelu_tangent, quick_gelu, quick_prime),
        ];
        for (tangent, f, prime) in cases {
            let mut slope = xs.clone();
            let mut offset = vec![0f32; xs.len()];
            tangent(&mut slope, &mut offset);
            for (i, &x) in xs.iter().enumerate() {
                let want = prime(x as f64);
                assert!(
                    (slope[i] as f64 - want).abs() < 1e-5,
                    "slope at {x}: {} vs {want}",
                    slope[i]
                );
                // the graph's value x·c − e is the function's value
                let y = x * slope[i] - offset[i];
                assert!(
                    (y - f(x)).abs() <= 2e-6 * f(x).abs().max(1.0),
                    "value at {x}: {y} vs {}",
                    f(x)
                );
            }
        }
    }
}
