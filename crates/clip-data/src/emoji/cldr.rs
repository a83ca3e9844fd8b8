//! CLDR emoji annotations: the short name (`tts`) and keywords of every emoji in one locale, from
//! `cldr-annotations-full` (single code points) and `cldr-annotations-derived-full` (sequences: skin
//! tones, keycaps, flags, families). Derived entries fill in what the full set lacks; the full set
//! wins where both have an emoji.

use std::collections::HashMap;
use std::path::Path;

use super::{EmojiError, read_json};

/// One emoji's annotation in one locale.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotation {
    pub tts: Option<String>,
    pub keywords: Vec<String>,
}

/// The annotations of one locale, keyed by the emoji's characters.
#[derive(Debug, Default)]
pub struct Locale(HashMap<String, Annotation>);

/// Collapse every run of Unicode white space (CLDR writes U+202F before a French colon) into one
/// ASCII space.
pub fn clean(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn annotations(v: &serde_json::Value, into: &mut HashMap<String, Annotation>) {
    let Some(map) = v.as_object() else { return };
    for (ch, a) in map {
        if into.contains_key(ch) {
            continue;
        }
        let keywords = a["default"]
            .as_array()
            .map(|k| k.iter().filter_map(|x| x.as_str().map(clean)).collect())
            .unwrap_or_default();
        into.insert(
            ch.clone(),
            Annotation {
                tts: a["tts"][0].as_str().map(clean),
                keywords,
            },
        );
    }
}

impl Locale {
    /// Read locale `code` from the two unpacked packages. The full set must have it; the derived set
    /// is used when it has it too (it lacks a few regional variants such as `en-GB`).
    pub fn read(full: &Path, derived: &Path, code: &str) -> Result<Locale, EmojiError> {
        let path = full.join("annotations").join(code).join("annotations.json");
        if !path.is_file() {
            let mut have: Vec<String> = std::fs::read_dir(full.join("annotations"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            have.sort();
            return Err(EmojiError::Locale {
                locale: code.into(),
                count: have.len(),
                sample: have.iter().take(12).cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let mut map = HashMap::new();
        annotations(&read_json(&path)?["annotations"]["annotations"], &mut map);
        let dpath = derived
            .join("annotationsDerived")
            .join(code)
            .join("annotations.json");
        if dpath.is_file() {
            annotations(
                &read_json(&dpath)?["annotationsDerived"]["annotations"],
                &mut map,
            );
        }
        Ok(Locale(map))
    }

    /// The annotation of the emoji written `ch`, also found without its variation selectors.
    pub fn get(&self, ch: &str) -> Option<&Annotation> {
        self.0
            .get(ch)
            .or_else(|| self.0.get(&ch.replace('\u{fe0f}', "")))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_fills_gaps_and_full_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (full, derived) = (dir.path().join("f"), dir.path().join("d"));
        std::fs::create_dir_all(full.join("annotations/fr")).unwrap();
        std::fs::create_dir_all(derived.join("annotationsDerived/fr")).unwrap();
        std::fs::write(
            full.join("annotations/fr/annotations.json"),
            r#"{"annotations":{"annotations":{"😀":{"default":["rire"],"tts":["visage rieur"]}}}}"#,
        )
        .unwrap();
        std::fs::write(
            derived.join("annotationsDerived/fr/annotations.json"),
            "{\"annotationsDerived\":{\"annotations\":{\"😀\":{\"tts\":[\"autre\"]},\
             \"🇫🇷\":{\"default\":[\"drapeau\"],\"tts\":[\"drapeau\u{202f}: France\"]}}}}",
        )
        .unwrap();
        let l = Locale::read(&full, &derived, "fr").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("😀").unwrap().tts.as_deref(), Some("visage rieur"));
        let flag = l.get("🇫🇷").unwrap();
        assert_eq!(flag.tts.as_deref(), Some("drapeau : France"));
        assert_eq!(flag.keywords, vec!["drapeau"]);
        assert_eq!(l.get("😀\u{fe0f}").unwrap().keywords, vec!["rire"]);
        let err = Locale::read(&full, &derived, "xx").unwrap_err().to_string();
        assert!(
            err.contains("locale 'xx' is not in cldr-annotations-full (1 locales, e.g. fr)"),
            "{err}"
        );
    }
}
