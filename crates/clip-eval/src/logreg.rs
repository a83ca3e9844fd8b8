//! Multinomial logistic regression fitted by L-BFGS: the linear probe of the paper (appendix A.3),
//! hand-written because no maintained Rust crate offers scikit-learn's objective and stopping rules
//! (`linfa-logistic` differs in both), and the probe must match scikit-learn's accuracy. It has the
//! objective and stopping rules of scikit-learn's `LogisticRegression(solver="lbfgs")`:
//!
//! minimise  (1/n) Σᵢ [logsumexp(zᵢ) − zᵢ[yᵢ]] + λ/2 ‖W‖²,  zᵢ = W xᵢ + b,  λ = 1/(C·n)
//!
//! (the intercept is not penalised; every class has its own weight row, as in scikit-learn's
//! multinomial loss). Stopping as in SciPy's L-BFGS-B with scikit-learn's options: the largest
//! gradient entry ≤ `tol`, or a relative decrease of the objective ≤ 64·ε, or `max_iter` iterations;
//! memory of 10 correction pairs; a Wolfe line search of at most 50 evaluations.
//!
//! The two products per evaluation (`X·Wᵀ` and `(P−Y)ᵀ·X`) run in single precision through the
//! `gemm` crate on all threads; the softmax, loss and the optimiser's vectors are double precision.

use rayon::prelude::*;

/// A fitted probe: `weights` `[classes, dim]` row-major and `bias` `[classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    pub classes: usize,
    pub dim: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// L-BFGS iterations taken
    pub iterations: usize,
    /// objective evaluations (including line-search steps)
    pub evaluations: usize,
    /// whether a stopping rule other than `max_iter` ended the fit
    pub converged: bool,
    /// which rule ended the fit
    pub stop: Stop,
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stop {
    /// the largest gradient entry fell to `tol`
    Gradient,
    /// the objective's relative decrease fell to 64·ε
    Objective,
    /// `max_iter` iterations (scikit-learn would warn that it did not converge)
    MaxIter,
    /// no step along the gradient decreased the objective (at the limit of float precision)
    LineSearch,
}

/// Options of [`fit`]; the defaults are scikit-learn's (`C=1`, `max_iter` set to the paper's 1,000).
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// inverse regularisation strength
    pub c: f64,
    pub max_iter: usize,
    pub tol: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-4,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("no training samples")]
    Empty,
    #[error("features have {got} values, expected {n} samples × {d} dimensions")]
    Shape { got: usize, n: usize, d: usize },
    #[error("label {label} of sample {index} is not below the class count {classes}")]
    Label {
        index: usize,
        label: usize,
        classes: usize,
    },
    #[error("C must be a positive finite number, got {0}")]
    BadC(f64),
    #[error("features contain a NaN or infinite value (sample {0})")]
    NonFinite(usize),
}

pub use clip_embed::linalg::{matmul, scores};

/// Index of the largest entry of each row.
pub fn argmax_rows(scores: &[f32], k: usize) -> Vec<usize> {
    scores
        .chunks(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

impl LogReg {
    pub fn scores(&self, x: &[f32], n: usize) -> Vec<f32> {
        scores(x, n, self.dim, &self.weights, &self.bias)
    }

    pub fn predict(&self, x: &[f32], n: usize) -> Vec<usize> {
        argmax_rows(&self.scores(x, n), self.classes)
    }

    /// Class probabilities `[n, classes]`.
    pub fn predict_proba(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut z = self.scores(x, n);
        z.par_chunks_mut(self.classes).for_each(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
            for v in row.iter_mut() {
                *v = (((*v - m) as f64).exp() / s) as f32;
            }
        });
        z
    }
}

/// The objective and its gradient for one parameter vector `[W (K×D), b (K)]`.
struct Problem<'a> {
    x: &'a [f32],
    y: &'a [usize],
    n: usize,
    d: usize,
    k: usize,
    lambda: f64,
    w32: Vec<f32>,
    z: Vec<f32>,
    gw: Vec<f32>,
}

impl Problem<'_> {
    /// The objective and its gradient at `theta` (scikit-learn's multinomial loss + L2 penalty):
    /// one pass of products, softmax and reductions kept together so the buffers are reused.
    fn eval(&mut self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d, k) = (self.n, self.d, self.k);
        let kd = k * d;
        for (w, t) in self.w32.iter_mut().zip(&theta[..kd]) {
            *w = *t as f32;
        }
        let bias = &theta[kd..];
        matmul(
            n,
            k,
            d,
            &mut self.z,
            self.x,
            (1, d as isize),
            &self.w32,
            (d as isize, 1),
        );
        let inv_n = 1.0 / n as f64;
        let y = self.y;
        // one pass per row: softmax, loss, and the residual (P − Y)/n written over the scores
        const ROWS: usize = 256;
        let b32: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
        let inv_n32 = inv_n as f32;
        let (loss, gb) = self
            .z
            .par_chunks_mut(ROWS * k)
            .enumerate()
            .map(|(c, chunk)| {
                let mut loss = 0f64;
                let mut gb = vec![0f64; k];
                let mut e = vec![0f32; k];
                for (r, row) in chunk.chunks_mut(k).enumerate() {
                    let label = y[c * ROWS + r];
                    let mut m = f32::NEG_INFINITY;
                    for ((ej, v), b) in e.iter_mut().zip(row.iter()).zip(&b32) {
                        *ej = v + b;
                        m = m.max(*ej);
                    }
                    let z_label = e[label];
                    let mut s = 0f32;
                    for v in e.iter_mut() {
                        *v = fast_exp(*v - m);
                        s += *v;
                    }
                    loss += m as f64 + (s as f64).ln() - z_label as f64;
                    let inv_s = 1.0 / s;
                    for ((v, ej), g) in row.iter_mut().zip(&e).zip(gb.iter_mut()) {
                        let p = ej * inv_s;
                        *g += p as f64;
                        *v = p * inv_n32;
                    }
                    gb[label] -= 1.0;
                    row[label] -= inv_n32;
                }
                (loss, gb)
            })
            .reduce(
                || (0.0, vec![0.0; k]),
                |(la, mut ga), (lb, gbb)| {
                    for (a, b) in ga.iter_mut().zip(gbb) {
                        *a += b;
                    }
                    (la + lb, ga)
                },
            );
        // G_W[K×D] = Rᵀ[K×n] · X[n×D]
        matmul(
            k,
            d,
            n,
            &mut self.gw,
            &self.z,
            (k as isize, 1),
            self.x,
            (1, d as isize),
        );
        let mut reg = 0f64;
        for ((g, gw), t) in grad[..kd].iter_mut().zip(&self.gw).zip(&theta[..kd]) {
            *g = *gw as f64 + self.lambda * t;
            reg += t * t;
        }
        for (g, b) in grad[kd..].iter_mut().zip(gb) {
            *g = b * inv_n;
        }
        loss * inv_n + 0.5 * self.lambda * reg
    }
}

/// `e^x` for x ≤ 0 in single precision without a libm call (so the softmax loop vectorises):
/// x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r (relative error ≈ 2e-7), and 2^n
/// through the exponent bits; x below −87 gives e^−87 (under f32's normal range anyway).
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    let x = x.max(-87.0);
    // round to nearest without `round` (the magic constant works in any SIMD width)
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn check(x: &[f32], n: usize, d: usize, y: &[usize], classes: usize) -> Result<(), FitError> {
    if n == 0 {
        return Err(FitError::Empty);
    }
    if x.len() != n * d {
        return Err(FitError::Shape { got: x.len(), n, d });
    }
    if let Some((index, &label)) = y.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(FitError::Label {
            index,
            label,
            classes,
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(FitError::NonFinite(i / d.max(1)));
    }
    Ok(())
}

/// Fit a probe on `x` (`[n, d]` row-major) with labels `y < classes`, starting from zero as
/// scikit-learn does.
///
/// One function on purpose: the L-BFGS iteration (two-loop recursion, Wolfe line search, the
/// stopping tests) reads top to bottom beside scipy's `L-BFGS-B` driver that scikit-learn calls;
/// its state is shared by every step.
pub fn fit(
    x: &[f32],
    n: usize,
    d: usize,
    y: &[usize],
    classes: usize,
    opts: FitOptions,
) -> Result<LogReg, FitError> {
    check(x, n, d, y, classes)?;
    if !(opts.c > 0.0 && opts.c.is_finite()) {
        return Err(FitError::BadC(opts.c));
    }
    let k = classes;
    let kd = k * d;
    let len = kd + k;
    let mut p = Problem {
        x,
        y,
        n,
        d,
        k,
        lambda: 1.0 / (opts.c * n as f64),
        w32: vec![0.0; kd],
        z: vec![0.0; n * k],
        gw: vec![0.0; kd],
    };
    let mut theta = vec![0f64; len];
    let mut grad = vec![0f64; len];
    let mut f = p.eval(&theta, &mut grad);
    let mut evaluations = 1;
    const M: usize = 10;
    let ftol = 64.0 * f64::EPSILON;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho: Vec<f64> = Vec::new();
    let mut iterations = 0;
    let mut stop = if max_abs(&grad) <= opts.tol {
        Stop::Gradient
    } else {
        Stop::MaxIter
    };
    let mut converged = stop == Stop::Gradient;
    let mut new_theta = vec![0f64; len];
    let mut new_grad = vec![0f64; len];
    let mut alpha_buf = [0f64; M];
    let mut dir = vec![0f64; len];
    while !converged && iterations < opts.max_iter {
        // two-loop recursion: d = −H·g
        for (dv, g) in dir.iter_mut().zip(&grad) {
            *dv = -g;
        }
        let h = s_hist.len();
        for i in (0..h).rev() {
            alpha_buf[i] = rho[i] * dot(&s_hist[i], &dir);
            for (dv, yv) in dir.iter_mut().zip(&y_hist[i]) {
                *dv -= alpha_buf[i] * yv;
            }
        }
        if h > 0 {
            let gamma = dot(&s_hist[h - 1], &y_hist[h - 1]) / dot(&y_hist[h - 1], &y_hist[h - 1]);
            dir.iter_mut().for_each(|v| *v *= gamma);
        }
        for i in 0..h {
            let beta = rho[i] * dot(&y_hist[i], &dir);
            for (dv, sv) in dir.iter_mut().zip(&s_hist[i]) {
                *dv += (alpha_buf[i] - beta) * sv;
            }
        }
        let mut slope = dot(&grad, &dir);
        if slope >= 0.0 {
            // not a descent direction (numerical trouble): restart from steepest descent
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            for (dv, g) in dir.iter_mut().zip(&grad) {
                *dv = -g;
            }
            slope = dot(&grad, &dir);
        }
        // weak Wolfe line search (c1 = 1e-3, c2 = 0.9 as SciPy's dcsrch): bracket, then
        // safeguarded quadratic interpolation inside the bracket, secant extrapolation outside it
        let mut step = if s_hist.is_empty() {
            (1.0 / dot(&dir, &dir).sqrt()).min(1.0)
        } else {
            1.0
        };
        // (step, objective, directional derivative) at the bracket ends
        let (mut lo, mut lo_f, mut lo_d) = (0.0f64, f, slope);
        let mut hi: Option<(f64, f64)> = None;
        let mut accepted = None;
        for _ in 0..50 {
            for ((nt, t), dv) in new_theta.iter_mut().zip(&theta).zip(&dir) {
                *nt = t + step * dv;
            }
            let nf = p.eval(&new_theta, &mut new_grad);
            evaluations += 1;
            let nd = dot(&new_grad, &dir);
            if !nf.is_finite() || nf > f + 1e-3 * step * slope || nf >= lo_f && step > lo {
                hi = Some((step, if nf.is_finite() { nf } else { f64::MAX }));
            } else if nd < 0.9 * slope {
                // still steep: move the lower end forward
                let (prev, prev_d) = (lo, lo_d);
                lo = step;
                lo_f = nf;
                lo_d = nd;
                if hi.is_none() {
                    // secant on the directional derivative, kept within [1.5, 10]× the step
                    let guess = if nd < prev_d {
                        step * 4.0
                    } else {
                        step - nd * (step - prev) / (nd - prev_d)
                    };
                    step = guess.clamp(1.5 * step, 100.0 * step);
                    continue;
                }
            } else {
                accepted = Some(nf);
                break;
            }
            let (h, hf) = hi.expect("bracketed");
            let width = h - lo;
            // minimiser of the quadratic through (lo, lo_f, lo_d) and (h, hf)
            let curv = hf - lo_f - lo_d * width;
            let q = if curv > 0.0 && hf < f64::MAX {
                lo - lo_d * width * width / (2.0 * curv)
            } else {
                lo + 0.5 * width
            };
            step = q.clamp(lo + 0.1 * width, h - 0.1 * width);
        }
        let Some(nf) = accepted else {
            if s_hist.is_empty() {
                // no progress possible even along the gradient: stop where we are
                stop = Stop::LineSearch;
                converged = true;
                break;
            }
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            continue;
        };
        iterations += 1;
        // correction pair, written into the oldest pair's buffers once the memory is full
        let (mut s, mut yv) = if s_hist.len() == M {
            rho.remove(0);
            (s_hist.remove(0), y_hist.remove(0))
        } else {
            (vec![0f64; len], vec![0f64; len])
        };
        for (((sv, a), b), (yy, (ga, gb))) in s
            .iter_mut()
            .zip(&new_theta)
            .zip(&theta)
            .zip(yv.iter_mut().zip(new_grad.iter().zip(&grad)))
        {
            *sv = a - b;
            *yy = ga - gb;
        }
        let sy = dot(&s, &yv);
        if sy > f64::EPSILON * dot(&yv, &yv) {
            s_hist.push(s);
            y_hist.push(yv);
            rho.push(1.0 / sy);
        }
        std::mem::swap(&mut theta, &mut new_theta);
        std::mem::swap(&mut grad, &mut new_grad);
        let decrease = (f - nf) / f.abs().max(nf.abs()).max(1.0);
        f = nf;
        if max_abs(&grad) <= opts.tol {
            stop = Stop::Gradient;
        } else if decrease <= ftol {
            stop = Stop::Objective;
        }
        converged = stop != Stop::MaxIter;
    }
    Ok(LogReg {
        classes: k,
        dim: d,
        weights: theta[..kd].iter().map(|&v| v as f32).collect(),
        bias: theta[kd..].iter().map(|&v| v as f32).collect(),
        iterations,
        evaluations,
        converged,
        stop,
    })
}

/// Fraction of `pred` equal to `truth`.
pub fn accuracy(pred: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences agree with the analytic gradient.
    #[test]
    fn gradient_matches_finite_differences() {
        let (n, d, k) = (7, 3, 4);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let y: Vec<usize> = (0..n).map(|i| i % k).collect();
        let mut p = Problem {
            x: &x,
            y: &y,
            n,
            d,
            k,
            lambda: 0.3,
            w32: vec![0.0; k * d],
            z: vec![0.0; n * k],
            gw: vec![0.0; k * d],
        };
        let theta: Vec<f64> = (0..k * d + k)
            .map(|i| ((i % 5) as f64 - 2.0) / 8.0)
            .collect();
        let mut g = vec![0.0; theta.len()];
        p.eval(&theta, &mut g);
        let mut scratch = vec![0.0; theta.len()];
        for i in 0..theta.len() {
            let h = 1e-3;
            let mut a = theta.clone();
            a[i] += h;
            let fa = p.eval(&a, &mut scratch);
            a[i] -= 2.0 * h;
            let fb = p.eval(&a, &mut scratch);
            let num = (fa - fb) / (2.0 * h);
            assert!((num - g[i]).abs() < 1e-4, "param {i}: {num} vs {}", g[i]);
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 1e-3 * 0.9; // 0 … −180
            let want = (x as f64).exp().max((-87f64).exp());
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
    }

    #[test]
    fn separable_data_is_learned_and_bad_input_refused() {
        let (n, d) = (60, 2);
        let x: Vec<f32> = (0..n)
            .flat_map(|i| {
                let c = (i % 3) as f32;
                [c * 3.0 + (i as f32 * 0.01), -c * 2.0]
            })
            .collect();
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let m = fit(&x, n, d, &y, 3, FitOptions::default()).unwrap();
        assert!(m.converged);
        assert_eq!(accuracy(&m.predict(&x, n), &y), 1.0);
        let p = m.predict_proba(&x, n);
        assert!((p[..3].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(
            fit(&x, n, d, &y, 2, FitOptions::default()).unwrap_err(),
            FitError::Label {
                index: 2,
                label: 2,
                classes: 2
            }
        );
        let bad_c = FitOptions {
            c: 0.0,
            ..Default::default()
        };
        assert_eq!(
            fit(&x, n, d, &y, 3, bad_c).unwrap_err(),
            FitError::BadC(0.0)
        );
        let mut nan = x.clone();
        nan[9] = f32::NAN;
        assert_eq!(
            fit(&nan, n, d, &y, 3, FitOptions::default()).unwrap_err(),
            FitError::NonFinite(4)
        );
    }
}
