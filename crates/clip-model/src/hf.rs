//! The Hugging Face `CLIPModel` layout: its state-dict keys mapped to OpenAI's (q/k/v packed into
//! `in_proj`), and its `config.json` read into our [`ClipConfig`].

use std::collections::BTreeMap;

use crate::config::{ClipConfig, TextConfig, VisionConfig, VisionLayers};
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

/// Read the model part of a Hugging Face `config.json`.
pub fn hf_config(text: &str, file: &str) -> Result<ClipConfig, LoadError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| LoadError::format(file, format!("invalid JSON ({e})")))?;
    let get = |section: &str, key: &str, default: u64| -> usize {
        v.get(section)
            .and_then(|s| s.get(key))
            .and_then(|x| x.as_u64())
            .unwrap_or(default) as usize
    };
    let act = |section: &str| {
        v.get(section)
            .and_then(|s| s.get("hidden_act"))
            .and_then(|x| x.as_str())
            .unwrap_or("quick_gelu")
            .to_owned()
    };
    let (ta, va) = (act("text_config"), act("vision_config"));
    for a in [&ta, &va] {
        if a != "quick_gelu" && a != "gelu" {
            return Err(LoadError::format(
                file,
                format!("unsupported hidden_act '{a}' (quick_gelu or gelu)"),
            ));
        }
    }
    if ta != va {
        return Err(LoadError::format(
            file,
            "text and vision towers use different activations; not supported",
        ));
    }
    let (vw, vh) = (
        get("vision_config", "hidden_size", 768),
        get("vision_config", "num_attention_heads", 12),
    );
    let tw = get("text_config", "hidden_size", 512);
    let cfg = ClipConfig {
        embed_dim: v
            .get("projection_dim")
            .and_then(|x| x.as_u64())
            .unwrap_or(512) as usize,
        vision_cfg: VisionConfig {
            image_size: get("vision_config", "image_size", 224),
            layers: VisionLayers::Vit(get("vision_config", "num_hidden_layers", 12)),
            width: vw,
            patch_size: Some(get("vision_config", "patch_size", 32)),
            head_width: vw / vh.max(1),
            mlp_ratio: get("vision_config", "intermediate_size", 3072) as f64 / vw as f64,
        },
        text_cfg: TextConfig {
            context_length: get("text_config", "max_position_embeddings", 77),
            vocab_size: get("text_config", "vocab_size", 49408),
            width: tw,
            heads: get("text_config", "num_attention_heads", 8),
            layers: get("text_config", "num_hidden_layers", 12),
            mlp_ratio: get("text_config", "intermediate_size", 2048) as f64 / tw as f64,
        },
        quick_gelu: ta == "quick_gelu",
    };
    cfg.validate()?;
    Ok(cfg)
}
