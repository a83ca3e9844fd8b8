//! SigLIP's image tower: open_clip's `TimmModel` over timm's `VisionTransformer` in the SigLIP form
//! (`class_token=False, global_pool='map'`, `timm_proj: none`), under `visual.trunk.*`:
//! patch embedding (a conv *with* bias, done as a matmul over patches), positional embedding for
//! the patches only, pre-LN blocks (timm's names, LayerNorm eps 1e-6), the final `norm`, then the
//! attention-pool head `attn_pool` (timm's `AttentionPoolLatent`): one learned latent query attends
//! over the tokens (`q`, packed `kv`, `proj`), then `x + mlp(norm(x))`, and its one token is the
//! image embedding (no projection after it).

use burn::module::Param;
use burn::prelude::*;

use crate::capture::Capture;
use crate::error::LoadError;
use crate::lowp::Precision;
use crate::source::{Init, Layout, Source, param, transpose};
use crate::transformer::{
    LayerNorm, Linear, Mlp, Transformer, TransformerDims, merge_heads, sdpa, split_heads,
};

/// timm's `AttentionPoolLatent` with one latent (`pool='token'`).
#[derive(Module, Debug)]
pub struct AttentionPoolLatent {
    /// `[1, 1, W]`
    pub latent: Param<Tensor<3>>,
    pub q: Linear,
    /// `[W, 2W]`: keys then values
    pub kv: Linear,
    pub proj: Linear,
    pub norm: LayerNorm,
    pub mlp: Mlp,
    pub heads: usize,
}

impl AttentionPoolLatent {
    /// Keep the projections and the MLP in `precision` for CPU inference.
    pub fn set_precision(&mut self, precision: Precision) {
        self.q.set_precision(precision);
        self.kv.set_precision(precision);
        self.proj.set_precision(precision);
        self.mlp.set_precision(precision);
    }

    /// Bytes held by the packed projections and MLP.
    pub fn packed_bytes(&self) -> usize {
        self.q.packed_bytes()
            + self.kv.packed_bytes()
            + self.proj.packed_bytes()
            + self.mlp.packed_bytes()
    }

    fn load(
        src: &mut dyn Source,
        key: &str,
        d: TransformerDims,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let w = d.width;
        let std = (w as f64).powf(-0.5);
        let k = |n: &str| format!("{key}.{n}");
        Ok(AttentionPoolLatent {
            latent: param(src, &k("latent"), [1, 1, w], Init::Normal(std), device)?,
            q: Linear::load(src, &k("q"), w, w, true, std, device)?,
            kv: Linear::load(src, &k("kv"), w, 2 * w, true, std, device)?,
            proj: Linear::load(src, &k("proj"), w, w, true, std, device)?,
            norm: LayerNorm::load_eps(src, &k("norm"), w, d.eps, device)?,
            mlp: Mlp {
                c_fc: Linear::load(src, &k("mlp.fc1"), w, d.mlp_width, true, std, device)?,
                c_proj: Linear::load(src, &k("mlp.fc2"), d.mlp_width, w, true, std, device)?,
                act: d.act,
            },
            heads: d.heads,
        })
    }

    /// `[B, N, W]` tokens → `[B, W]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let [b, _, w] = x.dims();
        let q = self.q.forward(self.latent.val().expand([b, 1, w])); // [B, 1, W]
        let kv = self.kv.forward(x); // [B, N, 2W]
        let k = split_heads(kv.clone().narrow(2, 0, w), self.heads);
        let v = split_heads(kv.narrow(2, w, w), self.heads);
        let x = self
            .proj
            .forward(merge_heads(sdpa(split_heads(q, self.heads), k, v, false))); // [B, 1, W]
        let x = x.clone() + self.mlp.forward(self.norm.forward(x));
        x.reshape([b, w])
    }
}

#[derive(Module, Debug)]
pub struct TimmVit {
    /// Patch embedding as a matrix `[3·p·p, W]` (checkpoint `patch_embed.proj.weight` `[W, 3, p, p]`).
    pub patch_weight: Param<Tensor<2>>,
    pub patch_bias: Param<Tensor<1>>,
    /// `[1, N, W]`
    pub pos_embed: Param<Tensor<3>>,
    pub blocks: Transformer,
    pub norm: LayerNorm,
    pub attn_pool: AttentionPoolLatent,
    pub patch_size: usize,
}

/// Sizes of a timm trunk.
#[derive(Debug, Clone, Copy)]
pub struct TimmDims {
    pub image_size: usize,
    pub patch_size: usize,
    /// the blocks (and the pool head: same width, heads, MLP, activation, eps)
    pub blocks: TransformerDims,
}

const PREFIX: &str = "visual.trunk";

impl TimmVit {
    pub fn load(src: &mut dyn Source, d: TimmDims, device: &Device) -> Result<Self, LoadError> {
        let (w, p) = (d.blocks.width, d.patch_size);
        let grid = d.image_size / p;
        let fan_in = 3 * p * p;
        let key = format!("{PREFIX}.patch_embed.proj.weight");
        let conv = src.take(
            &key,
            &[w, 3, p, p],
            Init::Uniform(1.0 / (fan_in as f64).sqrt()),
        )?;
        let patch_weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(transpose(&conv, w, fan_in), [fan_in, w]),
            device,
        ));
        src.bind(
            &key,
            patch_weight.id,
            Layout::FlatTransposed(vec![w, 3, p, p]),
        );
        Ok(TimmVit {
            patch_weight,
            patch_bias: param(
                src,
                &format!("{PREFIX}.patch_embed.proj.bias"),
                [w],
                Init::Constant(0.0),
                device,
            )?,
            pos_embed: param(
                src,
                &format!("{PREFIX}.pos_embed"),
                [1, grid * grid, w],
                Init::Normal(0.02),
                device,
            )?,
            blocks: Transformer::load(src, PREFIX, d.blocks, device)?,
            norm: LayerNorm::load_eps(src, &format!("{PREFIX}.norm"), w, d.blocks.eps, device)?,
            attn_pool: AttentionPoolLatent::load(
                src,
                &format!("{PREFIX}.attn_pool"),
                d.blocks,
                device,
            )?,
            patch_size: p,
        })
    }

    /// `[B, 3, S, S]` normalised images → `[B, W]` embeddings (unnormalised). Pixels past the
    /// last whole patch are not seen (timm's strided conv drops them).
    pub fn forward(&self, x: Tensor<4>, capture: Option<&mut Capture>) -> Tensor<2> {
        let [_, _, h, w] = x.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let x = x.narrow(2, 0, gh * p).narrow(3, 0, gw * p);
        let [b, c, _, _] = x.dims();
        let patches = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5]) // [B, gh, gw, 3, p, p]
            .reshape([b * gh * gw, c * p * p]);
        let width = self.patch_weight.dims()[1];
        let x = (patches.matmul(self.patch_weight.val()) + self.patch_bias.val().unsqueeze())
            .reshape([b, gh * gw, width]);
        let x = x + self.pos_embed.val();
        let x = self.blocks.forward(x, false, PREFIX, capture);
        self.attn_pool.forward(self.norm.forward(x))
    }
}
