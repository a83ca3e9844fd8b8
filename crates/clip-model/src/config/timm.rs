//! The timm ViT trunks open_clip's SigLIP configs name (`vision_cfg.timm_model_name`), with the
//! sizes timm builds for each — measured on timm's own modules by `tools/gen_configs.py` into
//! `configs/timm.json`. open_clip's config names only the trunk; its sizes live in timm's code,
//! so without this table a SigLIP config could not be built at all.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{ConfigError, mlp_ratio_of};

/// One trunk: a SigLIP-form ViT (no class token, patch conv with bias, no pre-norm, final norm,
/// attention-pool head over one learned latent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimmSpec {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_width: usize,
    /// `gelu` or `gelu_tanh`
    pub act: String,
    pub eps: f64,
}

fn table() -> &'static BTreeMap<String, TimmSpec> {
    static TABLE: OnceLock<BTreeMap<String, TimmSpec>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../../../../configs/timm.json"))
            .unwrap_or_else(|e| unreachable!("configs/timm.json: {e}"))
    })
}

/// The trunk of that name, if the table has it.
pub fn spec(name: &str) -> Option<&'static TimmSpec> {
    table().get(name)
}

/// Every trunk name in the table.
pub fn names() -> Vec<&'static str> {
    table().keys().map(String::as_str).collect()
}

/// Fill a raw `vision_cfg` that names a known timm trunk with the trunk's sizes (`layers`, `width`,
/// `patch_size`, `head_width`, `mlp_ratio`), so the typed config describes the tower it builds; a
/// size the config states must agree with timm's (open_clip would ignore it and build timm's).
pub fn fill(vision: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), ConfigError> {
    let Some(name) = vision.get("timm_model_name").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let name = name.to_owned();
    let Some(s) = spec(&name) else {
        let explicit = ["layers", "width", "patch_size", "head_width"]
            .iter()
            .all(|k| vision.contains_key(*k));
        if explicit {
            return Ok(()); // a self-describing config (what `clip convert` writes for any trunk)
        }
        return Err(ConfigError::Invalid(format!(
            "timm model '{name}' is not one clip-rs knows (known: {}); give its sizes in vision_cfg \
             (layers, width, patch_size, head_width, mlp_ratio)",
            names().join(", ")
        )));
    };
    let wants: [(&str, serde_json::Value); 5] = [
        ("layers", s.layers.into()),
        ("width", s.width.into()),
        ("patch_size", s.patch_size.into()),
        ("head_width", (s.width / s.heads.max(1)).into()),
        ("mlp_ratio", mlp_ratio_of(s.mlp_width, s.width).into()),
    ];
    for (key, want) in wants {
        match vision.get(key) {
            None => {
                vision.insert(key.to_owned(), want);
            }
            Some(have) if key == "mlp_ratio" => {
                let h = have.as_f64().unwrap_or(f64::NAN);
                if super::mlp_width(s.width, h) != s.mlp_width {
                    return Err(mismatch(&name, key, have, s.mlp_width));
                }
            }
            Some(have) if *have != want => return Err(mismatch(&name, key, have, want)),
            Some(_) => {}
        }
    }
    if let Some(size) = vision.get("image_size").and_then(|v| v.as_u64())
        && size as usize != s.image_size
    {
        return Err(ConfigError::Invalid(format!(
            "vision_cfg.image_size is {size} but timm's '{name}' takes {} px images (its position \
             table is sized for them)",
            s.image_size
        )));
    }
    Ok(())
}

fn mismatch(
    name: &str,
    key: &str,
    have: &serde_json::Value,
    want: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid(format!(
        "vision_cfg.{key} is {have} but timm's '{name}' has {want}; open_clip builds timm's trunk and ignores \
         the config's value, so the config is inconsistent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_has_the_siglip_trunks() {
        let b = spec("vit_base_patch16_siglip_224").unwrap();
        assert_eq!(
            (b.width, b.layers, b.heads, b.mlp_width),
            (768, 12, 12, 3072)
        );
        let so = spec("vit_so400m_patch14_siglip_384").unwrap();
        assert_eq!(
            (so.width, so.layers, so.heads, so.mlp_width),
            (1152, 27, 16, 4304)
        );
        assert!(names().len() >= 10);
        for n in names() {
            let s = spec(n).unwrap();
            assert!(s.act == "gelu" || s.act == "gelu_tanh", "{n}");
            assert!(s.image_size >= s.patch_size, "{n}");
        }
    }

    #[test]
    fn fill_inserts_sizes_and_refuses_contradictions() {
        let mut v = serde_json::json!({"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224"});
        fill(v.as_object_mut().unwrap()).unwrap();
        assert_eq!(v["width"], 768);
        assert_eq!(v["head_width"], 64);
        let mut v = serde_json::json!({"image_size": 224, "timm_model_name": "vit_base_patch16_siglip_224", "width": 512});
        let e = fill(v.as_object_mut().unwrap()).unwrap_err().to_string();
        assert!(e.contains("vision_cfg.width is 512 but timm's"), "{e}");
        let mut v = serde_json::json!({"image_size": 256, "timm_model_name": "vit_base_patch16_siglip_224"});
        let e = fill(v.as_object_mut().unwrap()).unwrap_err().to_string();
        assert!(e.contains("takes 224 px images"), "{e}");
        let mut v = serde_json::json!({"image_size": 224, "timm_model_name": "vit_nope"});
        let e = fill(v.as_object_mut().unwrap()).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid model config: timm model 'vit_nope' is not one clip-rs knows"),
            "{e}"
        );
    }
}
