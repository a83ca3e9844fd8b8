//! Public checkpoints are loaded right or refused, never guessed: the activation and the attention
//! heads of a checkpoint that does not state them, configs of other libraries beside the weights,
//! open_clip's folder layout, transformers config fields, open_clip's `preprocess_cfg`, the plain
//! ViT presets. Fixtures: testdata/models (tools/gen_golden_models.py; testdata/PROVENANCE.md).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use clip_model::config::{PRESETS, ResizeMode, VisionKind};
use clip_model::source::{RawTensor, to_vec};
use clip_model::weights::{
    Format, LoadOptions, load_clip_with, matching_preset, read_checkpoint, read_safetensors,
    write_safetensors,
};
use clip_model::{Clip, ClipConfig, cpu, load_clip, preset, save_clip};

fn case(name: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/models")
    .join(name)
}

/// Max |Δ| of image features, text features and logits against the case's golden file.
fn parity(clip: &Clip, name: &str) -> f32 {
    let golden = read_safetensors(&case(name).join("golden.safetensors")).unwrap();
    let device = clip.device();
    let image: &RawTensor = &golden["image"];
    let s = &image.shape;
    let images = Tensor::<4>::from_data(
        TensorData::new(image.data.clone(), [s[0], s[1], s[2], s[3]]),
        &device,
    );
    let text = &golden["text"];
    let rows: Vec<Vec<u32>> = text
        .data
        .chunks(text.shape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let fi = clip.encode_image(images);
    let ft = clip.encode_text(&rows).unwrap();
    let logits = clip.logits(fi.clone(), ft.clone());
    [
        ("image_features", to_vec(&fi)),
        ("text_features", to_vec(&ft)),
        ("logits_per_image", to_vec(&logits)),
    ]
    .iter()
    .map(|(what, got)| {
        got.iter()
            .zip(&golden[*what].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    })
    .fold(0.0, f32::max)
}

fn assert_parity(clip: &Clip, name: &str) {
    let d = parity(clip, name);
    eprintln!("{name}: max abs diff {d:.2e}");
    assert!(d <= 1e-4, "{name}: differs from the reference by {d}");
}

fn cfg(json: &str) -> ClipConfig {
    ClipConfig::from_json(json).unwrap()
}

/// The architecture of `vit_openclip_jit` (tools/gen_golden_models.py).
fn jit_config(quick_gelu: bool) -> ClipConfig {
    cfg(&format!(
        r#"{{"embed_dim": 32, "quick_gelu": {quick_gelu},
            "vision_cfg": {{"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32}},
            "text_cfg": {{"context_length": 20, "vocab_size": 512, "width": 64, "heads": 2, "layers": 1}}}}"#
    ))
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

#[test]
fn torchscript_activation_is_read_from_its_code() {
    let jit = case("vit_openclip_jit").join("model.pt");
    assert_eq!(read_checkpoint(&jit).unwrap().code_quick_gelu, Some(false));
    let openai = read_checkpoint(&case("vit_openai_jit").join("model.pt")).unwrap();
    assert_eq!(openai.code_quick_gelu, Some(true));
    assert!(openai.config.unwrap().quick_gelu);
    // open_clip's archive: GELU in its code, 32-wide heads nothing in the file states. It used to
    // load as QuickGELU with 64-wide heads and give wrong numbers without an error.
    let err = load_clip(&jit, None, &cpu()).unwrap_err().to_string();
    assert!(err.contains("attention heads are unknown"), "{err}");
    assert!(err.contains("--arch FILE.json"), "{err}");
    let err = load_clip(&jit, Some(&jit_config(true)), &cpu())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the TorchScript archive's code runs GELU, but QuickGELU was asked for"),
        "{err}"
    );
    let clip = load_clip(&jit, Some(&jit_config(false)), &cpu()).unwrap();
    assert_parity(&clip, "vit_openclip_jit");
}

#[test]
fn bare_state_dict_is_refused_not_guessed() {
    // open_clip's GELU model with 32-wide heads, without the config.json it was saved with: it
    // used to load as QuickGELU with 64-wide heads (OpenAI's build_model rules)
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("epoch_3.pt");
    copy(&case("vit_openclip_pt").join("model.pt"), &bare);
    let err = load_clip(&bare, None, &cpu()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: cannot tell the model's architecture: it states no architecture",
            bare.display()
        )),
        "{err}"
    );
    assert!(err.contains("open_clip_config.json"), "{err}");
    // --quick-gelu alone does not give the heads
    let opts = LoadOptions {
        config: None,
        quick_gelu: Some(false),
    };
    assert!(load_clip_with(&bare, &opts, &cpu()).is_err());
    // the config, stated
    let config =
        cfg(&std::fs::read_to_string(case("vit_openclip_pt").join("config.json")).unwrap());
    let clip = load_clip_with(
        &bare,
        &LoadOptions {
            config: Some(config.clone()),
            quick_gelu: None,
        },
        &cpu(),
    )
    .unwrap();
    assert_parity(&clip, "vit_openclip_pt");
    // a --quick-gelu that contradicts the checkpoint's own config is refused
    let err = load_clip_with(
        &case("vit_openclip_pt").join("model.pt"),
        &LoadOptions {
            config: None,
            quick_gelu: Some(true),
        },
        &cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config.json says GELU, but QuickGELU was asked for"),
        "{err}"
    );
}

#[test]
fn presets_are_recognised_by_shape_with_their_heads() {
    // build_model's inference gives 64-wide heads; ViT-H/g/bigG have 80/88/104-wide ones
    for (name, _) in PRESETS {
        let real = preset(name).unwrap();
        if real.vision_cfg.timm_model_name.is_some() {
            continue; // SigLIP: other tensor names, never inferred from shapes
        }
        let mut guessed = real.clone();
        let v = &mut guessed.vision_cfg;
        v.head_width = 64;
        v.mlp_ratio = clip_model::config::mlp_ratio_of(
            clip_model::config::mlp_width(v.width, v.mlp_ratio),
            v.width,
        );
        guessed.text_cfg.heads = guessed.text_cfg.width / 64;
        let (found, cfg) = matching_preset(&guessed).unwrap();
        assert_eq!(found, *name);
        assert_eq!(cfg, real);
    }
}

#[test]
fn plain_vit_presets() {
    let heads = |n: &str| match preset(n).unwrap().vision_kind().unwrap() {
        VisionKind::Vit { heads, .. } => heads,
        other => unreachable!("{other:?}"),
    };
    for (name, size, vision_heads, vision_mlp, embed) in [
        ("ViT-B-32-256", 256, 12, 3072, 512),
        ("ViT-B-16-plus-240", 240, 14, 3584, 640),
        ("ViT-H-14", 224, 16, 5120, 1024),
        ("ViT-H-14-378", 378, 16, 5120, 1024),
        ("ViT-g-14", 224, 16, 6144, 1024),
        ("ViT-bigG-14", 224, 16, 8192, 1280),
    ] {
        let c = preset(name).unwrap();
        assert_eq!(c.image_size(), size, "{name}");
        assert_eq!(heads(name), vision_heads, "{name}");
        let v = &c.vision_cfg;
        assert_eq!(
            clip_model::config::mlp_width(v.width, v.mlp_ratio),
            vision_mlp,
            "{name}"
        );
        assert_eq!(c.embed_dim, embed, "{name}");
        assert!(!c.quick_gelu && preset(&format!("{name}-quickgelu")).unwrap().quick_gelu);
    }
}

#[test]
fn fractional_mlp_ratio_and_narrow_heads_match_open_clip() {
    // ViT-g-14's and ViT-bigG-14's mlp_ratio (4.3637, 4.9231: int(width * ratio)) and 16-wide heads
    let clip = load_clip(&case("vit_openclip_hub"), None, &cpu()).unwrap();
    assert_eq!(clip.config.vision_cfg.head_width, 16);
    assert_parity(&clip, "vit_openclip_hub");
}

#[test]
fn preprocess_cfg_is_read_and_saved() {
    let clip = load_clip(&case("vit_openclip_hub"), None, &cpu()).unwrap();
    let pre = clip.config.preprocess_cfg.clone().unwrap();
    assert_eq!((pre.mean, pre.std), ([0.5; 3], [0.5; 3]));
    assert_eq!(pre.resize_mode, ResizeMode::Shortest);
    let out = tempfile::tempdir().unwrap();
    save_clip(&clip, out.path()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["preprocess_cfg"]["mean"],
        serde_json::json!([0.5, 0.5, 0.5])
    );
    let again = load_clip(out.path(), None, &cpu()).unwrap();
    assert_eq!(again.config, clip.config);
    // OpenAI's preprocessing is not written (older readers read the file as before)
    let openai = load_clip(&case("vit_openclip_pt").join("model.pt"), None, &cpu()).unwrap();
    assert_eq!(openai.config.preprocess_cfg, None);
    assert!(!openai.config.to_json().contains("preprocess_cfg"));
}

/// A transformers `config.json` (as a laion repository has) and a timm one.
const TRANSFORMERS_CONFIG: &str = r#"{"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 1024,
  "text_config": {"hidden_size": 1024}, "vision_config": {"hidden_size": 1280, "patch_size": 14}}"#;
const TIMM_CONFIG: &str = r#"{"architecture": "vit_base_patch32_clip_224", "num_classes": 512,
  "pretrained_cfg": {"tag": "openai", "custom_load": false, "input_size": [3, 224, 224]}}"#;

#[test]
fn configs_of_other_libraries_beside_the_weights_are_passed_over() {
    let hub = case("vit_openclip_hub");
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("open_clip_model.safetensors");
    copy(&hub.join("open_clip_model.safetensors"), &weights);
    std::fs::write(dir.path().join("config.json"), TRANSFORMERS_CONFIG).unwrap();
    // the architecture given (a preset, a tag): nothing beside the weights is read (it used to be,
    // and the transformers config.json failed the load)
    let stated = cfg(&std::fs::read_to_string(hub.join("open_clip_config.json")).unwrap());
    let clip = load_clip(&weights, Some(&stated), &cpu()).unwrap();
    assert_parity(&clip, "vit_openclip_hub");
    // nothing given: open_clip_config.json wins over the transformers config.json
    copy(
        &hub.join("open_clip_config.json"),
        &dir.path().join("open_clip_config.json"),
    );
    assert_parity(
        &load_clip(&weights, None, &cpu()).unwrap(),
        "vit_openclip_hub",
    );
    // a timm config.json alone says nothing about the CLIP: refused as a bare state dict
    std::fs::remove_file(dir.path().join("open_clip_config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), TIMM_CONFIG).unwrap();
    let err = load_clip(&weights, None, &cpu()).unwrap_err().to_string();
    assert!(err.contains("states no architecture"), "{err}");
    // but a config of ours with an unknown field is an error, not ignored
    std::fs::write(
        dir.path().join("open_clip_config.json"),
        r#"{"model_cfg": {"embed_dim": 24, "vision_cfg": {"image_size": 28, "layers": 2, "width": 48,
            "patch_size": 7, "head_width": 16, "no_ln_pre": true}, "text_cfg": {"width": 32, "heads": 2, "layers": 2}}}"#,
    )
    .unwrap();
    let err = load_clip(&weights, None, &cpu()).unwrap_err().to_string();
    assert!(err.contains("unknown field `no_ln_pre`"), "{err}");
}

#[test]
fn folder_prefers_open_clip_weights_over_a_timm_image_tower() {
    // a timm repository: model.safetensors is the image tower alone (timm keys)
    let hub = case("vit_openclip_hub");
    let dir = tempfile::tempdir().unwrap();
    for f in ["open_clip_model.safetensors", "open_clip_config.json"] {
        copy(&hub.join(f), &dir.path().join(f));
    }
    std::fs::write(dir.path().join("config.json"), TIMM_CONFIG).unwrap();
    let timm = dir.path().join("model.safetensors");
    write_safetensors(
        &timm,
        &[
            (
                "patch_embed.proj.weight".into(),
                RawTensor::new(vec![2, 3, 1, 1], vec![0.5; 6]),
            ),
            (
                "blocks.0.norm1.weight".into(),
                RawTensor::new(vec![2], vec![1.0; 2]),
            ),
        ],
    )
    .unwrap();
    let loaded = read_checkpoint(dir.path()).unwrap();
    assert!(
        loaded.file.ends_with("open_clip_model.safetensors"),
        "{}",
        loaded.file
    );
    assert_parity(
        &load_clip(dir.path(), None, &cpu()).unwrap(),
        "vit_openclip_hub",
    );
    let err = load_clip(&timm, None, &cpu()).unwrap_err().to_string();
    assert!(err.contains("timm image-tower checkpoint"), "{err}");
    assert!(err.contains("open_clip_model.safetensors"), "{err}");
}

/// `hf_vit` copied with its `config.json` edited.
fn hf_with(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy(
        &case("hf_vit").join("model.safetensors"),
        &dir.path().join("model.safetensors"),
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case("hf_vit").join("config.json")).unwrap())
            .unwrap();
    edit(&mut v);
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    dir
}

#[test]
fn transformers_fields_that_change_results_are_read_or_refused() {
    for (edit, want) in [
        (
            Box::new(|v: &mut serde_json::Value| v["vision_config"]["layer_norm_eps"] = 0.1.into())
                as Box<dyn FnOnce(&mut serde_json::Value)>,
            "vision_config.layer_norm_eps is 0.1; only CLIP's 1e-5",
        ),
        (
            Box::new(|v| v["text_config"]["layer_norm_eps"] = 1e-6.into()),
            "text_config.layer_norm_eps is 1e-6",
        ),
        (
            Box::new(|v| v["text_config"]["eos_token_id"] = 3.into()),
            "text_config.eos_token_id is 3",
        ),
        (
            Box::new(|v| v["vision_config"]["num_channels"] = 1.into()),
            "num_channels is 1",
        ),
        (
            Box::new(|v| v["model_type"] = "siglip".into()),
            "model_type \"siglip\" is not a transformers CLIPModel",
        ),
        (
            Box::new(|v| v["vision_config"]["patch_size"] = "8".into()),
            "vision_config.patch_size is \"8\", expected a non-negative integer",
        ),
    ] {
        let dir = hf_with(edit);
        let err = load_clip(dir.path(), None, &cpu()).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // the legacy `*_config_dict` is applied over `*_config`, as transformers does
    let dir = hf_with(|v| v["text_config_dict"] = serde_json::json!({"layer_norm_eps": 0.5}));
    let err = load_clip(dir.path(), None, &cpu()).unwrap_err().to_string();
    assert!(err.contains("layer_norm_eps is 0.5"), "{err}");
    // the legacy eos 2 pools at the argmax, as ours does
    let dir = hf_with(|v| v["text_config"]["eos_token_id"] = 2.into());
    load_clip(dir.path(), None, &cpu()).unwrap();
}

#[test]
fn transformers_weights_file_loads_by_its_keys() {
    // the weights file itself (not the folder) is read as transformers' layout
    let path = case("hf_vit").join("model.safetensors");
    let loaded = read_checkpoint(&path).unwrap();
    assert_eq!(loaded.format, Format::HuggingFace);
    let clip = load_clip(&path, None, &cpu()).unwrap();
    let dir = load_clip(&case("hf_vit"), None, &cpu()).unwrap();
    assert_eq!(clip.state_dict(), dir.state_dict());
}
