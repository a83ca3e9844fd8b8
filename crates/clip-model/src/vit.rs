//! The ViT image tower (OpenAI's `VisionTransformer`): patch embedding (a conv with no bias, done
//! as a matmul over patches), class token, positional embedding, `ln_pre`, pre-LN blocks, `ln_post`
//! on the class token, `proj`.

use std::sync::Arc;

use burn::module::Param;
use burn::prelude::*;

use crate::capture::Capture;
use crate::error::LoadError;
use crate::lowp::{PackedLinear, Precision};
use crate::source::{Init, Layout, Source, param, transpose};
use crate::transformer::{LayerNorm, Transformer, TransformerDims, pack_weight, packed_forward};

#[derive(Module, Debug)]
pub struct VisionTransformer {
    /// Patch embedding as a matrix `[3·p·p, W]` (checkpoint `conv1.weight` `[W, 3, p, p]`).
    pub conv1: Param<Tensor<2>>,
    pub class_embedding: Param<Tensor<1>>,
    pub positional_embedding: Param<Tensor<2>>,
    pub ln_pre: LayerNorm,
    pub transformer: Transformer,
    pub ln_post: LayerNorm,
    /// `[W, E]`
    pub proj: Param<Tensor<2>>,
    pub patch_size: usize,
    /// The patch embedding packed for CPU inference ([`VisionTransformer::set_precision`];
    /// `conv1` is then emptied).
    #[module(skip)]
    pub conv1_packed: Option<Arc<PackedLinear>>,
}

/// Sizes of a ViT tower.
#[derive(Debug, Clone, Copy)]
pub struct VitDims {
    pub image_size: usize,
    pub patch_size: usize,
    /// the residual blocks (width, depth, heads, MLP, activation)
    pub blocks: TransformerDims,
    pub embed_dim: usize,
}

impl VisionTransformer {
    pub fn load(src: &mut dyn Source, d: VitDims, device: &Device) -> Result<Self, LoadError> {
        let (w, p) = (d.blocks.width, d.patch_size);
        let grid = d.image_size / p;
        let scale = (w as f64).powf(-0.5);
        let fan_in = 3 * p * p;
        let conv = src.take(
            "visual.conv1.weight",
            &[w, 3, p, p],
            Init::Uniform(1.0 / (fan_in as f64).sqrt()),
        )?;
        let conv1 = Param::from_tensor(Tensor::from_data(
            TensorData::new(transpose(&conv, w, fan_in), [fan_in, w]),
            device,
        ));
        src.bind(
            "visual.conv1.weight",
            conv1.id,
            Layout::FlatTransposed(vec![w, 3, p, p]),
        );
        Ok(VisionTransformer {
            conv1,
            class_embedding: param(
                src,
                "visual.class_embedding",
                [w],
                Init::Normal(scale),
                device,
            )?,
            positional_embedding: param(
                src,
                "visual.positional_embedding",
                [grid * grid + 1, w],
                Init::Normal(scale),
                device,
            )?,
            ln_pre: LayerNorm::load(src, "visual.ln_pre", w, device)?,
            transformer: Transformer::load(src, "visual.transformer", d.blocks, device)?,
            ln_post: LayerNorm::load(src, "visual.ln_post", w, device)?,
            proj: param(
                src,
                "visual.proj",
                [w, d.embed_dim],
                Init::Normal(scale),
                device,
            )?,
            patch_size: p,
            conv1_packed: None,
        })
    }

    /// Keep the blocks in `precision` for CPU inference, and pack the patch embedding in f32 beside
    /// them: the packed product runs its 49 or so rows per image at twice `gemm`'s speed (2% of
    /// ViT-B-32's pass at batch 1). f32 in every precision, like the ResNet stem's first
    /// convolution: the first layer sees the pixels themselves, and rounding them to bf16 moved
    /// zero-shot agreement with f32 from 0.984 to 0.972 (`bench_precision.py`, random weights) to
    /// speed up 2.6% of the arithmetic.
    pub fn set_precision(&mut self, precision: Precision) {
        self.transformer.set_precision(precision);
        if self.conv1_packed.is_none() {
            self.conv1_packed = pack_weight(&mut self.conv1, None, Precision::F32);
        }
    }

    /// Bytes held by the packed layers.
    pub fn packed_bytes(&self) -> usize {
        let conv1 = self.conv1_packed.as_ref().map_or(0, |p| p.bytes());
        self.transformer.packed_bytes() + conv1
    }

    /// `[B, 3, S, S]` normalised images → every token after `ln_post`, `[B, 1 + g², W]` (class
    /// token first): what a caption decoder cross-attends to.
    pub fn forward_tokens(&self, x: Tensor<4>) -> Tensor<3> {
        self.ln_post.forward(self.blocks(x, None))
    }

    /// `[B, 3, S, S]` normalised images → `[B, E]` unnormalised features.
    pub fn forward(&self, x: Tensor<4>, capture: Option<&mut Capture>) -> Tensor<2> {
        let x = self.blocks(x, capture);
        let [b, _, width] = x.dims();
        let cls = x.narrow(1, 0, 1).reshape([b, width]); // [B, W]
        self.ln_post.forward(cls).matmul(self.proj.val()) // [B, E]
    }

    /// `[B, 3, S, S]` normalised images → block `block`'s MLP hidden units after the activation,
    /// `[B, 1 + g², mlp_width]` (differentiable); `None` past the last block.
    pub fn mlp_hidden(&self, x: Tensor<4>, block: usize) -> Option<Tensor<3>> {
        self.transformer.mlp_hidden(self.embed(x), false, block)
    }

    /// Patch embedding, class token, positions, `ln_pre` and the blocks: `[B, 1 + g², W]`.
    fn blocks(&self, x: Tensor<4>, capture: Option<&mut Capture>) -> Tensor<3> {
        self.transformer
            .forward(self.embed(x), false, "visual.transformer", capture)
    }

    /// Patch embedding, class token, positions and `ln_pre`: `[B, 1 + g², W]`.
    fn embed(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = x.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let patches = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5]) // [B, gh, gw, 3, p, p]
            .reshape([b * gh * gw, c * p * p]);
        let width = self.conv1.dims()[1];
        let packed = match self.conv1_packed.as_deref() {
            Some(p) => packed_forward(p, patches),
            None => Err(patches),
        };
        let x = packed
            .unwrap_or_else(|patches| patches.matmul(self.conv1.val()))
            .reshape([b, gh * gw, width]); // [B, g*g, W]
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, width])
            .expand([b, 1, width]);
        let x = Tensor::cat(vec![cls, x], 1); // [B, g*g+1, W]
        let x = x + self.positional_embedding.val().unsqueeze();
        self.ln_pre.forward(x)
    }
}
