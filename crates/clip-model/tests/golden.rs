//! Parity with the reference implementations: each case in testdata/models holds a checkpoint in its
//! native format and the reference's outputs for fixed inputs (tools/gen_golden_models.py; see
//! testdata/PROVENANCE.md). Tolerance: max |Δ| ≤ 1e-4.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use clip_model::source::{RawTensor, to_vec};
use clip_model::weights::{Format, read_checkpoint, read_safetensors};
use clip_model::{cpu, load_clip};

const TOL: f32 = 1e-4;

fn case_dir(name: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/models")
    .join(name)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(name: &str, weights: &str, format: Format) {
    let dir = case_dir(name);
    let golden = read_safetensors(&dir.join("golden.safetensors")).unwrap();
    let path = dir.join(weights);
    assert_eq!(
        read_checkpoint(&path).unwrap().format,
        format,
        "{name}: detected format"
    );
    let device = cpu();
    // as loaded (burn's graph; a ResNet's folded convolutions), then with the weights packed for
    // the CPU kernels as the embedding pipeline runs them (AVX-512, or AVX2 in the rerun below;
    // the same path as loaded where neither is there)
    for packed in [false, true] {
        let mut clip = load_clip(&path, None, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
        if packed {
            clip.set_precision(clip_model::lowp::Precision::F32)
                .unwrap();
        }
        compare(&format!("{name} (packed: {packed})"), &clip, &golden);
    }
}

fn compare(
    name: &str,
    clip: &clip_model::Clip,
    golden: &std::collections::BTreeMap<String, RawTensor>,
) {
    let device = cpu();
    let image: &RawTensor = &golden["image"];
    let s = image.shape.clone();
    let images = Tensor::<4>::from_data(
        TensorData::new(image.data.clone(), [s[0], s[1], s[2], s[3]]),
        &device,
    );
    let text = &golden["text"];
    let ctx = text.shape[1];
    let rows: Vec<Vec<u32>> = text
        .data
        .chunks(ctx)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();

    let fi = clip.encode_image(images);
    let ft = clip.encode_text(&rows).unwrap();
    let logits = clip.logits(fi.clone(), ft.clone());
    for (what, got) in [
        ("image_features", to_vec(&fi)),
        ("text_features", to_vec(&ft)),
        ("logits_per_image", to_vec(&logits)),
    ] {
        let d = max_abs_diff(&got, &golden[what].data);
        eprintln!(
            "{name}: {what} max abs diff {d:.2e} (values up to {:.2})",
            golden[what].data.iter().fold(0f32, |m, x| m.max(x.abs()))
        );
        assert!(d <= TOL, "{name}: {what} differs from the reference by {d}");
    }
}

#[test]
fn openai_torchscript_vit() {
    check("vit_openai_jit", "model.pt", Format::TorchScript);
}

#[test]
fn openai_torchscript_resnet() {
    check("rn_openai_jit", "model.pt", Format::TorchScript);
}

#[test]
fn open_clip_state_dict_vit_gelu() {
    check("vit_openclip_pt", "model.pt", Format::TorchZip);
}

#[test]
fn open_clip_safetensors_resnet_gelu() {
    check(
        "rn_openclip_st",
        "open_clip_model.safetensors",
        Format::Safetensors,
    );
}

#[test]
fn open_clip_fp16_training_checkpoint() {
    check("vit_openclip_fp16", "pytorch_model.bin", Format::TorchZip);
}

#[test]
fn hugging_face_directory() {
    check("hf_vit", "", Format::HuggingFace);
}

#[test]
fn save_and_reload_roundtrip() {
    let device = cpu();
    for name in ["vit_openai_jit", "rn_openclip_st"] {
        let dir = case_dir(name);
        let weights = if name.starts_with("rn") {
            "open_clip_model.safetensors"
        } else {
            "model.pt"
        };
        let clip = load_clip(&dir.join(weights), None, &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        clip_model::save_clip(&clip, out.path()).unwrap();
        let again = load_clip(out.path(), None, &device).unwrap();
        assert_eq!(again.config, clip.config);
        let a = clip.state_dict();
        let b = again.state_dict();
        assert_eq!(a.len(), b.len());
        for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            assert_eq!(ta, tb, "{name}: {ka} changed in the round trip");
        }
    }
}

#[test]
fn open_clip_siglip_hub_folder() {
    // timm ViT trunk with attention pooling, text tower without causal mask read at the last
    // position, Linear text projection, LayerNorm eps 1e-6, logit bias
    check("siglip_openclip_hub", "", Format::Safetensors);
}

#[test]
fn open_clip_siglip2_hub_folder() {
    // as SigLIP, with GELU-tanh in both towers, a fractional MLP ratio and text width ≠ embed_dim
    check("siglip2_openclip_hub", "", Format::Safetensors);
}

/// Every case again on the kernels of a CPU without AVX-512 (AVX2+FMA: the packed f32 products,
/// GELU, softmax and the rest), in a child process with `CLIP_NO_AVX512=1`.
#[test]
fn the_same_outputs_on_the_avx2_path() {
    if let Some(passed) = clip_model::fastmath::rerun_tests_without_avx512("") {
        assert!(passed >= 9, "the child passed {passed} tests");
    }
}
