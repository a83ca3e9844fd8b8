//! CLIP models on burn: the ViT and ModifiedResNet image towers, the text tower, and every public
//! checkpoint format (OpenAI TorchScript, open_clip state dicts, safetensors, Hugging Face).

// first: its `multiversion!` serves the modules after it
#[macro_use]
pub mod fastmath;

pub mod attention_cpu;
pub mod capture;
pub mod clip;
pub mod config;
pub mod error;
pub mod hf;
pub mod linalg;
pub mod lowp;
pub mod pickle;
pub mod resnet;
pub mod resnet_cpu;
pub mod source;
pub mod text;
pub mod timm_vit;
pub mod transformer;
pub mod vit;
pub mod weights;

pub use capture::{Activation, Capture};
pub use clip::{Clip, ClipModule, VisualTower, l2_normalize};
pub use config::{ClipConfig, ConfigError, preset, preset_names};
pub use error::LoadError;
pub use weights::{load_clip, save_clip};

/// The default CPU device (burn's pure-Rust `flex` backend).
pub fn cpu() -> burn::prelude::Device {
    burn::prelude::Device::flex()
}

/// Whether `t` holds f32 values on the CPU backend (with or without autodiff): the tensors the
/// hand-written CPU paths ([`fastmath`], [`resnet_cpu`], [`attention_cpu`]) may copy to the host
/// and back. On another device that round trip would cost more than burn's own kernels save.
pub(crate) fn cpu_f32<const D: usize>(t: &burn::prelude::Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && t.device().without_autodiff() == cpu()
}

/// The device the command-line tools run on: the first CUDA GPU when built with the `cuda`
/// feature, else the CPU. Model code is written against burn's dispatching `Device`, so the same
/// code runs on either (and under `device.autodiff()` for training).
pub fn default_device() -> burn::prelude::Device {
    #[cfg(feature = "cuda")]
    {
        burn::prelude::Device::cuda(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        cpu()
    }
}
