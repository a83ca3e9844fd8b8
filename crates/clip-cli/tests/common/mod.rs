//! Helpers shared by the `clip` command's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod emoji;
pub mod pg;
pub mod server;

pub fn root() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../..")
}

/// The tiny transformers CLIP with the real 49,408-token vocabulary.
pub fn model() -> String {
    root().join("testdata/models/hf_vit").display().to_string()
}

/// The path of a test image (`testdata/images/NAME`).
pub fn image(name: &str) -> String {
    root()
        .join("testdata/images")
        .join(name)
        .display()
        .to_string()
}

pub fn clip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip"))
        .args(args)
        .output()
        .expect("run clip")
}

/// Runs a command that must succeed and returns (stdout, stderr).
pub fn ok_out(args: &[&str]) -> (String, String) {
    let out = clip(args);
    assert!(
        out.status.success(),
        "clip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs a command that must fail with exit code 1 and returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = clip(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "clip {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A training config for a tiny ViT CLIP (32 px, width 32, one layer per tower) with `settings`
/// (TOML lines) before the model.
pub fn tiny_train_toml(settings: &str) -> String {
    format!("{settings}\n{TINY_MODEL}")
}

const TINY_MODEL: &str = r#"
[model_cfg]
embed_dim = 16
quick_gelu = true
[model_cfg.vision_cfg]
image_size = 32
layers = 1
width = 32
patch_size = 8
head_width = 16
[model_cfg.text_cfg]
context_length = 16
width = 16
heads = 1
layers = 1
"#;

/// `n` distinct `side`×`side` PNGs.
pub fn pictures_of(dir: &Path, n: usize, side: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                image::Rgb([
                    (x * 5 + i as u32 * 7) as u8,
                    (y * 5 + i as u32 * 13) as u8,
                    (i as u32 * 29 % 256) as u8,
                ])
            });
            let p = dir.join(format!("img{i:04}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}
