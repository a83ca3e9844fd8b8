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

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::relu;
use clip_data::rng::Rng;
use clip_model::source::{RawTensor, to_vec};
use clip_model::weights::{read_safetensors, write_safetensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data;
use crate::runs::{Logged, Run};
use crate::{EvalError, invalid};
use clip_train::objectives::state;
use clip_train::{AdamW, AdamWConfig};

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

/// The codebook with its EMA statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    pub codes: usize,
    pub dim: usize,
    /// `[codes, dim]`
    pub embed: Vec<f32>,
    /// EMA of each entry's assignment count
    pub cluster_size: Vec<f32>,
    /// EMA of the sum of each entry's assigned vectors, `[codes, dim]`
    pub embed_sum: Vec<f32>,
}

/// EMA decay and Laplace smoothing of the codebook (the VQ-VAE paper's appendix values).
pub const DECAY: f32 = 0.99;
pub const EPS: f32 = 1e-5;
/// An entry whose EMA count (assignments per batch) falls below this is restarted (Jukebox
/// restarts below 1.0 at every step).
pub const DEAD_BELOW: f32 = 0.5;

impl Codebook {
    /// Entries drawn from `vectors` (`[n, dim]`, n ≥ 1), with counts of 1.
    pub fn from_vectors(codes: usize, dim: usize, vectors: &[f32], rng: &mut Rng) -> Codebook {
        let n = vectors.len() / dim.max(1);
        if n == 0 {
            return Codebook {
                codes,
                dim,
                embed: vec![0.0; codes * dim],
                cluster_size: vec![1.0; codes],
                embed_sum: vec![0.0; codes * dim],
            };
        }
        let mut embed = Vec::with_capacity(codes * dim);
        for _ in 0..codes {
            let i = rng.below(n);
            embed.extend_from_slice(&vectors[i * dim..(i + 1) * dim]);
        }
        Codebook {
            codes,
            dim,
            embed_sum: embed.clone(),
            embed,
            cluster_size: vec![1.0; codes],
        }
    }

    /// The nearest entry (squared Euclidean distance; the lower index on ties) of each row of
    /// `z` (`[n, dim]`).
    pub fn nearest(&self, z: &[f32]) -> Vec<u32> {
        let (n, d, k) = (z.len() / self.dim, self.dim, self.codes);
        let dots = clip_model::linalg::scores(z, n, d, &self.embed, &vec![0.0; k]); // [n, k]
        let norms: Vec<f32> = self
            .embed
            .chunks(d)
            .map(|e| e.iter().map(|v| v * v).sum())
            .collect();
        (0..n)
            .map(|i| {
                let row = &dots[i * k..(i + 1) * k];
                let mut best = (f32::INFINITY, 0u32);
                for (j, (&dot, &nn)) in row.iter().zip(&norms).enumerate() {
                    let dist = nn - 2.0 * dot;
                    if dist < best.0 {
                        best = (dist, j as u32);
                    }
                }
                best.1
            })
            .collect()
    }

    /// The entries of `codes`, `[n, dim]`.
    pub fn lookup(&self, codes: &[u32]) -> Vec<f32> {
        let d = self.dim;
        let mut out = Vec::with_capacity(codes.len() * d);
        for &c in codes {
            out.extend_from_slice(&self.embed[c as usize * d..(c as usize + 1) * d]);
        }
        out
    }

    /// The EMA update with the vectors `z` (`[n, dim]`) assigned to `codes`:
    /// `N_k ← γN_k + (1−γ)n_k`, `m_k ← γm_k + (1−γ)Σ_{i→k} z_i`, and
    /// `e_k = m_k / Ñ_k` with the Laplace-smoothed `Ñ_k = (N_k + ε) / (ΣN + Kε) · ΣN`.
    pub fn ema_update(&mut self, z: &[f32], codes: &[u32], decay: f32) {
        let d = self.dim;
        let mut counts = vec![0f32; self.codes];
        let mut sums = vec![0f32; self.codes * d];
        for (i, &c) in codes.iter().enumerate() {
            let c = c as usize;
            counts[c] += 1.0;
            for (s, v) in sums[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&z[i * d..(i + 1) * d])
            {
                *s += v;
            }
        }
        for (n, c) in self.cluster_size.iter_mut().zip(&counts) {
            *n = decay * *n + (1.0 - decay) * c;
        }
        for (m, s) in self.embed_sum.iter_mut().zip(&sums) {
            *m = decay * *m + (1.0 - decay) * s;
        }
        let total: f32 = self.cluster_size.iter().sum();
        let k = self.codes as f32;
        for j in 0..self.codes {
            let smoothed = (self.cluster_size[j] + EPS) / (total + k * EPS) * total;
            for t in 0..d {
                self.embed[j * d + t] = self.embed_sum[j * d + t] / smoothed;
            }
        }
    }

    /// Restart every entry whose EMA count is below `below` at a random row of `z`; returns
    /// how many.
    pub fn restart_dead(&mut self, z: &[f32], below: f32, rng: &mut Rng) -> usize {
        let d = self.dim;
        let n = z.len() / d;
        let mut restarted = 0;
        for j in 0..self.codes {
            if self.cluster_size[j] < below && n > 0 {
                let i = rng.below(n);
                let v = &z[i * d..(i + 1) * d];
                self.embed[j * d..(j + 1) * d].copy_from_slice(v);
                self.embed_sum[j * d..(j + 1) * d].copy_from_slice(v);
                self.cluster_size[j] = 1.0;
                restarted += 1;
            }
        }
        restarted
    }

    fn tensors(&self) -> Vec<(String, RawTensor)> {
        vec![
            (
                "embed".into(),
                RawTensor::new(vec![self.codes, self.dim], self.embed.clone()),
            ),
            (
                "cluster_size".into(),
                RawTensor::new(vec![self.codes], self.cluster_size.clone()),
            ),
            (
                "embed_sum".into(),
                RawTensor::new(vec![self.codes, self.dim], self.embed_sum.clone()),
            ),
        ]
    }

    pub fn save(&self, path: &Path) -> Result<(), EvalError> {
        write_safetensors(path, &self.tensors()).map_err(|e| invalid(e.to_string()))
    }

    pub fn load(path: &Path, codes: usize, dim: usize) -> Result<Codebook, EvalError> {
        let t =
            read_safetensors(path).map_err(|e| invalid(format!("'{}': {e}", path.display())))?;
        let get = |k: &str, shape: Vec<usize>| -> Result<Vec<f32>, EvalError> {
            let r = t
                .get(k)
                .ok_or_else(|| invalid(format!("'{}' has no '{k}'", path.display())))?;
            if r.shape != shape {
                return Err(invalid(format!(
                    "'{}': '{k}' has shape {:?}; the settings say {shape:?}",
                    path.display(),
                    r.shape
                )));
            }
            Ok(r.data.clone())
        };
        Ok(Codebook {
            codes,
            dim,
            embed: get("embed", vec![codes, dim])?,
            cluster_size: get("cluster_size", vec![codes])?,
            embed_sum: get("embed_sum", vec![codes, dim])?,
        })
    }
}

/// Perplexity `exp(H)` of a code histogram (the number of equally used codes it equals).
pub fn perplexity(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    h.exp()
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

pub const VQ_KIND: &str = "vq-vae";

/// What changes a VQ-VAE run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqSettings {
    pub dims: VqDims,
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta: f64,
    pub seed: u64,
    /// the import's training rows (count) the run was started on
    pub images: usize,
}

/// A VQ-VAE training request.
#[derive(Debug, Clone)]
pub struct VqOptions {
    pub emoji: PathBuf,
    pub out: PathBuf,
    pub dims: VqDims,
    /// the styles it trains on (every style of the import when empty)
    pub styles: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// stop (resumably) after this step
    pub stop_at: Option<usize>,
}

fn adam() -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// The report of a finished VQ-VAE.
#[derive(Debug, Clone, Serialize)]
pub struct VqReport {
    pub dims: VqDims,
    pub steps: usize,
    pub train_seconds: f64,
    /// mean PSNR (dB) of reconstructions: (set, images, psnr)
    pub psnr: Vec<(String, usize, f64)>,
    /// perplexity of the codes used on the training images, and entries never used there
    pub perplexity: f64,
    pub dead_codes: usize,
    pub machine: String,
}

/// Train (or resume) a VQ-VAE on the training concepts of `o.styles`, then report
/// reconstruction PSNR on training concepts, held-out concepts and any style it did not train on.
/// `None` when it stopped at `o.stop_at` before the last step (run it again to continue).
pub fn train(o: &VqOptions, say: &mut dyn FnMut(String)) -> Result<Option<VqReport>, EvalError> {
    o.dims.validate()?;
    if o.steps == 0
        || o.batch_size == 0
        || o.lr.is_nan()
        || o.lr <= 0.0
        || o.beta.is_nan()
        || o.beta < 0.0
    {
        return Err(invalid(
            "steps, batch size and learning rate must be above 0, β at least 0",
        ));
    }
    let import = clip_inside::emoji::Import::read(&o.emoji)?;
    let styles = data::pick_styles(&import, &o.styles)?;
    let items = data::training_items(&o.emoji, &styles)?;
    let settings = VqSettings {
        dims: o.dims,
        styles: styles.clone(),
        steps: o.steps,
        batch_size: o.batch_size,
        lr: o.lr,
        beta: o.beta,
        seed: o.seed,
        images: items.len(),
    };
    let mut run = Run::open(&o.out, VQ_KIND, &settings)?;
    let s = o.dims.image;
    say(format!(
        "loading {} training images of {}",
        items.len(),
        styles.join(", ")
    ));
    let images = data::load_images(
        &items.iter().map(|i| i.image.as_path()).collect::<Vec<_>>(),
        s,
    )?;
    let device = clip_model::default_device().autodiff();
    device.seed(o.seed);
    let mut nets = VqNets::new(&o.dims, &device);
    let mut opt = AdamW::for_module(adam(), &nets);
    let mut codebook = None;
    if run.progress.step > 0 {
        let step = run.progress.step;
        nets = state::load(&Run::file(&o.out, "state", step), nets, &mut opt).map_err(invalid)?;
        codebook = Some(Codebook::load(
            &Run::file(&o.out, "codebook", step),
            o.dims.codes,
            o.dims.code_dim,
        )?);
        say(format!("resuming at step {step}"));
    }
    let stop = o.stop_at.unwrap_or(o.steps).min(o.steps);
    let (b, d, g) = (o.batch_size, o.dims.code_dim, o.dims.grid());
    let warmup = (o.steps / 20).max(1);
    let mut window = (0.0f64, 0.0f64, vec![0u64; o.dims.codes], 0usize, 0usize);
    while run.progress.step < stop {
        let t0 = Instant::now();
        let step = run.progress.step;
        let picks: Vec<&clip_data::resize::Rgb8> = epoch_picks(images.len(), b, step, o.seed)
            .into_iter()
            .map(|i| &images[i])
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(data::to_unit(&picks), [b, 3, s, s]),
            &device,
        );
        let z = nets.encode(x.clone());
        let rows = to_rows(&z.clone().detach());
        let book = codebook.get_or_insert_with(|| {
            Codebook::from_vectors(o.dims.codes, d, &rows, &mut step_rng(o.seed, 0))
        });
        let codes = book.nearest(&rows);
        let zq = from_rows(book.lookup(&codes), b, d, g, &device);
        let commit = (z.clone() - zq.clone()).powf_scalar(2.0).mean();
        let xr = nets.decode(straight_through(z, zq));
        let mse = (xr - x).powf_scalar(2.0).mean();
        let loss = mse.clone() + commit.mul_scalar(o.beta);
        let (loss_v, mse_v) = (to_vec(&loss)[0], to_vec(&mse)[0]);
        if !loss_v.is_finite() {
            return Err(invalid(format!(
                "the VQ-VAE loss became {loss_v} at step {}; the last checkpoint in '{}' is intact",
                step + 1,
                o.out.display()
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &nets);
        let lr = clip_train::cosine_lr(o.lr, warmup, o.steps, step);
        nets = opt.step_module(nets, lr, grads);
        book.ema_update(&rows, &codes, DECAY);
        // a pure function of (seed, step): a resumed run restarts the same entries
        let restarted = book.restart_dead(&rows, DEAD_BELOW, &mut step_rng(o.seed, step + 1));
        run.progress.step += 1;
        run.progress.train_seconds += t0.elapsed().as_secs_f64();
        window.0 += loss_v as f64;
        window.1 += mse_v as f64;
        for &c in &codes {
            window.2[c as usize] += 1;
        }
        window.3 += restarted;
        window.4 += 1;
        let done = run.progress.step;
        if done % 25 == 0 || done == stop {
            let n = window.4 as f64;
            let mut values = std::collections::BTreeMap::new();
            values.insert("loss".to_string(), window.0 / n);
            values.insert("mse".to_string(), window.1 / n);
            values.insert("perplexity".to_string(), perplexity(&window.2));
            values.insert("restarts".to_string(), window.3 as f64);
            say(format!(
                "step {done}/{}: loss {:.4}, mse {:.4}, code perplexity {:.0}, {} restarts ({:.2} s/step)",
                o.steps,
                window.0 / n,
                window.1 / n,
                perplexity(&window.2),
                window.3,
                run.progress.train_seconds / done as f64
            ));
            run.progress.history.push(Logged::new(done, values));
            window = (0.0, 0.0, vec![0u64; o.dims.codes], 0, 0);
        }
        if done % o.checkpoint_every.max(1) == 0 || done == stop {
            let book = codebook.as_ref().expect("set on the first step");
            run.commit(|dir, step| {
                book.save(&Run::file(dir, "codebook", step))?;
                state::save(&Run::file(dir, "state", step), &nets, &opt).map_err(invalid)
            })?;
            run.plot(&[("loss", "VQ-VAE loss"), ("perplexity", "code perplexity")])?;
        }
    }
    if run.progress.step < o.steps {
        return Ok(None);
    }
    let vq = VqVae::load(&o.out, &clip_model::default_device())?;
    report(&vq, &import, &styles, &images, &run, say).map(Some)
}

/// PSNR per set, code usage, a grid of originals over reconstructions; `report.json`.
fn report(
    vq: &VqVae,
    import: &clip_inside::emoji::Import,
    styles: &[String],
    train_images: &[clip_data::resize::Rgb8],
    run: &Run,
    say: &mut dyn FnMut(String),
) -> Result<VqReport, EvalError> {
    let s = vq.dims.image;
    let refs: Vec<&clip_data::resize::Rgb8> = train_images.iter().collect();
    let codes = vq.encode(&data::to_unit(&refs), refs.len());
    let mut counts = vec![0u64; vq.dims.codes];
    for &c in &codes {
        counts[c as usize] += 1;
    }
    let mut psnr = Vec::new();
    let mut sets: Vec<(String, Vec<&clip_inside::emoji::Row>)> = vec![
        (
            "training concepts, trained styles".into(),
            import
                .rows
                .iter()
                .filter(|r| r.trained && styles.contains(&r.style))
                .collect(),
        ),
        (
            "held-out concepts, trained styles".into(),
            import
                .rows
                .iter()
                .filter(|r| !r.trained && styles.contains(&r.style))
                .collect(),
        ),
    ];
    for st in import.styles.iter().filter(|st| !styles.contains(st)) {
        sets.push((
            format!("unseen style {st}"),
            import.rows.iter().filter(|r| &r.style == st).collect(),
        ));
    }
    let mut tiles = Vec::new();
    for (name, rows) in sets {
        if rows.is_empty() {
            continue;
        }
        let paths: Vec<&Path> = rows.iter().map(|r| r.image.as_path()).collect();
        let imgs = data::load_images(&paths, s)?;
        let recon = vq.reconstruct(&imgs.iter().collect::<Vec<_>>());
        let mean = imgs
            .iter()
            .zip(&recon)
            .map(|(a, b)| data::psnr(a, b).min(99.0))
            .sum::<f64>()
            / imgs.len() as f64;
        say(format!(
            "PSNR on {name}: {mean:.2} dB ({} images)",
            imgs.len()
        ));
        for (a, r) in imgs.iter().zip(&recon).take(8) {
            tiles.push(clip_inside::grid::Tile {
                image: a.clone(),
                frame: clip_inside::grid::PLAIN,
            });
            tiles.push(clip_inside::grid::Tile {
                image: r.clone(),
                frame: clip_inside::grid::RIGHT,
            });
        }
        psnr.push((name, imgs.len(), mean));
    }
    clip_inside::grid::save(&tiles, 8, s, &run.dir.join("reconstructions.png"))?;
    let rep = VqReport {
        dims: vq.dims,
        steps: run.progress.step,
        train_seconds: run.progress.train_seconds,
        psnr,
        perplexity: perplexity(&counts),
        dead_codes: counts.iter().filter(|&&c| c == 0).count(),
        machine: clip_eval::repro::fig2::machine(),
    };
    say(format!(
        "codes on the training images: perplexity {:.0} of {}, {} never used",
        rep.perplexity, vq.dims.codes, rep.dead_codes
    ));
    crate::runs::write_json(&run.dir.join("report.json"), &rep)?;
    Ok(rep)
}

fn step_rng(seed: u64, step: usize) -> Rng {
    Rng::new(seed ^ 0x5EED_0F0C ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The images of `step`'s batch: a seeded permutation per epoch.
pub(crate) fn epoch_picks(n: usize, batch: usize, step: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for i in 0..batch {
        let g = (step * batch + i) as u64;
        let epoch = g / n as u64;
        if cached.as_ref().is_none_or(|c| c.0 != epoch) {
            let mut order: Vec<usize> = (0..n).collect();
            clip_data::rng::shuffle(
                &mut order,
                &mut Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9)),
            );
            cached = Some((epoch, order));
        }
        out.push(cached.as_ref().expect("just set").1[(g % n as u64) as usize]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ema_update_follows_its_formula() {
        // two entries in 2-d; three vectors, two to entry 0, none to entry 1
        let mut b = Codebook {
            codes: 2,
            dim: 2,
            embed: vec![0.0, 0.0, 5.0, 5.0],
            cluster_size: vec![2.0, 1.0],
            embed_sum: vec![1.0, 2.0, 5.0, 5.0],
        };
        let z = vec![1.0, 3.0, 3.0, 1.0, 9.0, 9.0];
        let codes = b.nearest(&z);
        assert_eq!(codes, vec![0, 0, 1]);
        let codes = vec![0, 0, 0];
        let g = 0.9f32;
        b.ema_update(&z, &codes, g);
        let n0 = g * 2.0 + (1.0 - g) * 3.0;
        let n1 = g * 1.0;
        assert!((b.cluster_size[0] - n0).abs() < 1e-6 && (b.cluster_size[1] - n1).abs() < 1e-6);
        let m0 = [g * 1.0 + 0.1 * 13.0, g * 2.0 + 0.1 * 13.0];
        let m1 = [g * 5.0, g * 5.0];
        assert!((b.embed_sum[0] - m0[0]).abs() < 1e-5 && (b.embed_sum[1] - m0[1]).abs() < 1e-5);
        let total = n0 + n1;
        let s0 = (n0 + EPS) / (total + 2.0 * EPS) * total;
        let s1 = (n1 + EPS) / (total + 2.0 * EPS) * total;
        let want = [m0[0] / s0, m0[1] / s0, m1[0] / s1, m1[1] / s1];
        for (a, w) in b.embed.iter().zip(want) {
            assert!((a - w).abs() < 1e-5, "{:?} vs {want:?}", b.embed);
        }
        // an entry whose count fell below the threshold restarts at an input vector
        let mut rng = Rng::new(1);
        assert_eq!(b.restart_dead(&z, 0.95, &mut rng), 1);
        let e1 = &b.embed[2..4];
        assert!(z.chunks(2).any(|v| v == e1));
        assert_eq!(b.cluster_size[1], 1.0);
    }

    #[test]
    fn perplexity_counts_equally_used_codes() {
        assert!((perplexity(&[5, 5, 5, 5, 0]) - 4.0).abs() < 1e-9);
        assert!((perplexity(&[7, 0]) - 1.0).abs() < 1e-9);
        assert_eq!(perplexity(&[0, 0]), 0.0);
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
