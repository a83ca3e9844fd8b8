//! The Hugging Face `CLIPModel` layout: its state-dict keys mapped to OpenAI's (q/k/v packed into
//! `in_proj`), and its `config.json` read into our [`ClipConfig`].

use std::collections::BTreeMap;

use crate::config::{ClipConfig, TextConfig, VisionConfig, VisionLayers, mlp_ratio_of};
use crate::error::LoadError;
use crate::source::RawTensor;

/// Map a Hugging Face `CLIPModel` state dict to OpenAI keys (q/k/v are packed into `in_proj`).
///
/// One function on purpose: it is the key-mapping table between the two checkpoint layouts, kept
/// greppable in one place.
pub fn hf_to_openai(
    hf: BTreeMap<String, RawTensor>,
    file: &str,
) -> Result<BTreeMap<String, RawTensor>, LoadError> {
    let mut out = BTreeMap::new();
    let mut qkv: BTreeMap<String, [Option<RawTensor>; 3]> = BTreeMap::new();
    for (key, t) in hf {
        let (tower, rest) = if let Some(r) = key.strip_prefix("vision_model.") {
            ("visual.", r)
        } else if let Some(r) = key.strip_prefix("text_model.") {
            ("", r)
        } else {
            match key.as_str() {
                "logit_scale" => {
                    out.insert(key, t);
                }
                "visual_projection.weight" | "text_projection.weight" => {
                    let name = if key.starts_with("visual") {
                        "visual.proj"
                    } else {
                        "text_projection"
                    };
                    let (r, c) = (t.shape[0], t.shape[1]);
                    out.insert(
                        name.to_owned(),
                        RawTensor::new(vec![c, r], crate::source::transpose(&t.data, r, c)),
                    );
                }
                _ => {
                    out.insert(key, t); // reported as unexpected later
                }
            }
            continue;
        };
        if rest.ends_with("position_ids") {
            continue; // a buffer of 0..n, not a parameter
        }
        if let Some(layer) = rest.strip_prefix("encoder.layers.") {
            let (idx, sub) = layer.split_once('.').unwrap_or((layer, ""));
            let base = format!("{tower}transformer.resblocks.{idx}");
            let proj = [
                "self_attn.q_proj.",
                "self_attn.k_proj.",
                "self_attn.v_proj.",
            ]
            .iter()
            .position(|p| sub.starts_with(p));
            if let Some(i) = proj {
                let which = sub.rsplit('.').next().unwrap_or("");
                let slot = qkv
                    .entry(format!("{base}.attn.in_proj_{which}"))
                    .or_default();
                slot[i] = Some(t);
                continue;
            }
            let sub = sub
                .replace("self_attn.out_proj", "attn.out_proj")
                .replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2")
                .replace("mlp.fc1", "mlp.c_fc")
                .replace("mlp.fc2", "mlp.c_proj");
            out.insert(format!("{base}.{sub}"), t);
            continue;
        }
        let name = match rest {
            "embeddings.class_embedding" => "visual.class_embedding".to_owned(),
            "embeddings.patch_embedding.weight" => "visual.conv1.weight".to_owned(),
            "embeddings.position_embedding.weight" if tower.is_empty() => {
                "positional_embedding".to_owned()
            }
            "embeddings.position_embedding.weight" => "visual.positional_embedding".to_owned(),
            "embeddings.token_embedding.weight" => "token_embedding.weight".to_owned(),
            r if r.starts_with("pre_layrnorm.") => {
                format!("visual.ln_pre.{}", &r["pre_layrnorm.".len()..])
            }
            r if r.starts_with("post_layernorm.") => {
                format!("visual.ln_post.{}", &r["post_layernorm.".len()..])
            }
            r if r.starts_with("final_layer_norm.") => {
                format!("ln_final.{}", &r["final_layer_norm.".len()..])
            }
            _ => key.clone(),
        };
        out.insert(name, t);
    }
    for (key, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(LoadError::Missing {
                key: format!("{key} (one of q_proj/k_proj/v_proj)"),
                file: file.to_owned(),
            });
        };
        let mut shape = q.shape.clone();
        shape[0] *= 3;
        let data = [q.data, k.data, v.data].concat();
        out.insert(key, RawTensor::new(shape, data));
    }
    Ok(out)
}

/// One section of a Hugging Face `config.json` (`text_config` / `vision_config`), with the legacy
/// `*_config_dict` values over it as transformers applies them.
fn section(v: &serde_json::Value, name: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut out = v
        .get(name)
        .and_then(|s| s.as_object())
        .cloned()
        .unwrap_or_default();
    if let Some(over) = v.get(format!("{name}_dict")).and_then(|s| s.as_object()) {
        out.extend(over.clone());
    }
    out
}

/// Read the model part of a Hugging Face `config.json`.
///
/// Every field transformers' `CLIPModel` reads that changes its outputs is read here or refused:
/// the sizes, `hidden_act`, `layer_norm_eps` (only CLIP's 1e-5), `num_channels` (3),
/// `eos_token_id` (where the text is pooled: the highest id, as OpenAI's argmax does, or the legacy
/// 2), `model_type` (`clip`). Fields that do not change outputs (dropout, initialisation, token
/// ids used only for generation, bookkeeping) are ignored.
pub fn hf_config(text: &str, file: &str) -> Result<ClipConfig, LoadError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| LoadError::format(file, format!("invalid JSON ({e})")))?;
    let bad = |msg: String| LoadError::format(file, msg);
    if let Some(mt) = v.get("model_type")
        && mt.as_str() != Some("clip")
    {
        return Err(bad(format!(
            "model_type {mt} is not a transformers CLIPModel (\"clip\"); only CLIP checkpoints load"
        )));
    }
    let (tc, vc) = (section(&v, "text_config"), section(&v, "vision_config"));
    // a present value of the wrong kind is an error, not the default
    let int = |s: &serde_json::Map<String, serde_json::Value>,
               name: &str,
               key: &str,
               default: u64|
     -> Result<usize, LoadError> {
        match s.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default as usize),
            Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
                bad(format!(
                    "{name}.{key} is {x}, expected a non-negative integer"
                ))
            }),
        }
    };
    for (name, s) in [("text_config", &tc), ("vision_config", &vc)] {
        match s.get("layer_norm_eps") {
            None | Some(serde_json::Value::Null) => {}
            Some(x) => match x.as_f64() {
                Some(eps) if (eps - 1e-5).abs() <= 1e-12 => {}
                _ => {
                    return Err(bad(format!(
                        "{name}.layer_norm_eps is {x}; only CLIP's 1e-5 is supported (another epsilon changes every output)"
                    )));
                }
            },
        }
    }
    let channels = int(&vc, "vision_config", "num_channels", 3)?;
    if channels != 3 {
        return Err(bad(format!(
            "vision_config.num_channels is {channels}; only RGB (3) is supported"
        )));
    }
    let act = |s: &serde_json::Map<String, serde_json::Value>| {
        s.get("hidden_act")
            .and_then(|x| x.as_str())
            .unwrap_or("quick_gelu")
            .to_owned()
    };
    let (ta, va) = (act(&tc), act(&vc));
    for a in [&ta, &va] {
        if a != "quick_gelu" && a != "gelu" {
            return Err(bad(format!(
                "unsupported hidden_act '{a}' (quick_gelu or gelu)"
            )));
        }
    }
    if ta != va {
        return Err(bad(
            "text and vision towers use different activations; not supported".into(),
        ));
    }
    let (vw, vh) = (
        int(&vc, "vision_config", "hidden_size", 768)?,
        int(&vc, "vision_config", "num_attention_heads", 12)?,
    );
    let tw = int(&tc, "text_config", "hidden_size", 512)?;
    let vocab = int(&tc, "text_config", "vocab_size", 49408)?;
    // transformers pools the text at the first `eos_token_id` (or, for the legacy 2, at the
    // argmax of the ids); ours pools at the argmax, which is the same position only when the eos
    // id is the highest id
    match tc.get("eos_token_id") {
        None => {
            if vocab != 49408 {
                return Err(bad(format!(
                    "text_config has no eos_token_id (transformers' default is 49407) and vocab_size {vocab}: the text would be pooled at token 49407, which is not the highest id; set eos_token_id to {}",
                    vocab.saturating_sub(1)
                )));
            }
        }
        Some(x) => match x.as_u64() {
            Some(2) => {}
            Some(e) if e as usize + 1 == vocab => {}
            _ => {
                return Err(bad(format!(
                    "text_config.eos_token_id is {x}; only the highest id ({}) or the legacy 2 pool the text where CLIP does",
                    vocab.saturating_sub(1)
                )));
            }
        },
    }
    let cfg = ClipConfig {
        embed_dim: match v.get("projection_dim") {
            None | Some(serde_json::Value::Null) => 512,
            Some(x) => x.as_u64().ok_or_else(|| {
                bad(format!(
                    "projection_dim is {x}, expected a non-negative integer"
                ))
            })? as usize,
        },
        vision_cfg: VisionConfig {
            image_size: int(&vc, "vision_config", "image_size", 224)?,
            layers: VisionLayers::Vit(int(&vc, "vision_config", "num_hidden_layers", 12)?),
            width: vw,
            patch_size: Some(int(&vc, "vision_config", "patch_size", 32)?),
            head_width: vw / vh.max(1),
            mlp_ratio: mlp_ratio_of(int(&vc, "vision_config", "intermediate_size", 3072)?, vw),
            ..Default::default()
        },
        text_cfg: TextConfig {
            context_length: int(&tc, "text_config", "max_position_embeddings", 77)?,
            vocab_size: vocab,
            width: tw,
            heads: int(&tc, "text_config", "num_attention_heads", 8)?,
            layers: int(&tc, "text_config", "num_hidden_layers", 12)?,
            mlp_ratio: mlp_ratio_of(int(&tc, "text_config", "intermediate_size", 2048)?, tw),
            ..Default::default()
        },
        quick_gelu: ta == "quick_gelu",
        preprocess_cfg: None,
        init_logit_bias: None,
        init_logit_scale: None,
        custom_text: false,
    };
    if vh == 0 || !vw.is_multiple_of(vh) {
        return Err(bad(format!(
            "vision_config.hidden_size {vw} is not a multiple of num_attention_heads {vh}"
        )));
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Whether a `config.json` is a transformers CLIP config (it has a `vision_config`).
pub fn is_hf_config(v: &serde_json::Value) -> bool {
    v.get("vision_config").is_some() || v.get("vision_config_dict").is_some()
}

/// Whether state-dict keys are transformers' `CLIPModel` keys.
pub fn has_hf_keys<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.any(|k| k.starts_with("vision_model.") || k.starts_with("text_model."))
}
