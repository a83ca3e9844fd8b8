//! OpenAI's ModifiedResNet image tower: a 3-conv stem with average pooling, anti-aliased strided
//! Bottlenecks (avg-pool before the stride-1 conv), and an attention-pooling head whose query is the
//! mean-pooled feature.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, batch_norm, conv2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions};

use crate::capture::Capture;
use crate::error::LoadError;
use crate::lowp::Precision;
use crate::source::{Init, Source, param, vector};
use crate::transformer::{Linear, merge_heads, sdpa, split_heads};

/// A bias-free convolution (`{key}.weight` `[out, in, k, k]`).
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub padding: usize,
}

impl Conv2d {
    fn load(
        src: &mut dyn Source,
        key: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        Ok(Conv2d {
            weight: param(
                src,
                &format!("{key}.weight"),
                [c_out, c_in, k, k],
                Init::Uniform(bound),
                device,
            )?,
            padding: k / 2,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let p = self.padding;
        conv2d(
            x,
            self.weight.val(),
            None,
            ConvOptions::new([1, 1], [p, p], [1, 1], 1),
        )
    }
}

/// BatchNorm2d in inference mode (running statistics), eps 1e-5.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
}

impl BatchNorm2d {
    fn load(src: &mut dyn Source, key: &str, c: usize, device: &Device) -> Result<Self, LoadError> {
        let bn = BatchNorm2d {
            weight: vector(src, key, "weight", c, 1.0, device)?,
            bias: vector(src, key, "bias", c, 0.0, device)?,
            running_mean: vector(src, key, "running_mean", c, 0.0, device)?,
            running_var: vector(src, key, "running_var", c, 1.0, device)?,
        };
        // the step counter PyTorch keeps beside the statistics is not used in inference
        let _ = src.take(
            &format!("{key}.num_batches_tracked"),
            &[],
            Init::Constant(0.0),
        );
        Ok(bn)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.running_mean.val(),
            self.running_var.val(),
            1e-5,
        )
    }
}

fn avg_pool(x: Tensor<4>, k: usize) -> Tensor<4> {
    if k == 1 {
        return x;
    }
    avg_pool2d(x, AvgPoolOptions::new([k, k]).with_stride([k, k]))
}

#[derive(Module, Debug)]
pub struct Downsample {
    /// checkpoint `downsample.0`
    pub conv: Conv2d,
    /// checkpoint `downsample.1`
    pub bn: BatchNorm2d,
}

#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv2: Conv2d,
    pub bn2: BatchNorm2d,
    pub conv3: Conv2d,
    pub bn3: BatchNorm2d,
    pub downsample: Option<Downsample>,
    pub stride: usize,
}

impl Bottleneck {
    fn load(
        src: &mut dyn Source,
        key: &str,
        inplanes: usize,
        planes: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let downsample = if stride > 1 || inplanes != planes * 4 {
            Some(Downsample {
                conv: Conv2d::load(
                    src,
                    &format!("{key}.downsample.0"),
                    inplanes,
                    planes * 4,
                    1,
                    device,
                )?,
                bn: BatchNorm2d::load(src, &format!("{key}.downsample.1"), planes * 4, device)?,
            })
        } else {
            None
        };
        Ok(Bottleneck {
            conv1: Conv2d::load(src, &format!("{key}.conv1"), inplanes, planes, 1, device)?,
            bn1: BatchNorm2d::load(src, &format!("{key}.bn1"), planes, device)?,
            conv2: Conv2d::load(src, &format!("{key}.conv2"), planes, planes, 3, device)?,
            bn2: BatchNorm2d::load(src, &format!("{key}.bn2"), planes, device)?,
            conv3: Conv2d::load(src, &format!("{key}.conv3"), planes, planes * 4, 1, device)?,
            bn3: BatchNorm2d::load(src, &format!("{key}.bn3"), planes * 4, device)?,
            downsample,
            stride,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = relu(self.bn2.forward(self.conv2.forward(out)));
        let out = avg_pool(out, self.stride); // anti-aliased downsampling
        let out = self.bn3.forward(self.conv3.forward(out));
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(avg_pool(x, self.stride))),
            None => x,
        };
        relu(out + identity)
    }
}

/// Attention pooling: one query (the mean of the grid) attends over grid + mean.
#[derive(Module, Debug)]
pub struct AttentionPool2d {
    /// `[HW+1, C]`
    pub positional_embedding: Param<Tensor<2>>,
    pub k_proj: Linear,
    pub q_proj: Linear,
    pub v_proj: Linear,
    pub c_proj: Linear,
    pub heads: usize,
}

impl AttentionPool2d {
    /// Keep the four projections in `precision` for CPU inference.
    pub fn set_precision(&mut self, precision: Precision) {
        for l in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.c_proj,
        ] {
            l.set_precision(precision);
        }
    }

    /// Replace the four projections' weights by empty tensors, freeing them (once
    /// [`crate::resnet_cpu::FoldedResNet`] holds its own copies).
    pub fn empty_projections(&mut self) {
        for l in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.c_proj,
        ] {
            let (device, n) = (l.weight.device(), l.weight.dims()[1]);
            l.weight = Param::initialized(l.weight.id, Tensor::zeros([0, n], &device));
        }
    }

    /// Bytes held by the packed projections.
    pub fn packed_bytes(&self) -> usize {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.c_proj]
            .iter()
            .map(|l| l.packed_bytes())
            .sum()
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = x.dims();
        self.forward_tokens(x.reshape([b, c, h * w]).swap_dims(1, 2))
    }

    /// The grid as tokens `[B, HW, C]` → `[B, E]`.
    pub fn forward_tokens(&self, x: Tensor<3>) -> Tensor<2> {
        let b = x.dims()[0];
        let mean = x.clone().mean_dim(1); // [B, 1, C]
        let x = Tensor::cat(vec![mean, x], 1) + self.positional_embedding.val().unsqueeze(); // [B, HW+1, C]
        let q = split_heads(self.q_proj.forward(x.clone().narrow(1, 0, 1)), self.heads); // [B, H, 1, hd]
        let k = split_heads(self.k_proj.forward(x.clone()), self.heads); // [B, H, HW+1, hd]
        let v = split_heads(self.v_proj.forward(x), self.heads);
        let out = self.c_proj.forward(merge_heads(sdpa(q, k, v, false))); // [B, 1, out]
        let d = out.dims()[2];
        out.reshape([b, d])
    }
}

#[derive(Module, Debug)]
pub struct ModifiedResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv2: Conv2d,
    pub bn2: BatchNorm2d,
    pub conv3: Conv2d,
    pub bn3: BatchNorm2d,
    pub layers: Vec<Vec<Bottleneck>>,
    pub attnpool: AttentionPool2d,
}

/// Sizes of a ModifiedResNet tower.
#[derive(Debug, Clone, Copy)]
pub struct ResNetDims {
    pub image_size: usize,
    pub layers: [usize; 4],
    pub width: usize,
    pub heads: usize,
    pub embed_dim: usize,
}

impl ModifiedResNet {
    /// Replace every convolution's weight by an empty tensor, freeing it (once
    /// [`crate::resnet_cpu::FoldedResNet`] holds folded copies and this tower serves inference only).
    pub fn empty_convolutions(&mut self) {
        let empty = |c: &mut Conv2d| {
            let device = c.weight.device();
            c.weight = Param::initialized(c.weight.id, Tensor::zeros([0, 1, 1, 1], &device));
        };
        for c in [&mut self.conv1, &mut self.conv2, &mut self.conv3] {
            empty(c);
        }
        for b in self.layers.iter_mut().flatten() {
            for c in [&mut b.conv1, &mut b.conv2, &mut b.conv3] {
                empty(c);
            }
            if let Some(d) = &mut b.downsample {
                empty(&mut d.conv);
            }
        }
    }

    pub fn load(src: &mut dyn Source, d: ResNetDims, device: &Device) -> Result<Self, LoadError> {
        let w = d.width;
        let stem_conv1 = Conv2d::load(src, "visual.conv1", 3, w / 2, 3, device)?;
        let mut inplanes = w;
        let mut layers = Vec::with_capacity(4);
        for (stage, &blocks) in d.layers.iter().enumerate() {
            let planes = w << stage;
            let mut stage_blocks = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let key = format!("visual.layer{}.{i}", stage + 1);
                stage_blocks.push(Bottleneck::load(
                    src, &key, inplanes, planes, stride, device,
                )?);
                inplanes = planes * 4;
            }
            layers.push(stage_blocks);
        }
        let embed = w * 32;
        let spatial = d.image_size / 32;
        let std = (embed as f64).powf(-0.5);
        let attnpool = AttentionPool2d {
            positional_embedding: param(
                src,
                "visual.attnpool.positional_embedding",
                [spatial * spatial + 1, embed],
                Init::Normal(std),
                device,
            )?,
            k_proj: Linear::load(
                src,
                "visual.attnpool.k_proj",
                embed,
                embed,
                true,
                std,
                device,
            )?,
            q_proj: Linear::load(
                src,
                "visual.attnpool.q_proj",
                embed,
                embed,
                true,
                std,
                device,
            )?,
            v_proj: Linear::load(
                src,
                "visual.attnpool.v_proj",
                embed,
                embed,
                true,
                std,
                device,
            )?,
            c_proj: Linear::load(
                src,
                "visual.attnpool.c_proj",
                embed,
                d.embed_dim,
                true,
                std,
                device,
            )?,
            heads: d.heads,
        };
        Ok(ModifiedResNet {
            conv1: stem_conv1,
            bn1: BatchNorm2d::load(src, "visual.bn1", w / 2, device)?,
            conv2: Conv2d::load(src, "visual.conv2", w / 2, w / 2, 3, device)?,
            bn2: BatchNorm2d::load(src, "visual.bn2", w / 2, device)?,
            conv3: Conv2d::load(src, "visual.conv3", w / 2, w, 3, device)?,
            bn3: BatchNorm2d::load(src, "visual.bn3", w, device)?,
            layers,
            attnpool,
        })
    }

    /// `[B, 3, S, S]` → `[B, E]`; block outputs are offered as `visual.layer{s}.{i}`.
    pub fn forward(&self, x: Tensor<4>, mut capture: Option<&mut Capture>) -> Tensor<2> {
        // stem: the first conv has stride 2
        let p = self.conv1.padding;
        let x = conv2d(
            x,
            self.conv1.weight.val(),
            None,
            ConvOptions::new([2, 2], [p, p], [1, 1], 1),
        );
        let x = relu(self.bn1.forward(x));
        let x = relu(self.bn2.forward(self.conv2.forward(x)));
        let x = relu(self.bn3.forward(self.conv3.forward(x)));
        let mut x = avg_pool(x, 2);
        for (s, stage) in self.layers.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                x = block.forward(x);
                if let Some(c) = capture.as_deref_mut() {
                    c.offer(|| format!("visual.layer{}.{i}", s + 1), &x);
                }
            }
        }
        self.attnpool.forward(x)
    }
}
