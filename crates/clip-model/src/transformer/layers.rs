//! LayerNorm and Linear with checkpoint field names (Linear packed for CPU inference, see
//! crate::lowp), and the MLP activations (vectorised on the CPU, see crate::fastmath).

use super::*;

/// LayerNorm over the last dimension (computed in f32 like OpenAI's subclass); eps 1e-5 unless
/// the model says otherwise (SigLIP: 1e-6).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(
        src: &mut dyn Source,
        key: &str,
        width: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Self::load_eps(src, key, width, 1e-5, device)
    }

    pub fn load_eps(
        src: &mut dyn Source,
        key: &str,
        width: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(LayerNorm {
            weight: vector(src, key, "weight", width, 1.0, device)?,
            bias: vector(src, key, "bias", width, 0.0, device)?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// A linear layer; `weight` is stored `[in, out]` (the checkpoint's `[out, in]` transposed).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// The weight in reduced precision ([`Linear::set_precision`]); `weight` is then emptied.
    #[module(skip)]
    pub packed: Option<Arc<PackedLinear>>,
}

/// `weight` (`[in, out]`) and `bias` packed for `precision` (`None` for f32 or when already
/// packed); the f32 weight is replaced by an empty `[0, out]` tensor so that its memory is freed.
pub(crate) fn pack_weight(
    weight: &mut Param<Tensor<2>>,
    bias: Option<&Param<Tensor<1>>>,
    precision: Precision,
) -> Option<Arc<PackedLinear>> {
    let [k, n] = weight.dims();
    if k == 0 || !crate::lowp::packs(precision) {
        return None;
    }
    let b = bias.map(|b| to_vec(&b.val()));
    // the weight's only handle, taken out of the parameter: its data leaves the tensor without
    // the two copies of `to_vec` (a fifth of ViT-B-32's load time went to them)
    let device = weight.device();
    let empty = Param::initialized(weight.id, Tensor::zeros([0, n], &device));
    let data = std::mem::replace(weight, empty)
        .into_value()
        .into_data()
        .convert::<f32>();
    let w = data.as_slice::<f32>().expect("f32 data after convert");
    Some(Arc::new(PackedLinear::new(
        w,
        k,
        n,
        b.as_deref(),
        precision,
    )))
}

/// The values of an f32 CPU inference tensor, moved out of it: without a copy when `x` holds the
/// only handle to its buffer (burn-flex copies a shared one). `Err(x)` for autodiff tensors, other
/// dtypes and devices.
// the `Err` is the caller's own tensor handed back on the fallback path (a move of its handle,
// once per layer), not an error to box
#[allow(clippy::result_large_err)]
pub(crate) fn into_f32_vec<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>, Tensor<D>> {
    if x.is_autodiff() || !crate::cpu_f32(&x) {
        return Err(x);
    }
    Ok(x.into_data()
        .try_into_vec::<f32>()
        .expect("an f32 tensor's data read as f32"))
}

/// `x · W + b` by a packed weight, for f32 CPU inference tensors (`Err(x)` otherwise). `x` is
/// taken by value so that its values leave it without a copy.
#[allow(clippy::result_large_err)] // as `into_f32_vec`
pub(crate) fn packed_forward<const D: usize>(
    p: &PackedLinear,
    x: Tensor<D>,
) -> Result<Tensor<D>, Tensor<D>> {
    let mut dims = x.dims();
    if dims[D - 1] != p.k() {
        return Err(x);
    }
    let device = x.device();
    let v = into_f32_vec(x)?;
    let m = dims[..D - 1].iter().product();
    let y = p.forward(&v, m);
    drop(v);
    dims[D - 1] = p.n();
    Ok(Tensor::from_data(TensorData::new(y, dims), &device))
}

impl Linear {
    pub fn load(
        src: &mut dyn Source,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Linear {
            weight: param_t(
                src,
                &format!("{key}.weight"),
                [d_out, d_in],
                Init::Normal(std),
                device,
            )?,
            bias: if bias {
                Some(param(
                    src,
                    &format!("{key}.bias"),
                    [d_out],
                    Init::Constant(0.0),
                    device,
                )?)
            } else {
                None
            },
            packed: None,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = match self.packed.as_deref() {
            Some(p) => match packed_forward(p, x) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }

    /// Bytes held by the packed weight (0 in f32).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.bytes())
    }

    /// Keep the weight in `precision` (bf16 or int8; f32 leaves it as it is) for CPU inference.
    pub fn set_precision(&mut self, precision: Precision) {
        if self.packed.is_none() {
            self.packed = pack_weight(&mut self.weight, self.bias.as_ref(), precision);
        }
    }
}

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Act {
    /// exact GELU (`nn.GELU()`)
    #[default]
    Gelu,
    /// `x·σ(1.702x)` (OpenAI's weights)
    QuickGelu,
    /// GELU's tanh approximation (`nn.GELU(approximate="tanh")`: SigLIP2's text tower, timm's
    /// `gelu_tanh`)
    GeluTanh,
}

impl Act {
    /// `quick_gelu` of a config: QuickGELU or exact GELU.
    pub fn quick(quick_gelu: bool) -> Act {
        if quick_gelu {
            Act::QuickGelu
        } else {
            Act::Gelu
        }
    }
}

/// Apply `act`.
pub fn activation<const D: usize>(x: Tensor<D>, act: Act) -> Tensor<D> {
    use crate::fastmath::{gelu_slice, gelu_tangent, quick_gelu_slice, quick_gelu_tangent};
    match act {
        Act::QuickGelu => elementwise(x, quick_gelu_slice, quick_gelu_tangent, |x| {
            x.clone() * sigmoid(x * 1.702)
        }),
        Act::Gelu => elementwise(x, gelu_slice, gelu_tangent, gelu),
        Act::GeluTanh => gelu_approximate(x),
    }
}

/// An activation `f` over f32 tensors on the CPU in vectorised passes ([`crate::fastmath`]);
/// `ops` (burn's own ops) for other dtypes and devices.
///
/// Inference: `fast` in place, one pass. Training (autodiff): burn-flex evaluates the `exp` inside
/// σ (or `erf`) value by value through libm and keeps the chain's intermediates for its backward
/// pass (13% of a training step in the issue-11 profile). Instead, one pass of `tangent` gives
/// each value's slope `c = f'(x)` and offset `e = x·c − f(x)`, and the graph records
/// `f(x) = x ⊙ c − e` with `c` and `e` constants: the same values (up to the rounding of one
/// multiply-subtract) and the same gradient `∂L/∂x = ∂L/∂y ⊙ f'(x)`, from one multiplication in
/// the backward pass.
pub(super) fn elementwise<const D: usize>(
    x: Tensor<D>,
    fast: fn(&mut [f32]),
    tangent: fn(&mut [f32], &mut [f32]),
    ops: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if !crate::cpu_f32(&x) {
        return ops(x);
    }
    let (shape, device) = (x.shape(), x.device());
    if x.is_autodiff() {
        let Ok(mut slope) = x.clone().inner().into_data().try_into_vec::<f32>() else {
            return ops(x);
        };
        let mut offset = vec![0f32; slope.len()];
        tangent(&mut slope, &mut offset);
        let slope = Tensor::from_data(TensorData::new(slope, shape.clone()), &device);
        let offset = Tensor::from_data(TensorData::new(offset, shape), &device);
        return x * slope - offset;
    }
    let mut v = match into_f32_vec(x) {
        Ok(v) => v,
        Err(x) => return ops(x),
    };
    fast(&mut v);
    Tensor::from_data(TensorData::new(v, shape), &device)
}
