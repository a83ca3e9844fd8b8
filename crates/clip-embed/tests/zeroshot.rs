//! The zero-shot classifier against open_clip's `build_zero_shot_classifier` (80 OpenAI ImageNet
//! templates, 12 class names incl. a 90-character one, non-ASCII and an emoji) on the tiny transformers
//! CLIP of `testdata/models/hf_vit` (golden: `tools/gen_golden_eval.py`).

use std::path::PathBuf;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata")
    .join(p)
}

#[test]
fn classifier_matches_open_clip() {
    let bytes = std::fs::read(testdata("eval/zeroshot.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let classes: Vec<String> = serde_json::from_str(&meta["classes"]).unwrap();
    let templates: Vec<String> = serde_json::from_str(&meta["templates"]).unwrap();
    // open_clip's templates are the ones we ship
    let shipped: Vec<String> =
        std::fs::read_to_string(testdata("../configs/templates/imagenet.txt"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    assert_eq!(templates, shipped);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let want: Vec<f32> = st
        .tensor("classifier")
        .unwrap()
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let device = clip_model::cpu();
    let clip = clip_model::load_clip(&testdata("models/hf_vit"), None, &device).unwrap();
    let got = clip_embed::Classifier::build(&clip, &classes, &templates)
        .unwrap()
        .weights;
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("max |Δ| vs open_clip: {max:.2e}");
    assert!(max < 1e-5, "classifier differs from open_clip by {max}");
}
