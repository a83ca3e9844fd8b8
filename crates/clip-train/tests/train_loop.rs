//! The training loop on a tiny model and the synthetic scenes: exact resume, NaN stop, another
//! model's checkpoint, and a full disk while checkpointing.

use std::path::Path;

use clip_data::synth::SyntheticScenes;
use clip_model::{Clip, ClipConfig, cpu};
use clip_train::checkpoint::{self, TrainState};
use clip_train::trainer::{LoopOptions, TrainError, train};
use clip_train::{AdamW, AdamWConfig};

fn tiny(width: usize) -> ClipConfig {
    ClipConfig::from_json(&format!(
        r#"{{"embed_dim": 16, "quick_gelu": true,
            "vision_cfg": {{"image_size": 32, "layers": 1, "width": {width}, "patch_size": 8, "head_width": 16}},
            "text_cfg": {{"context_length": 16, "width": 16, "heads": 1, "layers": 1}}}}"#
    ))
    .unwrap()
}

fn options(steps: usize) -> LoopOptions {
    LoopOptions {
        steps,
        batch_size: 8,
        micro_batch: 4,
        lr: 1e-3,
        warmup: 2,
        seed: 11,
        crop_scale: 1.15,
        eval_every: 0,
        checkpoint_every: 3,
        checkpoint_minutes: 0.0,
        max_bad_fraction: 0.1,
        grad_clip_norm: None,
        objective: clip_train::Objective::Clip,
        stop_at: None,
        heavy_augmentation: false,
    }
}

fn fresh(cfg: &ClipConfig) -> (Clip, AdamW, TrainState) {
    let clip = Clip::random(cfg, 1, &cpu().autodiff()).unwrap();
    let opt = AdamW::new(AdamWConfig::paper(true), &clip);
    (
        clip,
        opt,
        TrainState {
            seed: 11,
            ..Default::default()
        },
    )
}

fn losses(out: &Path) -> Vec<f32> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap() as f32
        })
        .collect()
}

#[test]
fn stop_and_resume_gives_the_same_loss_curve() {
    let cfg = tiny(32);
    let data = SyntheticScenes::new(11, 32, 0.25);
    // uninterrupted
    let a = tempfile::tempdir().unwrap();
    let (mut clip, mut opt, mut state) = fresh(&cfg);
    train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &options(6),
        a.path(),
        &mut state,
        |_| {},
    )
    .unwrap();
    // stopped after step 3 (its checkpoint written), then resumed from disk in a new model
    let b = tempfile::tempdir().unwrap();
    let (mut clip, mut opt, mut state) = fresh(&cfg);
    let mut stop = options(6);
    stop.stop_at = Some(3);
    train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &stop,
        b.path(),
        &mut state,
        |_| {},
    )
    .unwrap();
    let ckpt = checkpoint::latest(b.path()).unwrap();
    assert!(ckpt.ends_with("step-0000003"));
    let (mut clip, mut opt, mut state) = checkpoint::load(&ckpt, &cfg, &cpu().autodiff()).unwrap();
    assert_eq!(state.step, 3);
    train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &options(6),
        b.path(),
        &mut state,
        |_| {},
    )
    .unwrap();
    let (la, lb) = (losses(a.path()), losses(b.path()));
    assert_eq!(la.len(), 6);
    assert_eq!(
        la, lb,
        "resumed run must repeat the uninterrupted loss curve exactly"
    );
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let cfg = tiny(32);
    let data = SyntheticScenes::new(11, 32, 0.25);
    let out = tempfile::tempdir().unwrap();
    let (mut clip, mut opt, mut state) = fresh(&cfg);
    let mut o = options(50);
    o.lr = 1e12; // diverges within a few steps
    o.warmup = 0;
    o.checkpoint_every = 1;
    let err = train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &o,
        out.path(),
        &mut state,
        |_| {},
    )
    .unwrap_err();
    // the weights or the loss became non-finite: either way the named checkpoint is finite and
    // its step is before the failing one, numbered as in metrics.jsonl
    let (step, last) = match &err {
        TrainError::NonFinite {
            step,
            last_checkpoint,
            value,
        } => {
            assert_eq!(
                err.to_string(),
                format!(
                    "the loss became {value} at step {step}; training stopped. The last good checkpoint is {}",
                    last_checkpoint.as_ref().unwrap().display()
                )
            );
            (*step, last_checkpoint.clone().unwrap())
        }
        TrainError::NonFiniteWeights {
            step,
            last_checkpoint,
        } => (*step, last_checkpoint.clone().unwrap()),
        _ => panic!("{err}"),
    };
    let logged: Vec<u64> = std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        logged.iter().all(|&s| s <= step as u64),
        "{logged:?} vs step {step}"
    );
    let (clip, _, st) = checkpoint::load(&last, &cfg, &cpu().autodiff()).unwrap();
    assert!(
        st.step < step && clip.is_finite(),
        "{last:?} at step {} is finite",
        st.step
    );
    assert!(last.ends_with(format!("step-{:07}", st.step)));
    // no checkpoint after it was written
    assert_eq!(checkpoint::latest(out.path()).unwrap(), last);
}

#[test]
fn resuming_another_models_checkpoint_is_an_error() {
    let data = SyntheticScenes::new(11, 32, 0.25);
    let out = tempfile::tempdir().unwrap();
    let (mut clip, mut opt, mut state) = fresh(&tiny(32));
    train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &options(3),
        out.path(),
        &mut state,
        |_| {},
    )
    .unwrap();
    let ckpt = checkpoint::latest(out.path()).unwrap();
    let err = checkpoint::load(&ckpt, &tiny(48), &cpu().autodiff())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "checkpoint {} is of another model than this run:",
            ckpt.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("\"width\":32") && err.contains("\"width\":48"),
        "{err}"
    );
}

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    let cfg = tiny(32);
    let data = SyntheticScenes::new(11, 32, 0.25);
    let dir = tempfile::tempdir().unwrap();
    // a file system that holds one checkpoint (≈ 10 MB: model + two moments) but not two
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=15m", "tmpfs"])
        .arg(dir.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs to mount a small tmpfs (it runs as root in CI)"
    );
    let _mount = Mount(dir.path().to_owned());
    let (mut clip, mut opt, mut state) = fresh(&cfg);
    let err = train(
        &mut clip,
        &mut opt,
        &data,
        None,
        &options(6),
        dir.path(),
        &mut state,
        |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot write checkpoint ")
            && msg.ends_with("; the previous checkpoint is intact"),
        "{msg}"
    );
    assert!(msg.contains("No space left on device"), "{msg}");
    let last = checkpoint::latest(dir.path()).unwrap();
    assert!(last.ends_with("step-0000003"));
    let (_, _, st) = checkpoint::load(&last, &cfg, &cpu().autodiff()).unwrap();
    assert_eq!(st.step, 3);
    // no half-written checkpoint is left behind
    let names: Vec<String> = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "latest" || n == "step-0000003"),
        "{names:?}"
    );
}

#[test]
fn gradient_norm_clipping() {
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    let cfg = tiny(32);
    let clip = Clip::random(&cfg, 1, &cpu().autodiff()).unwrap();
    let data = SyntheticScenes::new(11, 32, 0.25);
    let pre = clip_data::Preprocess::clip(32);
    let tok = clip_tokenizer::Tokenizer::global();
    let (mut pixels, mut rows) = (Vec::new(), Vec::new());
    for i in 0..8 {
        let (img, caption, _) = data.sample(clip_data::synth::Split::Train, i);
        pixels.extend(pre.apply(&img));
        rows.push(tok.encode_with_specials(&caption, 16, true).unwrap());
    }
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [8, 3, 32, 32]), &clip.device());
    let (_, mut grads) =
        clip_train::gradcache::loss_and_grads(&clip, images, &rows, 8, clip_train::Objective::Clip)
            .unwrap();
    let before = AdamW::clip_grad_norm(&clip, &mut grads, 1e-3);
    assert!(before > 1e-3, "norm {before}");
    let after = AdamW::clip_grad_norm(&clip, &mut grads, 1e9); // measures without changing
    assert!((after - 1e-3).abs() < 1e-6, "clipped norm {after}");
    let _: &GradientsParams = &grads;
}
