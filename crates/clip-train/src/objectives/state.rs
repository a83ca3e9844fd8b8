//! Saving and restoring any module's parameters with its AdamW moments, for resumable experiment
//! runs: one safetensors file with each parameter (`p.I`) and its moments (`m.I`, `v.I`) under its
//! index in the module's visiting order, plus the step count. A module of the same structure (the
//! run's settings are checked before) reads them back in the same order; a count or shape that
//! does not match is an error naming the file, never a silent partial load.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use clip_model::source::{RawTensor, to_vec};
use clip_model::weights::{read_safetensors, write_safetensors};

use crate::optim::AdamW;

/// Write `module`'s parameters and `opt`'s state to `path` (atomically).
pub fn save<M: Module>(path: &Path, module: &M, opt: &AdamW) -> Result<(), String> {
    struct Numbered<'a> {
        opt: &'a AdamW,
        next: usize,
        out: Vec<(String, RawTensor)>,
    }
    impl ModuleVisitor for Numbered<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let i = self.next;
            self.next += 1;
            let t = p.val();
            self.out.push((
                format!("p.{i:05}"),
                RawTensor::new(t.dims().to_vec(), to_vec(&t)),
            ));
            if let Some((m, v)) = self.opt.moments_of(p.id) {
                self.out.push((
                    format!("m.{i:05}"),
                    RawTensor::new(vec![m.len()], m.to_vec()),
                ));
                self.out.push((
                    format!("v.{i:05}"),
                    RawTensor::new(vec![v.len()], v.to_vec()),
                ));
            }
        }
    }
    let mut c = Numbered {
        opt,
        next: 0,
        out: vec![(
            "step".into(),
            RawTensor::new(vec![1], vec![opt.step as f32]),
        )],
    };
    module.visit(&mut c);
    write_safetensors(path, &c.out).map_err(|e| e.to_string())
}

/// Read what [`save`] wrote into `module` (same structure) and `opt`; returns the module.
pub fn load<M: Module>(path: &Path, module: M, opt: &mut AdamW) -> Result<M, String> {
    let named = |m: String| format!("'{}': {m}", path.display());
    let t: BTreeMap<String, RawTensor> =
        read_safetensors(path).map_err(|e| named(e.to_string()))?;
    struct Restore<'a> {
        t: &'a BTreeMap<String, RawTensor>,
        next: usize,
        error: Option<String>,
        moments: Vec<(burn::module::ParamId, Vec<f32>, Vec<f32>)>,
    }
    impl ModuleMapper for Restore<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let i = self.next;
            self.next += 1;
            if self.error.is_some() {
                return param;
            }
            let id = param.id;
            let value = param.val();
            let dims = value.dims();
            let Some(raw) = self.t.get(&format!("p.{i:05}")) else {
                self.error = Some(format!("parameter {i} is missing"));
                return param;
            };
            if raw.shape != dims.to_vec() {
                self.error = Some(format!(
                    "parameter {i} has shape {:?}; the model's is {dims:?}",
                    raw.shape
                ));
                return param;
            }
            let n = raw.data.len();
            if let (Some(m), Some(v)) = (
                self.t.get(&format!("m.{i:05}")),
                self.t.get(&format!("v.{i:05}")),
            ) {
                if m.data.len() != n || v.data.len() != n {
                    self.error = Some(format!("the moments of parameter {i} do not fit it"));
                    return param;
                }
                self.moments.push((id, m.data.clone(), v.data.clone()));
            }
            let device = value.device();
            let fresh = Tensor::<D>::from_data(TensorData::new(raw.data.clone(), dims), &device)
                .require_grad();
            Param::initialized(id, fresh)
        }
    }
    let mut r = Restore {
        t: &t,
        next: 0,
        error: None,
        moments: Vec::new(),
    };
    let module = module.map(&mut r);
    if let Some(e) = r.error {
        return Err(named(e));
    }
    let saved = t.keys().filter(|k| k.starts_with("p.")).count();
    if saved != r.next {
        return Err(named(format!(
            "it holds {saved} parameters; the model has {}",
            r.next
        )));
    }
    opt.step = t
        .get("step")
        .and_then(|s| s.data.first())
        .filter(|s| s.is_finite() && **s >= 0.0)
        .map(|&s| s as u64)
        .ok_or_else(|| named("no valid step".into()))?;
    for (id, m, v) in r.moments {
        opt.set_moments(id, m, v);
    }
    Ok(module)
}
