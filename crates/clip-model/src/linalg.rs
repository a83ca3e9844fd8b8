//! Single-precision matrix products through `gemm`: the CPU convolutions of [`crate::resnet_cpu`], and the
//! scoring of evaluation and search (burn's tensors would copy the
//! features in and out for each product; evaluation multiplies the same feature matrices hundreds of
//! times). Every call checks that the matrices its strides describe lie inside the given slices
//! before the `unsafe` call.

use rayon::prelude::*;

/// The largest element offset of an `rows×cols` matrix with (column, row) strides, or `None` when
/// a stride is negative or the offset overflows.
fn last_offset(rows: usize, cols: usize, (cs, rs): (isize, isize)) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    let (cs, rs) = (usize::try_from(cs).ok()?, usize::try_from(rs).ok()?);
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)
}

fn check(what: &str, rows: usize, cols: usize, strides: (isize, isize), len: usize) {
    let last = last_offset(rows, cols, strides);
    assert!(
        last.is_some_and(|o| rows == 0 || cols == 0 || o < len),
        "{what}: a {rows}×{cols} matrix with strides {strides:?} does not fit in {len} values"
    );
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` with explicit (column, row) strides; `dst` is row-major.
/// Panics (before any unsafe access) when a matrix does not fit in its slice.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    matmul_into(
        m,
        n,
        k,
        dst,
        false,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        true,
    )
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, or `+=` with `accumulate` (row-major `dst`), on all threads
/// (`parallel`) or on the calling thread only (for callers that already split the work over
/// threads). Accumulating, the products of a convolution's bias, shortcut and taps land in one
/// buffer without a separate addition pass.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    check("output", m, n, (1, n as isize), dst.len());
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    check("left operand", m, k, lhs_strides, lhs.len());
    check("right operand", k, n, rhs_strides, rhs.len());
    // SAFETY: checked above: every element the strides address lies inside its slice, strides are
    // non-negative, and `dst` (a unique borrow) does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.0,
            lhs_strides.1,
            rhs.as_ptr(),
            rhs_strides.0,
            rhs_strides.1,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// `scores[n×K] = X[n×d] · W[K×d]ᵀ + b` (K = `bias.len()`). Panics when `x` is not `n×d` or
/// `weights` not `K×d`: callers check shapes read from files first.
pub fn scores(x: &[f32], n: usize, d: usize, weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let k = bias.len();
    assert_eq!(x.len(), n * d, "features are not {n}×{d}");
    assert_eq!(weights.len(), k * d, "weights are not {k}×{d}");
    let mut z = vec![0f32; n * k];
    if n == 0 || k == 0 {
        return z;
    }
    matmul(
        n,
        k,
        d,
        &mut z,
        x,
        (1, d as isize),
        weights,
        (d as isize, 1),
    );
    z.par_chunks_mut(k).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_bounds() {
        // [[1,2],[3,4]] · [[1,0],[0,1],[1,1]]ᵀ + [0, 1, 2]
        let z = scores(
            &[1., 2., 3., 4.],
            2,
            2,
            &[1., 0., 0., 1., 1., 1.],
            &[0., 1., 2.],
        );
        assert_eq!(z, [1., 3., 5., 3., 5., 9.]);
        let r = std::panic::catch_unwind(|| scores(&[1., 2., 3.], 2, 2, &[1., 0.], &[0.]));
        assert!(r.is_err(), "a short feature slice is refused before gemm");
        let r = std::panic::catch_unwind(|| {
            let mut d = [0f32; 4];
            matmul(2, 2, 2, &mut d, &[1.; 3], (1, 2), &[1.; 4], (2, 1));
        });
        assert!(r.is_err(), "a short operand is refused before gemm");
    }
}
