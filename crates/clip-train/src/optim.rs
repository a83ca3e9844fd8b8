//! AdamW (decoupled weight decay, PyTorch's update rule) with open_clip's parameter groups: no
//! decay for gains, biases, LayerNorm/BatchNorm parameters, embeddings of rank < 2 and the logit
//! scale; the logit scale is clamped to ln(100) after every step.
//!
//! Hand-written rather than burn's `AdamW` because parity with open_clip needs PyTorch's exact update
//! order, per-parameter decay groups by open_clip's rule, the clamp after each step, and moments we
//! can save and restore for an exact resume (checked against PyTorch's optimiser over 3 steps).

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use clip_model::Clip;
use clip_model::source::Layout;
use rayon::prelude::*;

/// Hyper-parameters (the paper's: β2 0.98 / ε 1e-6 for ViTs, 0.999 / 1e-8 for ResNets; decay 0.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The paper's settings for a ViT (`true`) or ResNet image tower.
    pub fn paper(vit: bool) -> AdamWConfig {
        if vit {
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-6,
                weight_decay: 0.2,
            }
        } else {
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.2,
            }
        }
    }
}

/// open_clip's rule: `p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n`.
pub fn excluded_from_decay(key: &str, layout: &Layout) -> bool {
    // the parameter's rank is < 2 exactly when PyTorch's is (logit_scale: [1] here, [] there)
    layout.rank() < 2
        || key.contains("bn")
        || key.contains("ln")
        || key.contains("bias")
        || key.contains("logit_scale")
}

/// First and second moments of one parameter.
#[derive(Clone)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW state for one model.
pub struct AdamW {
    pub config: AdamWConfig,
    /// completed steps
    pub step: u64,
    moments: HashMap<ParamId, Moments>,
    decay: HashSet<ParamId>,
    /// clamped to [0, ln 100] after each step (a CLIP's logit scale)
    logit_scale: Option<ParamId>,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("config", &self.config)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig, clip: &Clip) -> AdamW {
        let decay = clip
            .bindings
            .iter()
            .filter(|b| !excluded_from_decay(&b.key, &b.layout))
            .map(|b| b.id)
            .collect();
        AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
            decay,
            logit_scale: Some(clip.module().logit_scale.id),
        }
    }

    /// AdamW for any module: parameters of rank ≥ 2 are decayed, gains, biases and other vectors
    /// not (open_clip's rule for a module without checkpoint keys); nothing is clamped.
    pub fn for_module<M: Module>(config: AdamWConfig, module: &M) -> AdamW {
        let mut opt = AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
            decay: HashSet::new(),
            logit_scale: None,
        };
        opt.decay_matrices_of(module);
        opt
    }

    /// Decay the parameters of rank ≥ 2 of `module` too (a head trained beside a CLIP).
    pub fn decay_matrices_of<M: Module>(&mut self, module: &M) {
        struct Ranked<'a>(&'a mut HashSet<ParamId>);
        impl burn::module::ModuleVisitor for Ranked<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if D >= 2 {
                    self.0.insert(p.id);
                }
            }
        }
        module.visit(&mut Ranked(&mut self.decay));
    }

    pub(crate) fn moments_of(&self, id: ParamId) -> Option<(&[f32], &[f32])> {
        self.moments
            .get(&id)
            .map(|m| (m.m.as_slice(), m.v.as_slice()))
    }

    pub(crate) fn set_moments(&mut self, id: ParamId, m: Vec<f32>, v: Vec<f32>) {
        self.moments.insert(id, Moments { m, v });
    }

    /// Scale all gradients so their global L2 norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(clip: &Clip, grads: &mut GradientsParams, max_norm: f64) -> f64 {
        fn take<const D: usize>(
            g: &mut GradientsParams,
            id: ParamId,
        ) -> Option<(Vec<usize>, Vec<f32>)> {
            g.remove::<D>(id)
                .map(|t| (t.dims().to_vec(), clip_model::source::to_vec(&t)))
        }
        let mut all = Vec::new();
        for b in &clip.bindings {
            let got = match b.layout.rank() {
                1 => take::<1>(grads, b.id),
                2 => take::<2>(grads, b.id),
                4 => take::<4>(grads, b.id),
                _ => None,
            };
            if let Some(g) = got {
                all.push((b.id, g));
            }
        }
        let norm = all
            .iter()
            .flat_map(|(_, (_, v))| v.iter())
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        let scale = if norm > max_norm {
            (max_norm / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        let device = clip.device();
        for (id, (dims, mut v)) in all {
            v.iter_mut().for_each(|x| *x *= scale);
            match dims.len() {
                1 => grads.register(
                    id,
                    Tensor::<1>::from_data(TensorData::new(v, [dims[0]]), &device).inner(),
                ),
                2 => grads.register(
                    id,
                    Tensor::<2>::from_data(TensorData::new(v, [dims[0], dims[1]]), &device).inner(),
                ),
                _ => grads.register(
                    id,
                    Tensor::<4>::from_data(
                        TensorData::new(v, [dims[0], dims[1], dims[2], dims[3]]),
                        &device,
                    )
                    .inner(),
                ),
            }
        }
        norm
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`.
    pub fn step(&mut self, clip: &mut Clip, lr: f64, grads: GradientsParams) {
        // `Module::map` consumes the module; a cheap clone (tensors are shared) takes its place
        let module = clip.module().clone();
        clip.set_module(self.step_module(module, lr, grads));
    }

    /// One update of every parameter of `module` that has a gradient; returns the new module.
    pub fn step_module<M: Module>(&mut self, module: M, lr: f64, grads: GradientsParams) -> M {
        self.step += 1;
        let mut mapper = StepMapper {
            opt: self,
            grads,
            lr,
        };
        module.map(&mut mapper)
    }
}

struct StepMapper<'a> {
    opt: &'a mut AdamW,
    grads: GradientsParams,
    lr: f64,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let Some(grad) = self.grads.remove::<D>(id) else {
            return param;
        };
        let value = param.val();
        let device = value.device();
        let dims = value.dims();
        let mut p: Vec<f32> = clip_model::source::to_vec(&value.clone().inner());
        let g: Vec<f32> = clip_model::source::to_vec(&grad);
        let c = self.opt.config;
        let t = self.opt.step as i32;
        let moments = self.opt.moments.entry(id).or_insert_with(|| Moments {
            m: vec![0.0; p.len()],
            v: vec![0.0; p.len()],
        });
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = (self.lr / bias1) as f32;
        let decay = if self.opt.decay.contains(&id) {
            (1.0 - self.lr * c.weight_decay) as f32
        } else {
            1.0
        };
        let (bias2_sqrt, eps) = (bias2_sqrt as f32, c.eps as f32);
        // in parallel chunks (each value's update is independent; the loop vectorises)
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(moments.m.par_chunks_mut(CHUNK))
            .zip(moments.v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    // PyTorch's AdamW: decoupled decay, then the Adam step
                    p[i] *= decay;
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let denom = v[i].sqrt() / bias2_sqrt + eps;
                    p[i] -= step_size * m[i] / denom;
                }
            });
        if Some(id) == self.opt.logit_scale {
            for x in &mut p {
                *x = x.clamp(0.0, 100f32.ln());
            }
        }
        let fresh = Tensor::<D>::from_data(TensorData::new(p, dims), &device).require_grad();
        Param::initialized(id, fresh)
    }
}
