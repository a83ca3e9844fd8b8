//! The training captions of one emoji image, at three levels of caption variety (the knob the
//! paper's explanation of Figure 2 turns on: richer, noisier text favours the contrastive objective):
//!
//! - `english`: the concept's name, a template, the English CLDR name, its keywords, its category;
//! - `keywords`: those plus three random subsets of the keywords in random orders;
//! - `locales`: those plus the CLDR name and a random keyword subset in each chosen locale.
//!
//! A skin-tone variant's captions all name its tone (in English, or in the locale's CLDR name:
//! a tone variant gets no locale keyword subsets, which could leave the tone out). The random
//! draws are a pure function of the seed and the concept and variant, so every art style of an
//! image gets the same captions.

use super::cldr::Annotation;
use crate::rng::{Rng, shuffle};

/// How varied the training captions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionVariety {
    English,
    Keywords,
    Locales,
}

impl CaptionVariety {
    pub const NAMES: [&'static str; 3] = ["english", "keywords", "locales"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for CaptionVariety {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "english" => Ok(Self::English),
            "keywords" => Ok(Self::Keywords),
            "locales" => Ok(Self::Locales),
            _ => Err(format!(
                "unknown caption variety '{s}' (known: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// What the captions of one image are made from.
pub struct Source<'a> {
    /// the concept's name (emoji.json's, lower case)
    pub name: &'a str,
    /// the coarse category (`animals & nature`)
    pub category: &'a str,
    /// the tone in words (`medium-dark skin tone`), `None` for the default yellow
    pub tone: Option<&'a str>,
    /// the English annotation of this exact image (derived for tones), if CLDR has it
    pub english: Option<&'a Annotation>,
    /// the same in each other locale, where CLDR has it
    pub others: Vec<&'a Annotation>,
}

/// `k` (1 ≤ k ≤ 5) of `words` in a random order, joined by commas.
fn subset(words: &[String], rng: &mut Rng) -> String {
    let mut w: Vec<&String> = words.iter().collect();
    shuffle(&mut w, rng);
    let k = 1 + rng.below(w.len().min(5));
    w[..k]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_new(out: &mut Vec<String>, c: String) {
    if !c.is_empty() && !out.contains(&c) {
        out.push(c);
    }
}

/// The captions of one image. `rng` is seeded per concept and variant by the caller.
pub fn captions(s: &Source, variety: CaptionVariety, rng: &mut Rng) -> Vec<String> {
    let name = s.name;
    let mut out = Vec::new();
    let (named, templated, with_category) = match s.tone {
        None => (
            name.to_owned(),
            format!("an emoji of {name}"),
            format!("{name}, {}", s.category),
        ),
        Some(t) => (
            format!("{name}: {t}"),
            format!("an emoji of {name}, {t}"),
            format!("{name}, {t}, {}", s.category),
        ),
    };
    push_new(&mut out, named);
    push_new(&mut out, templated);
    if let Some(a) = s.english {
        if let Some(t) = &a.tts {
            push_new(&mut out, t.clone());
        }
        push_new(&mut out, a.keywords.join(", "));
    }
    if !s.category.is_empty() {
        push_new(&mut out, with_category);
    }
    if variety == CaptionVariety::English {
        return out;
    }
    let tone_suffix = |c: String| match s.tone {
        Some(t) if !c.contains(t) => format!("{c}, {t}"),
        _ => c,
    };
    if let Some(a) = s.english.filter(|a| !a.keywords.is_empty()) {
        for _ in 0..3 {
            push_new(&mut out, tone_suffix(subset(&a.keywords, rng)));
        }
    }
    if variety == CaptionVariety::Keywords {
        return out;
    }
    for a in &s.others {
        if let Some(t) = &a.tts {
            push_new(&mut out, t.clone());
        }
        // a keyword subset may leave out the tone; a tone variant keeps the locale's name, which
        // names it, and no subsets
        if !a.keywords.is_empty() && s.tone.is_none() {
            push_new(&mut out, subset(&a.keywords, rng));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(tts: &str, kw: &[&str]) -> Annotation {
        Annotation {
            tts: Some(tts.into()),
            keywords: kw.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn varieties_nest_and_tones_are_named() {
        let en = ann(
            "waving hand: dark skin tone",
            &["bye", "hand", "wave", "dark skin tone"],
        );
        let fr = ann("signe de la main : peau foncée", &["main", "salut"]);
        let src = Source {
            name: "waving hand sign",
            category: "people & body",
            tone: Some("dark skin tone"),
            english: Some(&en),
            others: vec![&fr],
        };
        let e = captions(&src, CaptionVariety::English, &mut Rng::new(1));
        assert_eq!(
            e,
            vec![
                "waving hand sign: dark skin tone",
                "an emoji of waving hand sign, dark skin tone",
                "waving hand: dark skin tone",
                "bye, hand, wave, dark skin tone",
                "waving hand sign, dark skin tone, people & body",
            ]
        );
        let k = captions(&src, CaptionVariety::Keywords, &mut Rng::new(1));
        assert_eq!(k[..e.len()], e[..]);
        assert!(k.len() > e.len() && k.len() <= e.len() + 3);
        for c in &k[e.len()..] {
            assert!(c.contains("dark skin tone"), "{c}");
            assert!(
                c.split(", ").all(|w| en.keywords.iter().any(|k| k == w)),
                "{c}"
            );
        }
        let l = captions(&src, CaptionVariety::Locales, &mut Rng::new(1));
        assert_eq!(l[..k.len()], k[..]);
        // a tone variant gets the locale's name (which names the tone) and no keyword subset
        assert_eq!(l[k.len()..], ["signe de la main : peau foncée"]);
        // the same seed gives the same captions
        assert_eq!(l, captions(&src, CaptionVariety::Locales, &mut Rng::new(1)));
        assert_eq!(
            "x".parse::<CaptionVariety>().unwrap_err(),
            "unknown caption variety 'x' (known: english, keywords, locales)"
        );
    }

    #[test]
    fn default_tone_keeps_the_plain_captions() {
        let src = Source {
            name: "grinning face",
            category: "smileys & emotion",
            tone: None,
            english: None,
            others: vec![],
        };
        assert_eq!(
            captions(&src, CaptionVariety::Locales, &mut Rng::new(0)),
            vec![
                "grinning face",
                "an emoji of grinning face",
                "grinning face, smileys & emotion"
            ]
        );
    }
}
