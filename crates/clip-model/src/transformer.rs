//! The pre-LayerNorm residual attention blocks shared by the ViT and the text tower
//! (OpenAI's `ResidualAttentionBlock` / `Transformer`), plus LayerNorm and Linear with checkpoint
//! field names.

use std::sync::Arc;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, sigmoid};
use burn::tensor::module::{attention, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;

use crate::capture::Capture;
use crate::error::LoadError;
use crate::lowp::{PackedLinear, Precision};
use crate::source::{Init, Source, param, param_t, to_vec, vector};

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
fn pack_weight(
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
fn packed_forward<const D: usize>(p: &PackedLinear, x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
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
fn elementwise<const D: usize>(
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

/// Split `[B, L, H*hd]` into heads `[B, H, L, hd]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, l, w] = x.dims();
    x.reshape([b, l, heads, w / heads]).swap_dims(1, 2)
}

/// Merge `[B, H, L, hd]` back into `[B, L, H*hd]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, l, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, l, h * hd])
}

/// Scaled dot-product attention over heads (fused kernel of the backend).
pub fn sdpa(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal: bool) -> Tensor<4> {
    attention(
        q,
        k,
        v,
        None,
        None,
        AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        },
    )
}

/// `nn.MultiheadAttention` with packed input projection (`in_proj_weight`), batch-first.
#[derive(Module, Debug)]
pub struct MultiheadAttention {
    /// `[W, 3W]` (checkpoint `[3W, W]` transposed)
    pub in_proj_weight: Param<Tensor<2>>,
    pub in_proj_bias: Param<Tensor<1>>,
    pub out_proj: Linear,
    pub heads: usize,
    /// The input projection in reduced precision ([`MultiheadAttention::set_precision`]).
    #[module(skip)]
    pub in_proj_packed: Option<Arc<PackedLinear>>,
}

impl MultiheadAttention {
    /// Keep the projections in `precision` for CPU inference (see [`Linear::set_precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        if self.in_proj_packed.is_none() {
            self.in_proj_packed = pack_weight(
                &mut self.in_proj_weight,
                Some(&self.in_proj_bias),
                precision,
            );
        }
        self.out_proj.set_precision(precision);
    }

    /// Bytes held by the packed projections.
    pub fn packed_bytes(&self) -> usize {
        self.in_proj_packed.as_ref().map_or(0, |p| p.bytes()) + self.out_proj.packed_bytes()
    }

    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let w = x.dims()[2];
        let packed = match self.in_proj_packed.as_deref() {
            Some(p) => packed_forward(p, x),
            None => Err(x),
        };
        let qkv = match packed {
            Ok(qkv) => qkv,
            Err(x) => linear(x, self.in_proj_weight.val(), Some(self.in_proj_bias.val())), // [B, L, 3W]
        };
        let qkv = if self.heads > 0 && w.is_multiple_of(self.heads) {
            let [b, l, _] = qkv.dims();
            let device = qkv.device();
            match into_f32_vec(qkv) {
                Ok(packed) => {
                    let out = crate::attention_cpu::attend(&packed, b, l, w, self.heads, causal);
                    drop(packed);
                    let out = Tensor::<3>::from_data(TensorData::new(out, [b, l, w]), &device);
                    return self.out_proj.forward(out);
                }
                Err(qkv) => qkv,
            }
        } else {
            qkv
        };
        let q = split_heads(qkv.clone().narrow(2, 0, w), self.heads); // [B, H, L, hd]
        let k = split_heads(qkv.clone().narrow(2, w, w), self.heads);
        let v = split_heads(qkv.narrow(2, 2 * w, w), self.heads);
        self.out_proj.forward(merge_heads(sdpa(q, k, v, causal))) // [B, L, W]
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    #[module(skip)]
    pub act: Act,
}

impl Mlp {
    /// Keep both layers in `precision` for CPU inference.
    pub fn set_precision(&mut self, precision: Precision) {
        self.c_fc.set_precision(precision);
        self.c_proj.set_precision(precision);
    }

    /// Bytes held by both layers' packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.c_fc.packed_bytes() + self.c_proj.packed_bytes()
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.c_proj
            .forward(activation(self.c_fc.forward(x), self.act))
    }
}

#[derive(Module, Debug)]
pub struct ResidualAttentionBlock {
    pub attn: MultiheadAttention,
    pub ln_1: LayerNorm,
    pub mlp: Mlp,
    pub ln_2: LayerNorm,
}

impl ResidualAttentionBlock {
    pub fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), causal);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }

    /// [`Self::forward`], offering the MLP's hidden units after the activation (`[B, T, mlp_width]`)
    /// to `capture` as `{name}.mlp` (the same operations in the same order).
    fn forward_capturing(
        &self,
        x: Tensor<3>,
        causal: bool,
        name: &str,
        capture: &mut Capture,
    ) -> Tensor<3> {
        let hidden = format!("{name}.mlp");
        if !capture.wants(&hidden) {
            return self.forward(x, causal);
        }
        let (x, h) = self.attend_and_expand(x, causal);
        capture.offer(|| hidden, &h);
        x + self.mlp.c_proj.forward(h)
    }

    /// The residual stream after attention, and the MLP's hidden units after the activation.
    fn attend_and_expand(&self, x: Tensor<3>, causal: bool) -> (Tensor<3>, Tensor<3>) {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), causal);
        let h = activation(
            self.mlp.c_fc.forward(self.ln_2.forward(x.clone())),
            self.mlp.act,
        );
        (x, h)
    }
}

/// A stack of residual attention blocks (`{prefix}.resblocks.N`).
#[derive(Module, Debug)]
pub struct Transformer {
    pub resblocks: Vec<ResidualAttentionBlock>,
}

/// Sizes of a transformer stack.
#[derive(Debug, Clone, Copy)]
pub struct TransformerDims {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_width: usize,
    pub act: Act,
    /// LayerNorm epsilon
    pub eps: f64,
    pub keys: BlockKeys,
}

/// How a checkpoint names the blocks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockKeys {
    /// OpenAI / open_clip: `resblocks.N.{ln_1, attn.in_proj_weight, attn.in_proj_bias,
    /// attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`
    #[default]
    OpenAi,
    /// timm's ViT: `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`
    Timm,
}

impl BlockKeys {
    /// The checkpoint name of one of a block's tensors, given by its OpenAI name.
    fn key(self, block: &str, name: &str) -> String {
        let timm = match name {
            "ln_1" => "norm1",
            "attn.in_proj_weight" => "attn.qkv.weight",
            "attn.in_proj_bias" => "attn.qkv.bias",
            "attn.out_proj" => "attn.proj",
            "ln_2" => "norm2",
            "mlp.c_fc" => "mlp.fc1",
            "mlp.c_proj" => "mlp.fc2",
            other => other,
        };
        match self {
            BlockKeys::OpenAi => format!("{block}.{name}"),
            BlockKeys::Timm => format!("{block}.{timm}"),
        }
    }

    fn block(self, prefix: &str, i: usize) -> String {
        match self {
            BlockKeys::OpenAi => format!("{prefix}.resblocks.{i}"),
            BlockKeys::Timm => format!("{prefix}.blocks.{i}"),
        }
    }
}

impl Transformer {
    /// Load `{prefix}.resblocks.{i}.…` (or timm's `{prefix}.blocks.{i}.…`); random init follows open_clip's `init_parameters`.
    pub fn load(
        src: &mut dyn Source,
        prefix: &str,
        d: TransformerDims,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let w = d.width;
        let attn_std = (w as f64).powf(-0.5);
        let proj_std = attn_std * ((2 * d.layers.max(1)) as f64).powf(-0.5);
        let fc_std = ((2 * w) as f64).powf(-0.5);
        let mut resblocks = Vec::with_capacity(d.layers);
        for i in 0..d.layers {
            let b = d.keys.block(prefix, i);
            let k = |name: &str| d.keys.key(&b, name);
            resblocks.push(ResidualAttentionBlock {
                attn: MultiheadAttention {
                    in_proj_weight: param_t(
                        src,
                        &k("attn.in_proj_weight"),
                        [3 * w, w],
                        Init::Normal(attn_std),
                        device,
                    )?,
                    in_proj_bias: param(
                        src,
                        &k("attn.in_proj_bias"),
                        [3 * w],
                        Init::Constant(0.0),
                        device,
                    )?,
                    out_proj: Linear::load(src, &k("attn.out_proj"), w, w, true, proj_std, device)?,
                    heads: d.heads,
                    in_proj_packed: None,
                },
                ln_1: LayerNorm::load_eps(src, &k("ln_1"), w, d.eps, device)?,
                mlp: Mlp {
                    c_fc: Linear::load(src, &k("mlp.c_fc"), w, d.mlp_width, true, fc_std, device)?,
                    c_proj: Linear::load(
                        src,
                        &k("mlp.c_proj"),
                        d.mlp_width,
                        w,
                        true,
                        proj_std,
                        device,
                    )?,
                    act: d.act,
                },
                ln_2: LayerNorm::load_eps(src, &k("ln_2"), w, d.eps, device)?,
            });
        }
        Ok(Transformer { resblocks })
    }

    /// Bytes held by packed (reduced-precision) weights.
    pub fn packed_bytes(&self) -> usize {
        self.resblocks
            .iter()
            .map(|b| b.attn.packed_bytes() + b.mlp.packed_bytes())
            .sum()
    }

    /// Keep every block's projections and MLP in `precision` for CPU inference.
    pub fn set_precision(&mut self, precision: Precision) {
        for b in &mut self.resblocks {
            b.attn.set_precision(precision);
            b.mlp.set_precision(precision);
        }
    }

    /// Block `block`'s MLP hidden units after the activation, `[B, T, mlp_width]`, as a tensor
    /// (differentiable, for feature visualisation); `None` past the last block.
    pub fn mlp_hidden(&self, mut x: Tensor<3>, causal: bool, block: usize) -> Option<Tensor<3>> {
        let target = self.resblocks.get(block)?;
        for b in &self.resblocks[..block] {
            x = b.forward(x, causal);
        }
        Some(target.attend_and_expand(x, causal).1)
    }

    /// Run the blocks; block `i`'s output is offered to `capture` as `{prefix}.resblocks.{i}`, its
    /// MLP hidden units as `{prefix}.resblocks.{i}.mlp`.
    pub fn forward(
        &self,
        mut x: Tensor<3>,
        causal: bool,
        prefix: &str,
        mut capture: Option<&mut Capture>,
    ) -> Tensor<3> {
        for (i, block) in self.resblocks.iter().enumerate() {
            let name = format!("{prefix}.resblocks.{i}");
            x = match capture.as_deref_mut() {
                Some(c) => block.forward_capturing(x, causal, &name, c),
                None => block.forward(x, causal),
            };
            if let Some(c) = capture.as_deref_mut() {
                c.offer(|| name, &x);
            }
        }
        x
    }
}
