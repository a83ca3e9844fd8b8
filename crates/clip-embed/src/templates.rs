//! Prompt templates: the sets shipped as data in `configs/templates/` (OpenAI's prompt-engineering
//! lists — the 80 ImageNet templates, the 7-template subset, and the per-dataset sets of OpenAI's
//! notebook as packaged by CLIP_benchmark, see `configs/templates/SOURCES.md` — and this project's
//! own sets), each usable by its file name, or a file with one template per line.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("no template set named '{name}'; shipped sets: {}; or give a file", names().join(", "))]
    Unknown { name: String },
    #[error(transparent)]
    Read(#[from] clip_data::text::TextError),
    #[error("template set '{0}' is empty")]
    Empty(String),
    #[error("template {0:?} has no {{}} where the class name goes")]
    NoPlaceholder(String),
}

macro_rules! shipped {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../configs/templates/", $name, ".txt")),
        )
    };
}

/// Every shipped set: (name, file contents).
pub const SHIPPED: &[(&str, &str)] = &[
    shipped!("caltech101"),
    shipped!("cars"),
    shipped!("cifar10"),
    shipped!("cifar100"),
    shipped!("clevr_count_all"),
    shipped!("country211"),
    shipped!("dtd"),
    shipped!("emoji"),
    shipped!("emoji_ensemble"),
    shipped!("eurosat"),
    shipped!("fer2013"),
    shipped!("fgvc_aircraft"),
    shipped!("flowers"),
    shipped!("food101"),
    shipped!("gtsrb"),
    shipped!("imagenet"),
    shipped!("imagenet7"),
    shipped!("kitti_closest_vehicle_distance"),
    shipped!("mnist"),
    shipped!("pcam"),
    shipped!("pets"),
    shipped!("renderedsst2"),
    shipped!("resisc45"),
    shipped!("simple"),
    shipped!("stl10"),
    shipped!("sun397"),
    shipped!("synthetic"),
    shipped!("voc2007"),
];

/// The names of the shipped sets.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// Templates from text, one per line; every one must hold `{}`.
fn parse(spec: &str, text: &str) -> Result<Vec<String>, TemplateError> {
    let list = clip_data::text::lines(text);
    if list.is_empty() {
        return Err(TemplateError::Empty(spec.into()));
    }
    if let Some(bad) = list.iter().find(|t| !t.contains("{}")) {
        return Err(TemplateError::NoPlaceholder(bad.clone()));
    }
    Ok(list)
}

/// A shipped template set by name, or a file with one template per line.
pub fn templates(spec: &str) -> Result<Vec<String>, TemplateError> {
    if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == spec) {
        return parse(spec, text);
    }
    let p = Path::new(spec);
    if !p.exists() && !spec.contains(['/', '.']) {
        return Err(TemplateError::Unknown { name: spec.into() });
    }
    parse(spec, &clip_data::text::read_text(p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_set_is_usable_by_name() {
        let on_disk = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/templates"
        ))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
        .count();
        assert_eq!(
            SHIPPED.len(),
            on_disk,
            "every file in configs/templates is shipped"
        );
        for name in names() {
            let t = templates(name).unwrap();
            assert!(!t.is_empty(), "{name}");
        }
        assert_eq!(templates("imagenet").unwrap().len(), 80);
        assert_eq!(templates("cifar10").unwrap().len(), 18);
        let e = templates("nonesuch").unwrap_err().to_string();
        assert!(e.contains("shipped sets:") && e.contains("cifar10"), "{e}");
    }
}
