//! The ResNet tower's activations: channels-last batches ([`Act`]) with their layout passes (the
//! zero border a 3×3 convolution reads, the average pooling, NCHW for captures), and the buffers
//! a pass keeps for the next ([`Scratch`]).

use rayon::prelude::*;
use std::collections::HashMap;

use crate::source::transpose;

/// The buffers of a pass, kept by the tower between passes: activations are tens of MB at batch
/// 16, and freshly allocated each time they cost page faults and zeroing in the kernel (9% of
/// RN50's cycles at batch 16, measured on an AMD EPYC). What stays allocated is the largest
/// pass's working set.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// the im2col tile (rows in use are written before they are read)
    pub(super) col: Vec<f32>,
    /// free activation buffers
    free: Vec<Vec<f32>>,
    /// how many values of each buffer [`Scratch::take`] made (by its address) hold values: a
    /// buffer handed out shorter comes back at that length, so that a longer use next time does
    /// not fill it with zeros again (25 MB at batch 16 before the stem's first convolution)
    written: HashMap<usize, usize>,
}

impl Scratch {
    /// A buffer of `len` values, which hold stale values of an earlier use: callers write each
    /// before reading it. The smallest free buffer that holds `len`, else a new one.
    pub(super) fn take(&mut self, len: usize) -> Vec<f32> {
        let fit = (0..self.free.len())
            .filter(|&i| self.free[i].capacity() >= len)
            .min_by_key(|&i| self.free[i].capacity());
        match fit {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                if v.len() < len {
                    v.resize(len, 0.0);
                } else {
                    v.truncate(len);
                }
                let written = self.written.entry(v.as_ptr() as usize).or_default();
                *written = (*written).max(len);
                v
            }
            None => {
                let v = vec![0f32; len];
                // (a new allocation: whatever an earlier one at this address held is forgotten)
                self.written.insert(v.as_ptr() as usize, len);
                v
            }
        }
    }

    /// `v` back among the free buffers; all of it that held values when it was taken is usable
    /// again. Every buffer given comes from [`Scratch::take`].
    pub(super) fn give(&mut self, mut v: Vec<f32>) {
        if let Some(&n) = self.written.get(&(v.as_ptr() as usize))
            && v.len() < n
            && n <= v.capacity()
        {
            // SAFETY: the first `n` values of this allocation were written (zeroed by `take`,
            // then overwritten) before `truncate` shortened it; `f32` has no invalid values and
            // no destructor.
            unsafe { v.set_len(n) };
        }
        self.free.push(v);
    }
}

/// A batch of channels-last activations `[n, h, w, c]`.
#[derive(Debug, Clone)]
pub(super) struct Act {
    pub(super) n: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c: usize,
    pub(super) data: Vec<f32>,
}

impl Act {
    /// NHWC back to NCHW values (for captured block outputs).
    pub(super) fn to_nchw(&self) -> (Vec<usize>, Vec<f32>) {
        let (hw, c) = (self.h * self.w, self.c);
        let data = self
            .data
            .chunks(hw * c)
            .flat_map(|img| transpose(img, hw, c))
            .collect();
        (vec![self.n, c, self.h, self.w], data)
    }

    /// A copy with `pad` zero pixels on every side (in a buffer of `scratch`): its values, height
    /// and width.
    pub(super) fn padded(&self, pad: usize, scratch: &mut Scratch) -> (Vec<f32>, usize, usize) {
        let (hp, wp, c) = (self.h + 2 * pad, self.w + 2 * pad, self.c);
        let mut out = scratch.take(self.n * hp * wp * c);
        out.par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (b, y) = (row / hp, row % hp);
                match y.checked_sub(pad).filter(|&y| y < self.h) {
                    Some(y) => {
                        let src = &self.data[(b * self.h + y) * self.w * c..][..self.w * c];
                        let (left, rest) = dst.split_at_mut(pad * c);
                        let (inner, right) = rest.split_at_mut(self.w * c);
                        inner.copy_from_slice(src);
                        left.fill(0.0);
                        right.fill(0.0);
                    }
                    None => dst.fill(0.0),
                }
            });
        (out, hp, wp)
    }

    pub(super) fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// `k×k` average pooling with stride `k` (the anti-aliased downsampling); the input's buffer
    /// goes back to `scratch`.
    pub(super) fn avg_pool(self, k: usize, scratch: &mut Scratch) -> Act {
        if k == 1 {
            return self;
        }
        let (ho, wo, c) = (self.h / k, self.w / k, self.c);
        let (w, h) = (self.w, self.h);
        let scale = 1.0 / (k * k) as f32;
        let mut data = scratch.take(self.n * ho * wo * c);
        let kernel = crate::fastmath::kernel();
        data.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(row, out)| {
                let (b, oy) = (row / ho, row % ho);
                // the k input rows of this output row lie one after the other
                let src = &self.data[((b * h) + oy * k) * w * c..][..k * w * c];
                pool_row(kernel, src, w * c, c, k, scale, out);
            });
        scratch.give(self.data);
        Act {
            n: self.n,
            h: ho,
            w: wo,
            c,
            data,
        }
    }
}

// One output row of `k×k` average pooling: `src` holds the `k` input rows (`line` values each,
// pixels of `c` channels), `out` the pooled pixels, summed row by row then tap by tap as before;
// compiled for the CPU's vector width (the baseline build's loop is 128-bit).
multiversion!(
    fn pool_row(src: &[f32], line: usize, c: usize, k: usize, scale: f32, out: &mut [f32]) {
        out.fill(0.0);
        for input in src.chunks_exact(line) {
            for (ox, px) in out.chunks_exact_mut(c).enumerate() {
                for kx in 0..k {
                    let pixel = &input[(ox * k + kx) * c..][..c];
                    for (o, v) in px.iter_mut().zip(pixel) {
                        *o += v;
                    }
                }
            }
        }
        for v in out.iter_mut() {
            *v *= scale;
        }
    }
);
