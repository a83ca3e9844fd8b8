//! Figure 2's objectives: the bag-of-words text tower, each objective's training step, and the
//! save/restore of parameters with their AdamW moments.

use burn::prelude::*;
use clip_model::ClipConfig;
use clip_train::objectives::{Kind, Model, state, vocab::Vocab};
use clip_train::trainer::ZeroShotSet;

fn tiny() -> ClipConfig {
    ClipConfig::from_json(
        r#"{"embed_dim": 16, "quick_gelu": true,
            "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
            "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}"#,
    )
    .unwrap()
}

const CAPTIONS: [&str; 4] = ["a red cat", "a blue dog", "green tree", "a yellow sun"];

fn batch(device: &Device) -> (Tensor<4>, Vec<Vec<u32>>) {
    let tok = clip_tokenizer::Tokenizer::global();
    let rows = CAPTIONS
        .iter()
        .map(|c| tok.encode_truncated(c, 12).0)
        .collect();
    let pixels: Vec<f32> = (0..4 * 3 * 16 * 16)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    (
        Tensor::<4>::from_data(TensorData::new(pixels, [4, 3, 16, 16]), device),
        rows,
    )
}

fn vocab() -> Vocab {
    Vocab::build(
        clip_tokenizer::Tokenizer::global(),
        12,
        CAPTIONS.into_iter(),
    )
}

#[test]
fn the_bag_of_words_text_tower_ignores_word_order() {
    let cfg = clip_train::objectives::model_config(Kind::CBow, &tiny());
    assert_eq!(cfg.text_cfg.layers, 0);
    let clip = clip_model::Clip::random(&cfg, 1, &clip_model::cpu()).unwrap();
    let tok = clip_tokenizer::Tokenizer::global();
    let rows: Vec<Vec<u32>> = ["red cat", "cat red", "red dog"]
        .iter()
        .map(|c| tok.encode_truncated(c, 12).0)
        .collect();
    let f = clip_model::source::to_vec(&clip.encode_text(&rows).unwrap());
    let (a, b, c) = (&f[..16], &f[16..32], &f[32..]);
    assert!(
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5),
        "order changed it"
    );
    assert!(
        a.iter().zip(c).any(|(x, y)| (x - y).abs() > 1e-3),
        "words did not"
    );
    // no blocks is allowed only for the mean pool
    let mut bad = tiny();
    bad.text_cfg.layers = 0;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("text_cfg.layers must be at least 1"), "{err}");
    let err = "x-bow".parse::<Kind>().unwrap_err();
    assert_eq!(
        err,
        "unknown objective 'x-bow' (known: c-bow, c-tr, p-bow, p-bow-sigmoid, p-lm, visual-ngrams, hashtags, c-tr-fixed-temperature, c-tr-heavy-augmentation, devise, lda-topics, c-tr-sentence-sampling, c-tr-nonlinear-projection)"
    );
}

#[test]
fn every_objective_learns_a_repeated_batch_and_scores_a_task() {
    let device = clip_model::cpu().autodiff();
    let (images, rows) = batch(&device);
    let set = ZeroShotSet {
        images: (0..4)
            .map(|i| clip_model::source::to_vec(&images.clone().narrow(0, i, 1).detach()))
            .collect(),
        labels: vec![0, 1, 2, 3],
        // the captions themselves: a hashtag model can only name a class that is one of its tags
        class_names: CAPTIONS.iter().map(|c| c.to_string()).collect(),
        templates: vec!["{}".into()],
    };
    for kind in Kind::ALL {
        let v = kind.vocab(12, CAPTIONS.into_iter());
        let mut m = Model::new(kind, &tiny(), &v, 0, &device).unwrap();
        let first = m.step(images.clone(), &rows, 5e-3).unwrap();
        let mut last = first;
        for _ in 0..15 {
            last = m.step(images.clone(), &rows, 5e-3).unwrap();
        }
        assert!(last < first * 0.9, "{kind}: loss {first} → {last}");
        assert_eq!(m.steps(), 16);
        let scores = m.zero_shot(&set).unwrap();
        let rules: Vec<&str> = scores.keys().map(String::as_str).collect();
        let want: &[&str] = match kind {
            Kind::CBow
            | Kind::CTr
            | Kind::CTrFixedTemperature
            | Kind::CTrHeavyAugmentation
            | Kind::CTrSentenceSampling
            | Kind::CTrNonlinearProjection
            | Kind::Devise => &["cosine"],
            Kind::LdaTopics => &["pmi", "topic-loglik"],
            Kind::PBow | Kind::PBowSigmoid | Kind::VisualNgrams | Kind::Hashtags => {
                &["mean-logp", "pmi"]
            }
            Kind::PLm => &["mean", "pmi", "sum"],
        };
        assert_eq!(rules, want, "{kind}");
        // memorised: the training images are recognised by their own captions
        let best = scores.values().map(|s| s.0).fold(0.0, f64::max);
        assert!(best >= 0.5, "{kind}: {scores:?}");
        assert!(scores.values().all(|s| s.1 >= s.0));
        assert!(m.forward_flops(5.0) > 0.0);
        match kind {
            Kind::CTrFixedTemperature => {
                assert_eq!(
                    m.clip().unwrap().logit_scale(),
                    10f32.ln().exp(),
                    "τ = 0.1 stays"
                )
            }
            Kind::CTr => assert!((m.clip().unwrap().logit_scale() - 1.0 / 0.07).abs() > 1e-4),
            Kind::CTrNonlinearProjection => {
                // the head is there, trained, and counted
                let plain = Model::new(Kind::CTr, &tiny(), &v, 0, &device).unwrap();
                assert!(m.forward_flops(5.0) > plain.forward_flops(5.0));
                let Model::Contrastive {
                    head: Some(head), ..
                } = &m
                else {
                    panic!("no projection head")
                };
                let fresh = Model::new(kind, &tiny(), &v, 0, &device).unwrap();
                let Model::Contrastive { head: Some(h0), .. } = &fresh else {
                    panic!("no projection head")
                };
                let (a, b) = (
                    clip_model::source::to_vec(&head.image.weight.val()),
                    clip_model::source::to_vec(&h0.image.weight.val()),
                );
                assert!(a != b, "the head did not learn");
            }
            _ => {}
        }
    }
}

#[test]
fn state_round_trips_parameters_and_moments() {
    let device = clip_model::cpu().autodiff();
    let (images, rows) = batch(&device);
    let dir = tempfile::tempdir().unwrap();
    for kind in [Kind::CTr, Kind::CTrNonlinearProjection, Kind::PLm] {
        let mut m = Model::new(kind, &tiny(), &vocab(), 0, &device).unwrap();
        for _ in 0..2 {
            m.step(images.clone(), &rows, 1e-3).unwrap();
        }
        let path = dir.path().join(format!("{kind}.safetensors"));
        let mut fresh = Model::new(kind, &tiny(), &vocab(), 9, &device).unwrap();
        m.save_state(&path).unwrap();
        fresh.load_state(&path).unwrap();
        assert_eq!(fresh.steps(), 2);
        // the restored model continues exactly: the same loss now, and after a step that used the
        // restored moments
        for _ in 0..2 {
            let a = m.step(images.clone(), &rows, 1e-3).unwrap();
            let b = fresh.step(images.clone(), &rows, 1e-3).unwrap();
            assert_eq!(a, b, "{kind}");
        }
        // without the moments the second step would differ: check the test can fail
        let mut cold = Model::new(kind, &tiny(), &vocab(), 9, &device).unwrap();
        match (&m, &mut cold) {
            (
                Model::Contrastive { clip, head, .. },
                Model::Contrastive {
                    clip: c2, head: h2, ..
                },
            ) => {
                c2.set_module(clip.module().clone());
                h2.clone_from(head);
            }
            (Model::Predictive { module, .. }, Model::Predictive { module: m2, .. }) => {
                *m2 = module.clone();
            }
            _ => unreachable!(),
        }
        cold.step(images.clone(), &rows, 1e-3).unwrap();
        m.step(images.clone(), &rows, 1e-3).unwrap();
        assert_ne!(
            cold.step(images.clone(), &rows, 1e-3).unwrap(),
            m.step(images.clone(), &rows, 1e-3).unwrap(),
            "{kind}: moments make no difference?"
        );
    }
    // another structure is refused, naming the file
    let path = dir.path().join("c-tr.safetensors");
    let Model::Predictive {
        module, mut opt, ..
    } = Model::new(Kind::PBow, &tiny(), &vocab(), 0, &device).unwrap()
    else {
        unreachable!()
    };
    let err = state::load(&path, module, &mut opt).unwrap_err();
    assert!(err.contains("c-tr.safetensors"), "{err}");
}
