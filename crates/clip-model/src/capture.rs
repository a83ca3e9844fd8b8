//! Capturing intermediate activations (any block's output, and a transformer block's MLP hidden
//! units after the activation as `….resblocks.N.mlp`) during a forward pass, for work on neurons,
//! probing and robustness.

use burn::prelude::*;

use crate::source::to_vec;

/// One captured activation, copied to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Which activations to keep: names such as `visual.transformer.resblocks.3`, `visual.layer2.1`,
/// `transformer.resblocks.11`; a pattern ending in `*` matches by prefix, `*` alone matches all.
#[derive(Debug, Default)]
pub struct Capture {
    patterns: Vec<String>,
    pub outputs: Vec<Activation>,
}

impl Capture {
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Capture {
        Capture {
            patterns: patterns.into_iter().map(Into::into).collect(),
            outputs: Vec::new(),
        }
    }

    pub fn all() -> Capture {
        Capture::new(["*"])
    }

    /// Whether a pattern asks for `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }

    /// Record `t` under the name `name()` if a pattern asks for it.
    pub fn offer<const D: usize>(&mut self, name: impl FnOnce() -> String, t: &Tensor<D>) {
        let name = name();
        if self.wants(&name) {
            self.outputs.push(Activation {
                name,
                shape: t.dims().to_vec(),
                data: to_vec(t),
            });
        }
    }

    /// As [`Capture::offer`] for an activation held outside a tensor: `make` gives its shape and
    /// values, and runs only when a pattern asks for `name()`.
    pub fn offer_with(
        &mut self,
        name: impl FnOnce() -> String,
        make: impl FnOnce() -> (Vec<usize>, Vec<f32>),
    ) {
        let name = name();
        if self.wants(&name) {
            let (shape, data) = make();
            self.outputs.push(Activation { name, shape, data });
        }
    }

    /// The activation recorded under `name`.
    pub fn get(&self, name: &str) -> Option<&Activation> {
        self.outputs.iter().find(|a| a.name == name)
    }
}
