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

mod layers;
pub use layers::*;

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
