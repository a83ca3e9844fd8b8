//! The two-tower CLIP: `encode_image`, `encode_text`, logits, and saving under the checkpoint keys.

use std::collections::HashMap;
use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::capture::Capture;
use crate::config::{ClipConfig, VisionKind};
use crate::error::LoadError;
use crate::lowp::Precision;
use crate::resnet::{ModifiedResNet, ResNetDims};
use crate::resnet_cpu::FoldedResNet;
use crate::source::{
    Binding, Checkpoint, Init, Layout, RandomInit, RawTensor, Recorder, Source, param, to_vec,
    transpose,
};
use crate::text::{TextDims, TextInputError, TextTransformer};
use crate::timm_vit::{TimmDims, TimmVit};
use crate::transformer::{Act, BlockKeys, TransformerDims};
use crate::vit::{VisionTransformer, VitDims};

/// The image tower.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per model
pub enum VisualTower {
    Vit(VisionTransformer),
    ResNet(ModifiedResNet),
    Timm(TimmVit),
}

/// All parameters of a CLIP, as a burn module (what an optimiser updates).
#[derive(Module, Debug)]
pub struct ClipModule {
    pub visual: VisualTower,
    pub text: TextTransformer,
    /// ln of the logit scale, shape `[1]`
    pub logit_scale: Param<Tensor<1>>,
    /// the logits' learned bias, shape `[1]` (SigLIP)
    pub logit_bias: Option<Param<Tensor<1>>>,
}

/// A CLIP with its configuration and the checkpoint key of every parameter.
#[derive(Debug)]
pub struct Clip {
    /// The parameters; replaced only through [`Clip::set_module`], which drops what was derived
    /// from them.
    module: ClipModule,
    pub config: ClipConfig,
    pub bindings: Vec<Binding>,
    /// A ResNet tower's convolutions with BatchNorm folded in, for CPU inference (built at the
    /// first such call; `None` inside when the tower cannot take that path).
    folded: OnceLock<Option<FoldedResNet>>,
    /// The precision of inference ([`Clip::set_precision`]).
    precision: Precision,
    /// Whether [`Clip::set_precision`] packed the weights (their f32 parameters are freed).
    packed: bool,
}

impl Clip {
    /// Build from any parameter source (checkpoint or random init).
    pub fn load(
        config: &ClipConfig,
        src: &mut dyn Source,
        device: &Device,
    ) -> Result<Clip, LoadError> {
        config.validate()?;
        let mut rec = Recorder {
            inner: src,
            bindings: Vec::new(),
        };
        let v = &config.vision_cfg;
        let blocks = |width: usize, layers: usize, heads: usize, mlp_ratio: f64| TransformerDims {
            width,
            layers,
            heads,
            mlp_width: (width as f64 * mlp_ratio) as usize,
            act: Act::quick(config.quick_gelu),
            eps: 1e-5,
            keys: BlockKeys::OpenAi,
        };
        let visual = match config.vision_kind()? {
            VisionKind::Vit {
                patch_size,
                layers,
                heads,
            } => VisualTower::Vit(VisionTransformer::load(
                &mut rec,
                VitDims {
                    image_size: v.image_size,
                    patch_size,
                    blocks: blocks(v.width, layers, heads, v.mlp_ratio),
                    embed_dim: config.embed_dim,
                },
                device,
            )?),
            VisionKind::Timm {
                patch_size,
                layers,
                heads,
                gelu_tanh,
                eps,
            } => VisualTower::Timm(TimmVit::load(
                &mut rec,
                TimmDims {
                    image_size: v.image_size,
                    patch_size,
                    blocks: TransformerDims {
                        act: if gelu_tanh { Act::GeluTanh } else { Act::Gelu },
                        eps,
                        keys: BlockKeys::Timm,
                        ..blocks(v.width, layers, heads, v.mlp_ratio)
                    },
                },
                device,
            )?),
            VisionKind::ResNet { layers, heads } => VisualTower::ResNet(ModifiedResNet::load(
                &mut rec,
                ResNetDims {
                    image_size: v.image_size,
                    layers,
                    width: v.width,
                    heads,
                    embed_dim: config.embed_dim,
                },
                device,
            )?),
        };
        let t = &config.text_cfg;
        let text = TextTransformer::load(
            &mut rec,
            TextDims {
                context_length: t.context_length,
                vocab_size: t.vocab_size,
                blocks: TransformerDims {
                    act: if t.gelu_tanh()? {
                        Act::GeluTanh
                    } else {
                        Act::quick(config.quick_gelu)
                    },
                    eps: t.norm_eps(),
                    ..blocks(t.width, t.layers, t.heads, t.mlp_ratio)
                },
                embed_dim: config.embed_dim,
                causal: !t.no_causal_mask,
                pool: t.pool()?,
                proj: t.projection()?,
                prefix: if config.custom_text { "text." } else { "" },
            },
            device,
        )?;
        let logit_scale = param(
            &mut rec,
            "logit_scale",
            [1],
            Init::Constant(config.init_logit_scale.unwrap_or((1.0f64 / 0.07).ln())),
            device,
        )?;
        let logit_bias = match config.init_logit_bias {
            Some(b) => Some(param(
                &mut rec,
                "logit_bias",
                [1],
                Init::Constant(b),
                device,
            )?),
            None => None,
        };
        Ok(Clip {
            module: ClipModule {
                visual,
                text,
                logit_scale,
                logit_bias,
            },
            config: config.clone(),
            bindings: rec.bindings,
            folded: OnceLock::new(),
            precision: Precision::F32,
            packed: false,
        })
    }

    /// Build from a checkpoint; every tensor in it must be used.
    pub fn from_checkpoint(
        config: &ClipConfig,
        mut ckpt: Checkpoint,
        device: &Device,
    ) -> Result<Clip, LoadError> {
        let clip = Clip::load(config, &mut ckpt, device)?;
        ckpt.finish()?;
        Ok(clip)
    }

    /// A freshly initialised model (open_clip's initialisation scheme), deterministic by seed.
    pub fn random(config: &ClipConfig, seed: u64, device: &Device) -> Result<Clip, LoadError> {
        Clip::load(config, &mut RandomInit::new(seed), device)
    }

    /// The parameters (what an optimiser reads and what gradients are taken of).
    pub fn module(&self) -> &ClipModule {
        &self.module
    }

    /// Replace the parameters (an optimiser's step); weights derived for inference are rebuilt
    /// from the new ones at their next use.
    pub fn set_module(&mut self, module: ClipModule) {
        self.module = module;
        self.folded = OnceLock::new();
        self.precision = Precision::F32;
        self.packed = false;
    }

    /// Bytes of weights held: the parameters (f32; emptied ones count 0), the packed layers of
    /// reduced precision and the ResNet's folded convolutions once built.
    pub fn weight_bytes(&self) -> usize {
        struct Count(usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0 += p.val().shape().num_elements() * 4;
            }
        }
        let mut c = Count(0);
        self.module.visit(&mut c);
        let packed = match &self.module.visual {
            VisualTower::Vit(v) => v.packed_bytes(),
            VisualTower::Timm(t) => t.blocks.packed_bytes() + t.attn_pool.packed_bytes(),
            VisualTower::ResNet(r) => {
                let folded = self.folded.get().and_then(|f| f.as_ref());
                r.attnpool.packed_bytes() + folded.map_or(0, FoldedResNet::bytes)
            }
        };
        c.0 + packed + self.module.text.transformer.packed_bytes()
    }

    /// The precision inference runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Run inference in `precision` ([`crate::lowp`]): every transformer block's projections and
    /// MLP, the pooling layers and the ResNet's folded convolutions are packed in bf16 or int8, and
    /// their f32 weights freed. f32 packs them too, values unchanged, where the CPU runs the
    /// AVX-512 or AVX2+FMA f32 kernel ([`crate::lowp::packs`]; elsewhere, and off the CPU, f32 leaves the
    /// model as it is). One way: a packed model serves CPU inference only (no training, saving
    /// or fingerprinting: take the fingerprint first). Errors off the CPU for bf16 and int8, and
    /// when asked for another precision once packed.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), LoadError> {
        if self.packed {
            if precision == self.precision {
                return Ok(());
            }
            return Err(LoadError::Unsupported(format!(
                "this model already runs in {}; load it again for {precision}",
                self.precision
            )));
        }
        if precision == Precision::F32
            && (!crate::lowp::packs(precision) || self.device() != crate::cpu())
        {
            return Ok(());
        }
        if self.device() != crate::cpu() {
            return Err(LoadError::Unsupported(format!(
                "--precision {precision} runs on the CPU only (the model is on {:?})",
                self.device()
            )));
        }
        match &mut self.module.visual {
            VisualTower::Vit(v) => v.set_precision(precision),
            VisualTower::Timm(t) => {
                t.blocks.set_precision(precision);
                t.attn_pool.set_precision(precision);
            }
            VisualTower::ResNet(r) => {
                let folded = FoldedResNet::new(r, precision);
                if folded.pools() {
                    r.attnpool.empty_projections();
                } else {
                    r.attnpool.set_precision(precision);
                }
                r.empty_convolutions();
                self.folded = OnceLock::from(Some(folded));
            }
        }
        self.module.text.transformer.set_precision(precision);
        self.precision = precision;
        self.packed = true;
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.module.logit_scale.device()
    }

    /// `[B, 3, S, S]` normalised images → `[B, E]` unnormalised features.
    pub fn encode_image(&self, images: Tensor<4>) -> Tensor<2> {
        self.encode_image_with(images, None)
    }

    /// As [`Clip::encode_image`], offering block outputs to `capture`.
    pub fn encode_image_with(&self, images: Tensor<4>, capture: Option<&mut Capture>) -> Tensor<2> {
        on_worker(|| match &self.module.visual {
            VisualTower::Vit(v) => v.forward(images, capture),
            VisualTower::ResNet(r) => match self.folded_resnet(r, &images) {
                Some(f) => f.forward(r, images, capture),
                None => {
                    assert!(
                        !self.packed,
                        "a {} model runs on f32 CPU tensors without autodiff only",
                        self.precision
                    );
                    r.forward(images, capture)
                }
            },
            VisualTower::Timm(t) => t.forward(images, capture),
        })
    }

    /// The folded ResNet tower when `images` go through burn's CPU backend without autodiff.
    fn folded_resnet(&self, r: &ModifiedResNet, images: &Tensor<4>) -> Option<&FoldedResNet> {
        let plain = |t: &Tensor<4>| !t.is_autodiff() && crate::cpu_f32(t);
        if !plain(images) || !plain(&r.conv1.weight.val()) {
            return None;
        }
        self.folded
            .get_or_init(|| Some(FoldedResNet::new(r, Precision::F32)))
            .as_ref()
    }

    /// Token rows (as from the tokenizer, padded or not) → `[B, E]` unnormalised features.
    pub fn encode_text(&self, rows: &[Vec<u32>]) -> Result<Tensor<2>, TextInputError> {
        on_worker(|| self.module.text.forward(rows, None))
    }

    /// As [`Clip::encode_text`], offering block outputs to `capture`.
    pub fn encode_text_with(
        &self,
        rows: &[Vec<u32>],
        capture: Option<&mut Capture>,
    ) -> Result<Tensor<2>, TextInputError> {
        on_worker(|| self.module.text.forward(rows, capture))
    }

    /// `exp(logit_scale)`.
    pub fn logit_scale(&self) -> f32 {
        to_vec(&self.module.logit_scale.val())[0].exp()
    }

    /// The logit bias (SigLIP), if the model has one.
    pub fn logit_bias(&self) -> Option<f32> {
        self.module.logit_bias.as_ref().map(|b| to_vec(&b.val())[0])
    }

    /// Image-by-text logits from unnormalised features: `exp(s) · norm(img) · norm(txt)ᵀ (+ b)`.
    pub fn logits(&self, image_features: Tensor<2>, text_features: Tensor<2>) -> Tensor<2> {
        let scale = self.module.logit_scale.val().exp().unsqueeze(); // [1, 1]
        let logits =
            l2_normalize(image_features).matmul(l2_normalize(text_features).transpose()) * scale;
        match &self.module.logit_bias {
            Some(b) => logits + b.val().unsqueeze(),
            None => logits,
        }
    }

    /// Whether every parameter is finite (no NaN or infinity).
    pub fn is_finite(&self) -> bool {
        struct Check(bool);
        impl ModuleVisitor for Check {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if self.0 {
                    self.0 = to_vec(&p.val()).iter().all(|v| v.is_finite());
                }
            }
        }
        let mut c = Check(true);
        self.module.visit(&mut c);
        c.0
    }

    /// Parameters under their checkpoint keys, in checkpoint layout (open_clip/OpenAI keys).
    pub fn state_dict(&self) -> Vec<(String, RawTensor)> {
        let mut out = Vec::with_capacity(self.bindings.len());
        self.for_each_state(|key, raw| out.push((key.to_owned(), raw)));
        out
    }

    /// [`Clip::state_dict`] one tensor at a time, in the same order: only one parameter is copied
    /// out of the model at once (hashing a 600 MB model no longer holds a second copy of it).
    ///
    /// Panics on a model whose weights were packed by [`Clip::set_precision`] (they are gone).
    pub fn for_each_state(&self, mut f: impl FnMut(&str, RawTensor)) {
        assert!(
            !self.packed,
            "the f32 weights of this model were packed for {} inference; take its state before \
             set_precision",
            self.precision
        );
        /// Each parameter's tensor (a shared handle, not a copy) and how to copy it out, by id.
        type Read = Box<dyn FnOnce() -> (Vec<usize>, Vec<f32>)>;
        struct Collect(HashMap<ParamId, Read>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let t = p.val();
                self.0
                    .insert(p.id, Box::new(move || (t.dims().to_vec(), to_vec(&t))));
            }
        }
        let mut c = Collect(HashMap::new());
        self.module.visit(&mut c);
        for b in &self.bindings {
            let read =
                c.0.remove(&b.id)
                    .expect("every bound parameter is in the module");
            let (dims, data) = read();
            let raw = match &b.layout {
                // open_clip and OpenAI store the logit scale (and bias) as a 0-d tensor
                Layout::Same(_) if b.key == "logit_scale" || b.key == "logit_bias" => {
                    RawTensor::new(vec![], data)
                }
                Layout::Same(_) => RawTensor::new(dims, data),
                Layout::Transposed { rows, cols } => {
                    RawTensor::new(vec![*rows, *cols], transpose(&data, *cols, *rows))
                }
                Layout::FlatTransposed(shape) => {
                    let rows = shape[0];
                    let cols = data.len() / rows;
                    RawTensor::new(shape.clone(), transpose(&data, cols, rows))
                }
            };
            f(&b.key, raw);
        }
    }
}

/// Run a forward pass on a worker of rayon's pool. Every parallel operation inside (burn-flex's
/// kernels, gemm, the folded ResNet's passes) then splits work with its siblings in place; called
/// from a thread outside the pool, each one instead queued a job, woke a worker and put the caller
/// to sleep until it finished — at batch 1, hundreds of such round trips per image (a tenth of
/// RN50's time in the scheduler).
/// (On a worker already, `rayon::scope` runs `f` in place.)
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt(); // [B, 1]
    x / norm
}
