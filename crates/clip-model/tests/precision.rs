//! `Clip::set_precision` on the test checkpoints of each tower kind (open_clip ResNet, OpenAI-style
//! ViT through Hugging Face's layout): image and text features stay within a few per cent of f32's
//! (cosine), the weights shrink, and the change is one way.

use std::path::PathBuf;

use burn::prelude::*;
use clip_model::lowp::Precision;
use clip_model::source::to_vec;
use clip_model::{Clip, cpu, l2_normalize, load_clip};

fn root() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

fn load(name: &str) -> Clip {
    load_clip(&root().join("testdata/models").join(name), None, &cpu()).unwrap()
}

/// Unit image and text features of a fixed batch: 3 images, 2 token rows.
fn features(clip: &Clip) -> (Vec<f32>, Vec<f32>) {
    let s = clip.config.image_size();
    let n = 3 * 3 * s * s;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [3, 3, s, s]), &clip.device());
    let img = to_vec(&l2_normalize(clip.encode_image(images)));
    // start, a few words, end (the highest id, where the tower reads its features)
    let v = clip.config.text_cfg.vocab_size as u32;
    let rows = vec![
        vec![v - 2, 320 % v, 11 % v, 539 % v, v - 1],
        vec![v - 2, 1929 % v, v - 1],
    ];
    let txt = to_vec(&l2_normalize(clip.encode_text(&rows).unwrap()));
    (img, txt)
}

fn min_cosine(a: &[f32], b: &[f32], dim: usize) -> f32 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(1.0, f32::min)
}

#[test]
fn reduced_precision_towers_stay_close_to_f32_and_shrink() {
    for name in ["rn_openclip_st", "hf_vit"] {
        let reference = load(name);
        let dim = reference.config.embed_dim;
        let (img, txt) = features(&reference);
        let f32_bytes = reference.weight_bytes();
        for p in [Precision::Bf16, Precision::Int8] {
            let mut clip = load(name);
            clip.set_precision(p).unwrap();
            assert_eq!(clip.precision(), p);
            let (i2, t2) = features(&clip);
            let (ci, ct) = (min_cosine(&img, &i2, dim), min_cosine(&txt, &t2, dim));
            eprintln!(
                "{name} {p}: image cosine {ci}, text cosine {ct}, weights {} → {} bytes",
                f32_bytes,
                clip.weight_bytes()
            );
            assert!(
                ci > 0.995 && ct > 0.995,
                "{name} {p}: cosine to f32 {ci} / {ct}"
            );
            assert!(img != i2, "{name} {p}: image features are f32's exactly");
            assert!(
                clip.weight_bytes() < f32_bytes,
                "{name} {p}: weights did not shrink"
            );
            let err = clip.set_precision(Precision::F32).unwrap_err().to_string();
            assert!(err.contains(&format!("already runs in {p}")), "{err}");
        }
    }
}

/// f32 packing (AVX-512 CPUs) changes the layout, not the values: features within f32 summation
/// error of the unpacked model, the same bytes of weights (up to panel padding), one way.
#[test]
fn f32_packing_keeps_values_and_size() {
    for name in ["rn_openclip_st", "hf_vit"] {
        let reference = load(name);
        // before a forward pass builds a ResNet's folded convolutions beside its parameters
        let before = reference.weight_bytes();
        let (img, txt) = features(&reference);
        let mut clip = load(name);
        clip.set_precision(Precision::F32).unwrap();
        let (i2, t2) = features(&clip);
        let d = img
            .iter()
            .chain(&txt)
            .zip(i2.iter().chain(&t2))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let after = clip.weight_bytes();
        eprintln!(
            "{name}: f32 packed (vector kernel: {}) max abs diff {d:e}, weights {before} → {after} bytes",
            clip_model::lowp::packs(Precision::F32)
        );
        assert!(d < 1e-5, "{name}: packed f32 moved a feature by {d}");
        if clip_model::lowp::packs(Precision::F32) {
            // (unpacked, a ResNet keeps its folded convolutions beside the parameters)
            assert!(
                after <= before + before / 20 && after + after / 20 >= before,
                "{name}: {before} → {after} bytes"
            );
            let err = clip.set_precision(Precision::Bf16).unwrap_err().to_string();
            assert!(err.contains("already runs in f32"), "{err}");
        }
    }
}

/// Every check above again on the kernels of a CPU without AVX-512 (the AVX2+FMA f32, bf16 and
/// int8 products), in a child process with `CLIP_NO_AVX512=1`.
#[test]
fn the_same_checks_on_the_avx2_path() {
    if let Some(passed) = clip_model::fastmath::rerun_tests_without_avx512("") {
        assert!(passed >= 3, "the child passed {passed} tests");
    }
}
