//! The VQ-VAE (van den Oord et al. 2017, with the EMA codebook of its appendix and Jukebox's
//! dead-code restarts): a convolutional encoder maps a 64×64 image to a grid of `code_dim`-vectors
//! (each stride-2 layer halves the side: three give 8×8, two 16×16), each vector is replaced by its
//! nearest codebook entry, and a convolutional decoder with transposed convolutions maps the grid
//! back to pixels. Training minimises `‖x − x̂‖² + β‖z − sg(e)‖²`; the gradient passes the
//! quantiser unchanged ([`straight_through`]); the codebook is not trained by gradient but moved by
//! exponential moving averages of its assigned vectors ([`Codebook::ema_update`]), and an entry
//! that no vector chooses for long is restarted at a random encoder output.
//!
//! The networks are burn modules; the codebook lives on the host (its update is a scatter of
//! counts and sums, and the nearest-entry search one matrix product through `gemm`).
//!
//! [`codebook`] holds the codebook and its update; [`train`] the training run and its report.

pub mod codebook;
pub mod train;

use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use clip_model::source::to_vec;
use serde::{Deserialize, Serialize};

pub use codebook::{Codebook, DEAD_BELOW, DECAY, EPS, perplexity};
pub use train::{VQ_KIND, VqOptions, VqReport, VqSettings, train};
pub(crate) use train::{adam, epoch_picks};

use crate::data;
use crate::runs::Run;
use crate::{EvalError, invalid};
use clip_train::AdamW;
use clip_train::objectives::state;

/// Sizes of a VQ-VAE.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VqDims {
    /// image side in pixels
    pub image: usize,
    /// stride-2 layers: the code grid's side is `image / 2^downsample`
    pub downsample: usize,
    /// channels after the first stride-2 layer (doubled by each further one)
    pub channels: usize,
    pub code_dim: usize,
    /// codebook entries
    pub codes: usize,
}

impl VqDims {
    pub fn grid(&self) -> usize {
        self.image >> self.downsample
    }
    /// Codes per image.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid()
    }
    fn widths(&self) -> Vec<usize> {
        (0..self.downsample).map(|i| self.channels << i).collect()
    }
    pub fn validate(&self) -> Result<(), EvalError> {
        if !(1..=4).contains(&self.downsample)
            || self.image < (1 << self.downsample)
            || !self.image.is_multiple_of(1 << self.downsample)
            || self.channels == 0
            || self.code_dim == 0
            || !(2..=65_536).contains(&self.codes)
        {
            return Err(invalid(format!(
                "a VQ-VAE needs 1–4 stride-2 layers dividing the image side (at least 2^layers), \
                 channels and code size above 0 and 2–65536 codes (asked: {self:?})"
            )));
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct ResBlock {
    a: Conv2d,
    b: Conv2d,
}

impl ResBlock {
    fn new(c: usize, device: &Device) -> ResBlock {
        ResBlock {
            a: Conv2dConfig::new([c, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            b: Conv2dConfig::new([c, c], [1, 1]).init(device),
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + self.b.forward(relu(self.a.forward(relu(x))))
    }
}

/// The encoder and decoder networks.
#[derive(Module, Debug)]
pub struct VqNets {
    downs: Vec<Conv2d>,
    enc_res: Vec<ResBlock>,
    enc_out: Conv2d,
    dec_in: Conv2d,
    dec_res: Vec<ResBlock>,
    ups: Vec<ConvTranspose2d>,
    dec_out: Conv2d,
}

impl VqNets {
    pub fn new(d: &VqDims, device: &Device) -> VqNets {
        let w = d.widths();
        let top = *w.last().unwrap_or(&d.channels);
        let mut downs = Vec::new();
        let mut prev = 3;
        for &c in &w {
            downs.push(
                Conv2dConfig::new([prev, c], [4, 4])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            prev = c;
        }
        let mut ups = Vec::new();
        for i in (0..w.len()).rev() {
            let out = if i == 0 { w[0] } else { w[i - 1] };
            ups.push(
                ConvTranspose2dConfig::new([w[i], out], [4, 4])
                    .with_stride([2, 2])
                    .with_padding([1, 1])
                    .init(device),
            );
        }
        VqNets {
            downs,
            enc_res: (0..2).map(|_| ResBlock::new(top, device)).collect(),
            enc_out: Conv2dConfig::new([top, d.code_dim], [1, 1]).init(device),
            dec_in: Conv2dConfig::new([d.code_dim, top], [1, 1]).init(device),
            dec_res: (0..2).map(|_| ResBlock::new(top, device)).collect(),
            ups,
            dec_out: Conv2dConfig::new([w[0], 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    /// Images `[B, 3, S, S]` in [-1, 1] → encoder outputs `[B, D, G, G]`.
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        for c in &self.downs {
            x = relu(c.forward(x));
        }
        for r in &self.enc_res {
            x = r.forward(x);
        }
        self.enc_out.forward(relu(x))
    }

    /// Code vectors `[B, D, G, G]` → images `[B, 3, S, S]`.
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = self.dec_in.forward(z);
        for r in &self.dec_res {
            x = r.forward(x);
        }
        for u in &self.ups {
            x = u.forward(relu(x));
        }
        self.dec_out.forward(relu(x))
    }
}

/// `zq` in the forward pass, the identity to `z` in the backward pass: `z + (zq − sg(z))`.
pub fn straight_through(z: Tensor<4>, zq: Tensor<4>) -> Tensor<4> {
    z.clone() + (zq - z.detach())
}

/// A trained VQ-VAE.
pub struct VqVae {
    pub dims: VqDims,
    pub nets: VqNets,
    pub codebook: Codebook,
    /// the checkpoint's step, and the run's last step
    pub step: usize,
    pub steps: usize,
}

/// `[B, D, G, G]` → `[B·G·G, D]` row-major on the host.
fn to_rows(z: &Tensor<4>) -> Vec<f32> {
    let [b, d, g, _] = z.dims();
    to_vec(&z.clone().permute([0, 2, 3, 1]).reshape([b * g * g, d]))
}

fn from_rows(rows: Vec<f32>, b: usize, d: usize, g: usize, device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(rows, [b, g, g, d]), device).permute([0, 3, 1, 2])
}

impl VqVae {
    /// Load the last checkpoint of a VQ-VAE run folder.
    pub fn load(dir: &Path, device: &Device) -> Result<VqVae, EvalError> {
        let (s, p): (VqSettings, _) = Run::settings(dir, VQ_KIND)?;
        // the state reader marks parameters trainable: read on the autodiff device, then drop it
        let nets = VqNets::new(&s.dims, &device.clone().autodiff());
        let mut opt = AdamW::for_module(adam(), &nets);
        let nets = state::load(&Run::file(dir, "state", p.step), nets, &mut opt)
            .map_err(invalid)?
            .valid();
        let codebook = Codebook::load(
            &Run::file(dir, "codebook", p.step),
            s.dims.codes,
            s.dims.code_dim,
        )?;
        Ok(VqVae {
            dims: s.dims,
            nets,
            codebook,
            step: p.step,
            steps: s.steps,
        })
    }

    /// FNV-1a of the codebook's entries: which VQ-VAE checkpoint a generator's codes belong to.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for v in &self.codebook.embed {
            for b in v.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        format!("{h:016x}")
    }

    /// The codes (`tokens()` per image, row-major over the grid) of images in [-1, 1].
    pub fn encode(&self, images: &[f32], count: usize) -> Vec<u32> {
        let s = self.dims.image;
        let device = self.nets.enc_out.weight.device();
        let mut out = Vec::with_capacity(count * self.dims.tokens());
        let per = 3 * s * s;
        for chunk in images.chunks(64 * per) {
            let b = chunk.len() / per;
            let x = Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [b, 3, s, s]), &device);
            out.extend(self.codebook.nearest(&to_rows(&self.nets.encode(x))));
        }
        out
    }

    /// Images (`[count, 3, S, S]` in [-1, 1]) of code grids.
    pub fn decode(&self, codes: &[u32]) -> Vec<f32> {
        let (t, d, g) = (self.dims.tokens(), self.dims.code_dim, self.dims.grid());
        let device = self.nets.enc_out.weight.device();
        let mut out = Vec::new();
        for chunk in codes.chunks(64 * t) {
            let b = chunk.len() / t;
            let z = from_rows(self.codebook.lookup(chunk), b, d, g, &device);
            out.extend(to_vec(&self.nets.decode(z).clamp(-1.0, 1.0)));
        }
        out
    }

    /// Reconstructions of `images` through the codes.
    pub fn reconstruct(&self, images: &[&clip_data::resize::Rgb8]) -> Vec<clip_data::resize::Rgb8> {
        let s = self.dims.image;
        let codes = self.encode(&data::to_unit(images), images.len());
        let px = self.decode(&codes);
        px.chunks(3 * s * s)
            .map(|c| data::from_unit(c, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clip_data::rng::Rng;

    #[test]
    fn straight_through_passes_the_gradient_unchanged() {
        let device = clip_model::default_device().autodiff();
        let z = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25], [1, 1, 2, 2]),
            &device,
        )
        .require_grad();
        let zq = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 1.0, -3.0, 0.0], [1, 1, 2, 2]),
            &device,
        );
        let w = Tensor::<4>::from_data(
            TensorData::new(vec![3.0f32, -2.0, 0.5, 7.0], [1, 1, 2, 2]),
            &device,
        );
        let st = straight_through(z.clone(), zq);
        // forward: the quantised values
        assert_eq!(to_vec(&st.clone().detach()), vec![1.0, 1.0, -3.0, 0.0]);
        // backward: d(Σ w·st)/dz = w, as if the quantiser were the identity
        let grads = (st * w).sum().backward();
        let g = z.grad(&grads).expect("z has a gradient");
        assert_eq!(to_vec(&g), vec![3.0, -2.0, 0.5, 7.0]);
    }

    #[test]
    fn shapes_and_codebook_file_round_trip() {
        let dims = VqDims {
            image: 16,
            downsample: 2,
            channels: 4,
            code_dim: 3,
            codes: 5,
        };
        let device = clip_model::default_device();
        let nets = VqNets::new(&dims, &device);
        let z = nets.encode(Tensor::<4>::zeros([2, 3, 16, 16], &device));
        assert_eq!(z.dims(), [2, 3, 4, 4]);
        assert_eq!(nets.decode(z).dims(), [2, 3, 16, 16]);
        let mut rng = Rng::new(3);
        let book = Codebook::from_vectors(5, 3, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &mut rng);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cb.safetensors");
        book.save(&p).unwrap();
        assert_eq!(Codebook::load(&p, 5, 3).unwrap(), book);
        let e = Codebook::load(&p, 6, 3).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
    }
}
