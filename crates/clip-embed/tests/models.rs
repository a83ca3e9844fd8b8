//! `--model` resolution: pretrained tags as open_clip spells and pairs them, their preprocessing,
//! `hf-hub:` repositories, the Hugging Face cache laid out as `huggingface_hub` lays it out, and
//! checkpoint files that do not state their architecture. No network: caches are built here from
//! the tiny models of testdata/models, and the Hub is offline.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use clip_embed::Embedder;
use clip_embed::models::{self, Hub, ModelOptions, load_from, resolve};
use clip_model::source::to_vec;
use clip_model::weights::read_safetensors;
use clip_model::{Clip, cpu};

fn case(name: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/models")
    .join(name)
}

/// An empty offline cache (a miss fails at once).
fn offline(dir: &Path) -> Hub {
    Hub {
        cache: dir.to_path_buf(),
        offline: true,
        token: None,
        endpoint: Some("http://192.0.2.1:9".into()),
    }
}

/// Put `files` (name, source) into `cache` as `huggingface_hub` does: blobs named by content,
/// `snapshots/<commit>/<name>` linking to them, `refs/main` naming the commit.
fn cache_repo(cache: &Path, repo: &str, files: &[(&str, PathBuf)]) -> PathBuf {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = dir.join("snapshots").join(commit);
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(dir.join("refs/main"), commit).unwrap();
    for (name, src) in files {
        let blob = models::sha256_file(src).unwrap();
        std::fs::copy(src, dir.join("blobs").join(&blob)).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(src, snap.join(name)).unwrap();
    }
    snap
}

/// Max |Δ| of the image and text features against the case's golden file.
fn parity(clip: &Clip, name: &str) -> f32 {
    let golden = read_safetensors(&case(name).join("golden.safetensors")).unwrap();
    let image = &golden["image"];
    let s = &image.shape;
    let images = Tensor::<4>::from_data(
        TensorData::new(image.data.clone(), [s[0], s[1], s[2], s[3]]),
        &clip.device(),
    );
    let text = &golden["text"];
    let rows: Vec<Vec<u32>> = text
        .data
        .chunks(text.shape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let fi = to_vec(&clip.encode_image(images));
    let ft = to_vec(&clip.encode_text(&rows).unwrap());
    [(fi, "image_features"), (ft, "text_features")]
        .iter()
        .flat_map(|(got, what)| {
            got.iter()
                .zip(&golden[*what].data)
                .map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f32::max)
}

fn err(spec: &str, opts: &ModelOptions, hub: &Hub) -> String {
    match load_from(spec, opts, hub, &cpu()) {
        Ok(_) => panic!("{spec} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn quickgelu_name_with_a_gelu_tag_is_refused_naming_the_tags_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(
        "ViT-B-32-quickgelu:laion2b_s34b_b79k",
        &ModelOptions::default(),
        &offline(dir.path()),
    );
    assert_eq!(
        e,
        "'ViT-B-32-quickgelu:laion2b_s34b_b79k' would run QuickGELU on weights trained with GELU (open_clip has no such pair): \
         use ViT-B-32:laion2b_s34b_b79k; the tags of ViT-B-32-quickgelu (trained with QuickGELU) are: \
         openai, laion400m_e31, laion400m_e32, metaclip_400m, metaclip_fullcc"
    );
    // unknown tags of a -quickgelu name list only its tags
    let e = err(
        "ViT-L-14-quickgelu:nope",
        &ModelOptions::default(),
        &offline(dir.path()),
    );
    assert_eq!(
        e,
        "unknown pretrained tag 'nope' for ViT-L-14-quickgelu; known tags: openai, metaclip_400m, metaclip_fullcc, dfn2b"
    );
    // a QuickGELU tag under its -quickgelu name is fine (here: not cached)
    let e = err(
        "ViT-B-32-quickgelu:openai",
        &ModelOptions::default(),
        &offline(dir.path()),
    );
    assert!(
        e.starts_with("model 'ViT-B-32-quickgelu:openai' is not in the Hugging Face cache"),
        "{e}"
    );
}

#[test]
fn tags_carry_activation_and_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = offline(dir.path());
    let weights = case("vit_openclip_hub").join("open_clip_model.safetensors");
    cache_repo(
        dir.path(),
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        &[("open_clip_model.safetensors", weights.clone())],
    );
    cache_repo(
        dir.path(),
        "timm/vit_large_patch14_clip_224.openai",
        &[("open_clip_pytorch_model.bin", weights)],
    );
    let ok = |_: &clip_model::ClipConfig| Ok(());
    // open_clip's spelling of the tag: cleaned (lower case, - → _)
    let r = resolve(
        "ViT-L-14:LAION2B-S32B-B82K",
        &ModelOptions::default(),
        &hub,
        &ok,
    )
    .unwrap();
    assert!(r.weights.ends_with(
        "models--laion--CLIP-ViT-L-14-laion2B-s32B-b82K/snapshots/0123456789abcdef0123456789abcdef01234567/open_clip_model.safetensors"
    ), "{}", r.weights.display());
    assert!(!r.config.quick_gelu);
    let pre = models::preprocess(&r.config);
    assert_eq!((pre.mean, pre.std, pre.size), ([0.5; 3], [0.5; 3], 224));
    // OpenAI's tag: QuickGELU (open_clip's ViT-L-14-quickgelu:openai), OpenAI's mean and std,
    // found as the .bin when the cache has no safetensors
    let r = resolve("ViT-L-14:openai", &ModelOptions::default(), &hub, &ok).unwrap();
    assert!(r.config.quick_gelu && r.config.preprocess_cfg.is_none());
    assert!(r.weights.ends_with("open_clip_pytorch_model.bin"));
    assert_eq!(
        models::preprocess(&r.config),
        clip_data::Preprocess::clip(224)
    );
    // a --quick-gelu that contradicts the tag, or an --arch beside a tag
    let e = err(
        "ViT-L-14:openai",
        &ModelOptions {
            quick_gelu: Some(false),
            ..Default::default()
        },
        &hub,
    );
    assert_eq!(
        e,
        "ViT-L-14:openai was trained with QuickGELU; --quick-gelu false would run it with GELU: drop --quick-gelu"
    );
    let e = err(
        "ViT-L-14:openai",
        &ModelOptions {
            arch: Some("ViT-B-32".into()),
            ..Default::default()
        },
        &hub,
    );
    assert!(e.starts_with("--arch applies to checkpoint files"), "{e}");
}

#[test]
fn squashed_tags_carry_their_resize_mode() {
    // DFN5B is preprocessed by squashing: the tag's config says so and the pipeline follows it; the
    // load itself reaches the cache lookup (a miss here)
    let dir = tempfile::tempdir().unwrap();
    let e = err(
        "ViT-H-14-378:dfn5b",
        &ModelOptions::default(),
        &offline(dir.path()),
    );
    assert!(
        e.starts_with("model 'ViT-H-14-378:dfn5b' is not in the Hugging Face cache"),
        "{e}"
    );
    let cfg = models::tag_config("ViT-H-14-378:dfn5b").unwrap();
    let pre = models::preprocess(&cfg);
    assert_eq!(pre.resize, clip_data::Resize::Squash);
    assert_eq!(pre.size, 378);
    models::check_preprocess(&cfg, "x").unwrap();
    let cfg = models::tag_config("ViT-B-32:laion2b_s34b_b79k").unwrap();
    assert_eq!(
        models::preprocess(&cfg).resize,
        clip_data::Resize::ShortestCrop
    );
}

#[test]
fn hf_hub_repository_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let src = case("vit_openclip_hub");
    cache_repo(
        dir.path(),
        "org/tiny-clip",
        &[
            ("open_clip_config.json", src.join("open_clip_config.json")),
            (
                "open_clip_model.safetensors",
                src.join("open_clip_model.safetensors"),
            ),
        ],
    );
    // HF_HUB_CACHE names the cache, HF_HUB_OFFLINE forbids the network
    let cache = dir.path().to_str().unwrap().to_owned();
    let hub = Hub::from_vars(|k| match k {
        "HF_HUB_CACHE" => Some(cache.clone()),
        "HF_HUB_OFFLINE" => Some("1".into()),
        _ => None,
    });
    assert_eq!(hub.cache, dir.path());
    let clip = load_from(
        "hf-hub:org/tiny-clip",
        &ModelOptions::default(),
        &hub,
        &cpu(),
    )
    .unwrap();
    let d = parity(&clip, "vit_openclip_hub");
    assert!(d <= 1e-4, "{d}");
    let emb = Embedder::new(clip, 4);
    assert_eq!(
        (emb.preprocess.mean, emb.preprocess.std),
        ([0.5; 3], [0.5; 3])
    );
    // a transformers repository (config.json + model.safetensors) loads too
    let hf = case("hf_vit");
    cache_repo(
        dir.path(),
        "org/tiny-hf",
        &[
            ("config.json", hf.join("config.json")),
            ("model.safetensors", hf.join("model.safetensors")),
        ],
    );
    let clip = load_from("hf-hub:org/tiny-hf", &ModelOptions::default(), &hub, &cpu()).unwrap();
    assert!(parity(&clip, "hf_vit") <= 1e-4);
    // a miss, offline
    let e = err("hf-hub:org/absent", &ModelOptions::default(), &hub);
    assert!(
        e.starts_with("model 'hf-hub:org/absent' is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so nothing was downloaded."),
        "{e}"
    );
    assert!(e.contains("models--org--absent/"), "{e}");
    let e = err("hf-hub:just-a-name", &ModelOptions::default(), &hub);
    assert_eq!(
        e,
        "'hf-hub:just-a-name' is not hf-hub:ORG/NAME (a Hugging Face Hub repository)"
    );
}

#[test]
fn offline_miss_says_how_to_supply_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(
        "RN50:openai",
        &ModelOptions::default(),
        &offline(dir.path()),
    );
    assert!(
        e.starts_with(
            "model 'RN50:openai' is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        ),
        "{e}"
    );
    assert!(
        e.contains("Hub repository 'timm/resnet50_clip.openai'"),
        "{e}"
    );
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    // the path it suggests passing works without hitting "cannot tell the activation"
    assert!(
        e.ends_with("or pass a downloaded copy as --model FILE --arch RN50:openai"),
        "{e}"
    );
}

#[test]
fn bare_file_needs_its_architecture_stated() {
    // open_clip's GELU model (32-wide heads) without the config.json it was saved with
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("epoch_3.pt");
    std::fs::copy(case("vit_openclip_pt").join("model.pt"), &bare).unwrap();
    let hub = offline(dir.path());
    let spec = bare.to_str().unwrap();
    let e = err(spec, &ModelOptions::default(), &hub);
    assert!(
        e.contains("Pass the model's config with --arch FILE.json"),
        "{e}"
    );
    let config = case("vit_openclip_pt").join("config.json");
    let stated = ModelOptions {
        arch: Some(config.to_str().unwrap().into()),
        quick_gelu: None,
        ..Default::default()
    };
    let clip = load_from(spec, &stated, &hub, &cpu()).unwrap();
    assert!(parity(&clip, "vit_openclip_pt") <= 1e-4);
    // a preset that does not fit is a shape error, not a silent load
    let e = err(
        spec,
        &ModelOptions {
            arch: Some("ViT-B-32".into()),
            quick_gelu: None,
            ..Default::default()
        },
        &hub,
    );
    assert!(e.contains("has shape"), "{e}");
    // --arch NAME-quickgelu:TAG of a GELU tag is refused as it is for --model
    let e = err(
        spec,
        &ModelOptions {
            arch: Some("ViT-B-32-quickgelu:laion2b_s34b_b79k".into()),
            quick_gelu: None,
            ..Default::default()
        },
        &hub,
    );
    assert!(
        e.contains("would run QuickGELU on weights trained with GELU"),
        "{e}"
    );
}

#[test]
fn openai_torchscript_needs_no_flags() {
    let dir = tempfile::tempdir().unwrap();
    let hub = offline(dir.path());
    let path = case("vit_openai_jit").join("model.pt");
    let spec = path.to_str().unwrap();
    let clip = load_from(spec, &ModelOptions::default(), &hub, &cpu()).unwrap();
    assert!(clip.config.quick_gelu);
    assert!(parity(&clip, "vit_openai_jit") <= 1e-4);
    let e = err(
        spec,
        &ModelOptions {
            arch: None,
            quick_gelu: Some(false),
            ..Default::default()
        },
        &hub,
    );
    assert!(e.contains("runs QuickGELU, but GELU was asked for"), "{e}");
}

#[test]
fn converted_model_keeps_its_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    models::convert(case("vit_openclip_hub").to_str().unwrap(), &out).unwrap();
    let clip = models::load(out.to_str().unwrap(), &cpu()).unwrap();
    let emb = Embedder::new(clip, 1);
    assert_eq!(emb.preprocess.mean, [0.5; 3]);
}

const SIGLIP_CAPTIONS: [&str; 3] = [
    "A photo of a dog.",
    "two cats sleeping on a red sofa!",
    "a very long caption about a busy street market with many people, bicycles, fruit stands, umbrellas and a small brown dog sleeping under a wooden table",
];

/// SigLIP and SigLIP2 through the embedding pipeline from their open_clip folders: the tokenizer
/// beside the weights, texts embedded as open_clip embeds them (tokenized, padded, truncated),
/// squash preprocessing with mean = std = 0.5, and sigmoid probabilities.
#[test]
fn siglip_folders_embed_text_like_open_clip() {
    for name in ["siglip_openclip_hub", "siglip2_openclip_hub"] {
        let dir = case(name);
        let emb = Embedder::load(dir.to_str().unwrap(), 4).unwrap();
        assert!(
            matches!(emb.tokenizer, clip_tokenizer::TextTokenizer::Hf(_)),
            "{name}"
        );
        assert_eq!(emb.preprocess.resize, clip_data::Resize::Squash, "{name}");
        assert_eq!(
            (emb.preprocess.mean, emb.preprocess.std),
            ([0.5; 3], [0.5; 3])
        );
        let texts: Vec<String> = SIGLIP_CAPTIONS.iter().map(|s| s.to_string()).collect();
        let got = emb.embed_texts(&texts, true, true).unwrap();
        let golden = read_safetensors(&dir.join("golden.safetensors")).unwrap();
        let d = got
            .iter()
            .zip(&golden["text_features"].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d <= 1e-4,
            "{name}: text features differ from open_clip by {d}"
        );
        // the long caption does not fit 16 tokens: an error naming the row unless truncating
        let e = emb
            .embed_texts(&texts[2..], false, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("text 1 cannot be tokenized: text is") && e.contains("--truncate"),
            "{e}"
        );
        // probabilities are each class's own sigmoid (they need not sum to 1)
        let classes: Vec<String> = vec!["dog".into(), "cat".into(), "sofa".into()];
        let classifier = emb
            .classifier(&classes, &["a photo of a {}.".to_owned()])
            .unwrap();
        let features = vec![1.0f32 / (emb.dim() as f32).sqrt(); emb.dim()];
        let (scale, bias) = (emb.clip.logit_scale(), emb.clip.logit_bias().unwrap());
        let p = classifier.probabilities(&features, 1, scale, Some(bias));
        let cos = classifier.scores(&features, 1);
        for (p, c) in p.iter().zip(&cos) {
            assert!((p - 1.0 / (1.0 + (-(c * scale + bias)).exp())).abs() < 1e-6);
        }
    }
}

/// A SigLIP weights repository in the Hugging Face cache without a tokenizer: the tokenizer comes
/// from the repository its config names (`hf_tokenizer_name`), also through the cache; when that
/// is missing too, the error says what is needed.
#[test]
fn siglip_tokenizer_from_its_own_hub_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = case("siglip_openclip_hub");
    cache_repo(
        dir.path(),
        "org/tiny-siglip",
        &[
            ("open_clip_config.json", src.join("open_clip_config.json")),
            (
                "open_clip_model.safetensors",
                src.join("open_clip_model.safetensors"),
            ),
        ],
    );
    let cache = dir.path().to_str().unwrap().to_owned();
    let hub = Hub::from_vars(|k| match k {
        "HF_HUB_CACHE" => Some(cache.clone()),
        "HF_HUB_OFFLINE" => Some("1".into()),
        _ => None,
    });
    let clip = load_from(
        "hf-hub:org/tiny-siglip",
        &ModelOptions::default(),
        &hub,
        &cpu(),
    )
    .unwrap();
    assert!(parity(&clip, "siglip_openclip_hub") <= 1e-4);
    let e = models::text_tokenizer("hf-hub:org/tiny-siglip", &clip.config, &hub)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("this model's text tower uses the Hugging Face tokenizer 'timm/ViT-B-16-SigLIP', which is neither beside the weights"),
        "{e}"
    );
    cache_repo(
        dir.path(),
        "timm/ViT-B-16-SigLIP",
        &[
            ("tokenizer.json", src.join("tokenizer.json")),
            ("tokenizer_config.json", src.join("tokenizer_config.json")),
            (
                "special_tokens_map.json",
                src.join("special_tokens_map.json"),
            ),
        ],
    );
    let tok = models::text_tokenizer("hf-hub:org/tiny-siglip", &clip.config, &hub).unwrap();
    let emb = Embedder::new(clip, 4).with_tokenizer(tok);
    let texts: Vec<String> = SIGLIP_CAPTIONS.iter().map(|s| s.to_string()).collect();
    let got = emb.embed_texts(&texts, true, true).unwrap();
    let golden = read_safetensors(&src.join("golden.safetensors")).unwrap();
    let d = got
        .iter()
        .zip(&golden["text_features"].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d <= 1e-4, "{d}");
    // without its tokenizer the pipeline refuses to embed text rather than use CLIP's BPE
    let clip = load_from(
        "hf-hub:org/tiny-siglip",
        &ModelOptions::default(),
        &hub,
        &cpu(),
    )
    .unwrap();
    let e = Embedder::new(clip, 4)
        .embed_texts(&texts, true, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "trained with the Hugging Face tokenizer 'timm/ViT-B-16-SigLIP', which was not loaded"
        ),
        "{e}"
    );
}

/// Texts of very different lengths in one call (run in length groups inside) give each text's
/// own embedding, in input order.
#[test]
fn mixed_length_texts_embed_as_they_do_alone_and_in_order() {
    let emb = Embedder::load(case("hf_vit").to_str().unwrap(), 64).unwrap();
    let long = "a very long caption of a red bicycle leaning on a wall near the sea at dusk, with gulls, \
                boats, a lighthouse, two children, a dog and an ice cream stand in the background";
    let mut texts: Vec<String> = (0..20).map(|i| format!("a dog {i}")).collect();
    texts.insert(5, long.to_owned());
    texts.push(format!("{long} and a cat"));
    let rows = emb.tokenize(&texts, true).unwrap();
    let groups =
        clip_embed::pipeline::length_groups(&rows.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(
        groups.len() > 1,
        "the test needs several groups: {groups:?}"
    );
    let all = emb.embed_texts(&texts, true, false).unwrap();
    let d = emb.dim();
    for (i, t) in texts.iter().enumerate() {
        let alone = emb
            .embed_texts(std::slice::from_ref(t), true, false)
            .unwrap();
        let diff = alone
            .iter()
            .zip(&all[i * d..(i + 1) * d])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: {diff}");
    }
}
