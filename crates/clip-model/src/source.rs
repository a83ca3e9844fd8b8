//! Where a model's parameters come from when it is built: a loaded checkpoint (by key, with shape
//! checks) or a fresh random initialisation (open_clip's scheme). Model code asks for each
//! parameter once, by its checkpoint key, so the key mapping lives in one place.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::prelude::*;

use crate::error::LoadError;

/// A tensor read from a checkpoint, converted to f32 (row-major, PyTorch layout).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> RawTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        RawTensor { shape, data }
    }
}

/// How a parameter is initialised when it is not loaded.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Normal(f64),
    /// Uniform in ±bound (PyTorch's default for Linear/Conv: bound = 1/sqrt(fan_in))
    Uniform(f64),
    Constant(f64),
}

/// Supplies parameters by checkpoint key.
pub trait Source {
    /// The tensor stored under `key`, which must have exactly `shape` (PyTorch layout).
    fn take(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, LoadError>;

    /// Told which parameter was built from `key`, and how its layout differs from the checkpoint's.
    fn bind(&mut self, _key: &str, _id: ParamId, _layout: Layout) {}
}

/// How a parameter's layout relates to its checkpoint tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Same shape and order.
    Same(Vec<usize>),
    /// Checkpoint `[rows, cols]` is stored transposed, `[cols, rows]`.
    Transposed { rows: usize, cols: usize },
    /// Checkpoint `shape` (e.g. a conv `[W, 3, p, p]`) flattened to `[W, rest]` and stored transposed.
    FlatTransposed(Vec<usize>),
}

impl Layout {
    /// Rank of the parameter (not of the checkpoint tensor).
    pub fn rank(&self) -> usize {
        match self {
            Layout::Same(shape) => shape.len(),
            Layout::Transposed { .. } | Layout::FlatTransposed(_) => 2,
        }
    }

    /// A checkpoint-layout tensor's data in this parameter's layout, with the parameter's shape.
    pub fn to_param(&self, data: &[f32]) -> (Vec<usize>, Vec<f32>) {
        match self {
            Layout::Same(shape) => (shape.clone(), data.to_vec()),
            Layout::Transposed { rows, cols } => {
                (vec![*cols, *rows], transpose(data, *rows, *cols))
            }
            Layout::FlatTransposed(shape) => {
                let rows = shape[0];
                let cols = data.len() / rows;
                (vec![cols, rows], transpose(data, rows, cols))
            }
        }
    }
}

/// One parameter's checkpoint key.
#[derive(Debug, Clone)]
pub struct Binding {
    pub key: String,
    pub id: ParamId,
    pub layout: Layout,
}

/// Wraps a source and remembers every binding, so the model can be saved under the same keys.
pub struct Recorder<'a> {
    pub inner: &'a mut dyn Source,
    pub bindings: Vec<Binding>,
}

impl Source for Recorder<'_> {
    fn take(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, LoadError> {
        self.inner.take(key, shape, init)
    }

    fn bind(&mut self, key: &str, id: ParamId, layout: Layout) {
        self.bindings.push(Binding {
            key: key.to_owned(),
            id,
            layout,
        });
    }
}

/// Parameters from a checkpoint. Every key must be taken exactly once: [`Checkpoint::finish`]
/// reports the ones left over.
pub struct Checkpoint {
    pub tensors: BTreeMap<String, RawTensor>,
    /// File name for error messages.
    pub file: String,
}

impl Checkpoint {
    pub fn new(tensors: BTreeMap<String, RawTensor>, file: impl Into<String>) -> Checkpoint {
        Checkpoint {
            tensors,
            file: file.into(),
        }
    }

    /// Error if tensors remain that the model did not use.
    pub fn finish(self) -> Result<(), LoadError> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = self
            .tensors
            .iter()
            .map(|(k, t)| format!("'{k}' {:?}", t.shape))
            .collect();
        Err(LoadError::Unexpected {
            file: self.file,
            keys: keys.join(", "),
        })
    }
}

impl Source for Checkpoint {
    fn take(&mut self, key: &str, shape: &[usize], _init: Init) -> Result<Vec<f32>, LoadError> {
        let t = self.tensors.remove(key).ok_or_else(|| LoadError::Missing {
            key: key.to_owned(),
            file: self.file.clone(),
        })?;
        // a 0-d scalar and a [1] vector are interchangeable (logit_scale)
        let same = t.shape == shape || (t.data.len() == 1 && shape.iter().product::<usize>() == 1);
        if !same {
            return Err(LoadError::Shape {
                key: key.to_owned(),
                file: self.file.clone(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        // one pass over every weight: NaN or infinite weights give NaN embeddings silently
        let count = t.data.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(LoadError::NonFinite {
                key: key.to_owned(),
                file: self.file.clone(),
                count,
            });
        }
        Ok(t.data)
    }
}

/// Fresh parameters from the project's seeded generator ([`clip_data::rng::Rng`]).
pub struct RandomInit {
    rng: clip_data::rng::Rng,
}

impl RandomInit {
    pub fn new(seed: u64) -> RandomInit {
        RandomInit {
            rng: clip_data::rng::Rng::new(seed),
        }
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller
        let u1 = self.rng.unit().max(f64::MIN_POSITIVE);
        let u2 = self.rng.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

impl Source for RandomInit {
    fn take(&mut self, _key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, LoadError> {
        let n: usize = shape.iter().product();
        Ok((0..n)
            .map(|_| match init {
                Init::Normal(std) => (self.normal() * std) as f32,
                Init::Uniform(b) => ((self.rng.unit() * 2.0 - 1.0) * b) as f32,
                Init::Constant(c) => c as f32,
            })
            .collect())
    }
}

/// Transpose a row-major `[rows, cols]` matrix.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    // 32×32 tiles, output rows in parallel bands: a plain double loop writes with a stride of `rows`
    // and missed the cache on every value (7% of `clip embed`'s time went to loading the weights)
    const T: usize = 32;
    assert_eq!(
        data.len(),
        rows * cols,
        "transpose: {rows}×{cols} is not {}",
        data.len()
    );
    let mut out = vec![0.0; data.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(T * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let c0 = band * T;
            let cn = dst.len() / rows;
            for r0 in (0..rows).step_by(T) {
                for c in c0..c0 + cn {
                    let line = &mut dst[(c - c0) * rows..][..rows];
                    for r in r0..(r0 + T).min(rows) {
                        line[r] = data[r * cols + c];
                    }
                }
            }
        });
    out
}

/// A parameter of exactly `shape`.
pub fn param<const D: usize>(
    src: &mut dyn Source,
    key: &str,
    shape: [usize; D],
    init: Init,
    device: &Device,
) -> Result<Param<Tensor<D>>, LoadError> {
    let data = src.take(key, &shape, init)?;
    let p = Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device));
    src.bind(key, p.id, Layout::Same(shape.to_vec()));
    Ok(p)
}

/// The 1-D parameter `{key}.{name}` of length `n`, initialised to `value` (norm gains, shifts,
/// running statistics).
pub fn vector(
    src: &mut dyn Source,
    key: &str,
    name: &str,
    n: usize,
    value: f64,
    device: &Device,
) -> Result<Param<Tensor<1>>, LoadError> {
    param(
        src,
        &format!("{key}.{name}"),
        [n],
        Init::Constant(value),
        device,
    )
}

/// A PyTorch `[out, in]` matrix stored transposed as `[in, out]` (burn's `linear` layout).
pub fn param_t(
    src: &mut dyn Source,
    key: &str,
    out_in: [usize; 2],
    init: Init,
    device: &Device,
) -> Result<Param<Tensor<2>>, LoadError> {
    let [o, i] = out_in;
    let data = transpose(&src.take(key, &out_in, init)?, o, i);
    let p = Param::from_tensor(Tensor::from_data(TensorData::new(data, [i, o]), device));
    src.bind(key, p.id, Layout::Transposed { rows: o, cols: i });
    Ok(p)
}

/// Host copy of a tensor as f32.
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .as_slice::<f32>()
        .expect("f32 data")
        .to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocked_transpose_matches_the_definition() {
        // sizes around the 32-value tile, and degenerate ones
        for (rows, cols) in [
            (1, 1),
            (1, 70),
            (70, 1),
            (31, 33),
            (64, 32),
            (100, 257),
            (0, 5),
        ] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&data, rows, cols);
            assert_eq!(t.len(), data.len());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        data[r * cols + c],
                        "{rows}×{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }
}
