//! Importer for the emoji data shipped in npm packages: `emoji-datasource` (names, categories,
//! skin-tone variants), `emoji-datasource-google`, `-twitter` and `-apple` (the same emoji as 64×64
//! PNGs in three art styles), `cldr-annotations-full` and `cldr-annotations-derived-full` (names
//! and keywords in many languages; the derived set covers skin tones, keycaps and flags). Each base
//! emoji with an image in every chosen style is a concept; a seeded fraction of concepts is held
//! out of training. Images are flattened onto white and written as RGB PNGs beside JSONL
//! manifests. For every imported style `S`:
//!
//! - `train_S.jsonl` — training concepts in style S, several captions each ([`captions`]);
//! - `eval_S_seen.jsonl` — training concepts in style S, labelled (for a style not trained on:
//!   unseen images of seen concepts);
//! - `eval_S_heldout.jsonl` — held-out concepts in style S, labelled;
//! - `categories_S.jsonl` — a coarser task for probes and robustness: the emoji subcategory
//!   (`animal mammal`, `food fruit`, …; those with at least 20 concepts) of every concept, with
//!   `"trained"` telling whether the concept is a training concept;
//!
//! and once: `classes.txt` (every concept name: the zero-shot label set, one per line),
//! `categories.txt`, `train_A+B.jsonl` for `--train-styles A,B` (the training rows of several
//! styles, concept by concept) and `import.json` (the settings, package versions, counts and the
//! list of files written; written last, it marks a complete import).
//!
//! Every row says its `style`, `concept`, `tone` (`default` for the yellow base emoji; `light`,
//! `medium-light`, `medium`, `medium-dark`, `dark`, or two tones as `light/dark`), `category` and
//! `subcategory`. Evaluation rows carry `"label"` (an index into `classes.txt`, or into
//! `categories.txt` for the category sets). With `--skin-tones` every concept's skin-tone variants
//! (1,875 per style in emoji-datasource 16.0.0) are further rows of the same concept, held out with it.

mod captions;
pub mod cldr;

pub use captions::CaptionVariety;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::image::{Alpha, load_rgb};
use crate::rng::{Rng, shuffle};

/// The package versions the README fetches (recorded in `import.json` as read from each package).
pub const EMOJI_VERSION: &str = "16.0.0";
pub const CLDR_VERSION: &str = "48.2.0";

/// The other CLDR locales used by `--captions locales` unless `--locales` names others.
pub const DEFAULT_LOCALES: [&str; 6] = ["fr", "de", "es", "it", "pt", "nl"];

#[derive(Debug, thiserror::Error)]
pub enum EmojiError {
    #[error(
        "cannot read '{path}': {msg} (unpack the npm packages with `npm pack NAME@VERSION` and tar)"
    )]
    Read { path: String, msg: String },
    #[error(
        "the npm package {package} is missing: '{path}' does not exist (in the packages folder run \
         `npm pack {package}@{version} && mkdir -p {package} && tar -xzf {package}-{version}.tgz -C {package}`)"
    )]
    MissingPackage {
        package: String,
        path: String,
        version: &'static str,
    },
    #[error("locale '{locale}' is not in cldr-annotations-full ({count} locales, e.g. {sample})")]
    Locale {
        locale: String,
        count: usize,
        sample: String,
    },
    #[error("cannot write '{path}': {msg}")]
    Write { path: String, msg: String },
    #[error(
        "--held-out-fraction {0} is outside [0, 1): it is the share of concepts kept out of training \
         (e.g. 0.1), and at least one concept must be left to train on"
    )]
    Fraction(f64),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Out(#[from] crate::out::OutError),
}

/// An art style: one `emoji-datasource-STYLE` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Style {
    Google,
    Twitter,
    Apple,
}

impl Style {
    pub const ALL: [Style; 3] = [Style::Google, Style::Twitter, Style::Apple];

    pub fn name(self) -> &'static str {
        ["google", "twitter", "apple"][self as usize]
    }

    pub fn package(self) -> String {
        format!("emoji-datasource-{}", self.name())
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Style, String> {
        Style::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| format!("unknown style '{s}' (known: google, twitter, apple)"))
    }
}

/// Where the unpacked packages are: `root/NAME/package/…` for each package name.
pub struct Packages {
    pub root: PathBuf,
}

impl Packages {
    pub fn under(root: &Path) -> Packages {
        Packages {
            root: root.to_path_buf(),
        }
    }

    /// The `package/` folder of `name`, or an error with the command that fetches it.
    fn dir(&self, name: &str, version: &'static str) -> Result<PathBuf, EmojiError> {
        let d = self.root.join(name).join("package");
        if d.is_dir() {
            Ok(d)
        } else {
            Err(EmojiError::MissingPackage {
                package: name.into(),
                path: d.display().to_string(),
                version,
            })
        }
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// share of concepts kept out of training, in [0, 1)
    pub held_out_fraction: f64,
    pub seed: u64,
    /// the art styles imported (each needs its package)
    pub styles: Vec<Style>,
    /// when given (two or more styles): also write their training rows as one manifest
    pub train_styles: Vec<Style>,
    /// import the skin-tone variants as further images of each concept
    pub skin_tones: bool,
    pub captions: CaptionVariety,
    /// the other locales of `CaptionVariety::Locales`
    pub locales: Vec<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            held_out_fraction: 0.1,
            seed: 0,
            styles: vec![Style::Google, Style::Twitter],
            train_styles: Vec::new(),
            skin_tones: false,
            captions: CaptionVariety::English,
            locales: DEFAULT_LOCALES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl ImportOptions {
    fn check(&self) -> Result<(), EmojiError> {
        if !(0.0..1.0).contains(&self.held_out_fraction) {
            return Err(EmojiError::Fraction(self.held_out_fraction));
        }
        let opt = |m: String| Err(EmojiError::Options(m));
        if self.styles.is_empty() {
            return opt("--styles names no style (known: google, twitter, apple)".into());
        }
        for (what, list) in [
            ("--styles", &self.styles),
            ("--train-styles", &self.train_styles),
        ] {
            let mut seen = HashSet::new();
            if let Some(d) = list.iter().find(|s| !seen.insert(**s)) {
                return opt(format!("{what} names '{d}' twice"));
            }
        }
        if let Some(s) = self.train_styles.iter().find(|s| !self.styles.contains(s)) {
            return opt(format!(
                "--train-styles names '{s}', which --styles does not import ({})",
                self.styles
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.train_styles.len() == 1 {
            return opt(format!(
                "--train-styles needs two or more styles (train_{}.jsonl is written anyway)",
                self.train_styles[0]
            ));
        }
        if let Some(l) = self.locales.iter().find(|l| *l == "en") {
            return opt(format!(
                "--locales names '{l}': English captions are always made"
            ));
        }
        Ok(())
    }
}

/// What the importer wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    pub concepts: usize,
    pub train_concepts: usize,
    pub held_out_concepts: usize,
    /// images per style (base emoji plus skin-tone variants)
    pub images_per_style: usize,
    /// caption–image pairs in one style's training manifest
    pub train_pairs: usize,
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, EmojiError> {
    let err = |msg: String| EmojiError::Read {
        path: path.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

fn unified_to_char(unified: &str) -> String {
    unified
        .split('-')
        .filter_map(|h| u32::from_str_radix(h, 16).ok())
        .filter_map(char::from_u32)
        .collect()
}

/// Subcategories with fewer concepts are left out of the category sets.
pub const MIN_CATEGORY: usize = 20;

/// The Fitzpatrick modifiers' short names, as CLDR names them ("light skin tone", …).
const TONES: [(&str, &str); 5] = [
    ("1F3FB", "light"),
    ("1F3FC", "medium-light"),
    ("1F3FD", "medium"),
    ("1F3FE", "medium-dark"),
    ("1F3FF", "dark"),
];

/// `1F3FB-1F3FF` → `light/dark`; `None` for an unknown modifier.
fn tone_name(key: &str) -> Option<String> {
    key.split('-')
        .map(|k| TONES.iter().find(|(c, _)| *c == k).map(|(_, n)| *n))
        .collect::<Option<Vec<_>>>()
        .map(|v| v.join("/"))
}

/// One image of a concept: the base emoji or one of its skin-tone variants.
struct Variant {
    /// `default` or a [`tone_name`]
    tone: String,
    image: String,
    /// the emoji's characters (CLDR's key)
    chars: String,
}

/// One emoji concept: a base emoji with an image in every imported style.
struct Concept {
    name: String,
    variants: Vec<Variant>,
    category: String,
    subcategory: String,
}

fn has_all(e: &serde_json::Value, styles: &[Style]) -> bool {
    styles
        .iter()
        .all(|s| e[format!("has_img_{s}")].as_bool() == Some(true))
}

/// The concepts of `emoji.json` (unique lower-case names) with an image in every style, sorted by name.
fn read_concepts(
    datasource: &Path,
    styles: &[Style],
    skin_tones: bool,
) -> Result<Vec<Concept>, EmojiError> {
    let emoji = read_json(&datasource.join("emoji.json"))?;
    let list = emoji.as_array().ok_or_else(|| EmojiError::Read {
        path: "emoji.json".into(),
        msg: "not a list".into(),
    })?;
    let mut seen_names = HashSet::new();
    let mut concepts = Vec::new();
    for e in list {
        let (Some(name), Some(image), Some(unified)) = (
            e["name"].as_str(),
            e["image"].as_str(),
            e["unified"].as_str(),
        ) else {
            continue;
        };
        let name = name.to_lowercase();
        if !has_all(e, styles) || !seen_names.insert(name.clone()) {
            continue;
        }
        let mut variants = vec![Variant {
            tone: "default".into(),
            image: image.to_owned(),
            chars: unified_to_char(unified),
        }];
        if skin_tones && let Some(vars) = e["skin_variations"].as_object() {
            for (key, v) in vars {
                let (Some(tone), Some(image), Some(unified)) =
                    (tone_name(key), v["image"].as_str(), v["unified"].as_str())
                else {
                    continue;
                };
                if has_all(v, styles) {
                    variants.push(Variant {
                        tone,
                        image: image.to_owned(),
                        chars: unified_to_char(unified),
                    });
                }
            }
        }
        concepts.push(Concept {
            name,
            variants,
            category: e["category"].as_str().unwrap_or("").to_lowercase(),
            subcategory: e["subcategory"].as_str().unwrap_or("").to_owned(),
        });
    }
    concepts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(concepts)
}

/// Flatten `image` of `style` onto white and save it as an RGB PNG under `out`; returns its path
/// relative to `out`.
fn convert_image(dir: &Path, style: Style, image: &str, out: &Path) -> Result<String, EmojiError> {
    let src = dir.join("img").join(style.name()).join("64").join(image);
    let rgb = load_rgb(&src, Alpha::FlattenOnWhite).map_err(|e| EmojiError::Read {
        path: src.display().to_string(),
        msg: e.to_string(),
    })?;
    let rel = format!("images/{style}/{image}");
    let write_err = |msg: String| EmojiError::Write {
        path: out.join(&rel).display().to_string(),
        msg,
    };
    let img = image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
        .ok_or_else(|| write_err("image buffer of the wrong size".into()))?;
    std::fs::create_dir_all(out.join("images").join(style.name()))
        .map_err(|e| write_err(e.to_string()))?;
    img.save(out.join(&rel))
        .map_err(|e| write_err(e.to_string()))?;
    Ok(rel)
}

fn line(v: serde_json::Value) -> String {
    v.to_string() + "\n"
}

/// The `version` field of a package's `package.json` ("?" when it has none).
fn version(dir: &Path) -> String {
    read_json(&dir.join("package.json"))
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The manifest files of one style.
#[derive(Default)]
struct StyleRows {
    train: String,
    seen: String,
    held: String,
    categories: String,
}

/// Import the emoji concepts into `out` (new, empty, or an earlier import's folder).
pub fn import(p: &Packages, out: &Path, o: &ImportOptions) -> Result<ImportSummary, EmojiError> {
    o.check()?;
    // never write into a folder holding anything but an earlier import (`import.json`, or
    // `train_google.jsonl` from imports before it existed)
    if crate::out::check_output_dir(out, "train_google.jsonl", "emoji import").is_err() {
        crate::out::check_output_dir(out, "import.json", "emoji import")?;
    }
    let datasource = p.dir("emoji-datasource", EMOJI_VERSION)?;
    let mut style_dirs = Vec::new();
    for s in &o.styles {
        style_dirs.push(p.dir(&s.package(), EMOJI_VERSION)?);
    }
    let cldr_full = p.dir("cldr-annotations-full", CLDR_VERSION)?;
    let cldr_derived = p.dir("cldr-annotations-derived-full", CLDR_VERSION)?;
    let english = cldr::Locale::read(&cldr_full, &cldr_derived, "en")?;
    let others = match o.captions {
        CaptionVariety::Locales => o
            .locales
            .iter()
            .map(|l| cldr::Locale::read(&cldr_full, &cldr_derived, l))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let concepts = read_concepts(&datasource, &o.styles, o.skin_tones)?;
    // an earlier import's record goes first: until this import writes its own, the folder is not
    // a complete import (a failure part-way must not leave a mix that looks like one)
    let earlier = read_json(&out.join("import.json")).ok();
    if earlier.is_some() {
        std::fs::remove_file(out.join("import.json")).map_err(|e| EmojiError::Write {
            path: out.join("import.json").display().to_string(),
            msg: e.to_string(),
        })?;
    }
    // seeded held-out split of concepts
    let mut rng = Rng::new(o.seed ^ 0xE410_7777);
    let mut order: Vec<usize> = (0..concepts.len()).collect();
    shuffle(&mut order, &mut rng);
    let n_held = ((concepts.len() as f64 * o.held_out_fraction).round() as usize)
        .min(concepts.len().saturating_sub(1));
    let held: HashSet<usize> = order[..n_held].iter().copied().collect();
    // category classification sets: subcategories with at least MIN_CATEGORY concepts
    let mut sub_count: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &concepts {
        *sub_count.entry(c.subcategory.as_str()).or_default() += 1;
    }
    let categories: Vec<&str> = sub_count
        .iter()
        .filter(|(k, n)| !k.is_empty() && **n >= MIN_CATEGORY)
        .map(|(k, _)| *k)
        .collect();
    let mut rows: Vec<StyleRows> = o.styles.iter().map(|_| StyleRows::default()).collect();
    let mut combined = String::new();
    let mut classes = String::new();
    let (mut train_pairs, mut images) = (0, 0);
    for (i, c) in concepts.iter().enumerate() {
        let name = &c.name;
        classes.push_str(name);
        classes.push('\n');
        let category = categories.iter().position(|k| *k == c.subcategory);
        let trained = !held.contains(&i);
        for (vi, v) in c.variants.iter().enumerate() {
            images += 1;
            let caps = if trained {
                let tone_words = (v.tone != "default").then(|| {
                    v.tone
                        .split('/')
                        .map(|t| format!("{t} skin tone"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let src = captions::Source {
                    name,
                    category: &c.category,
                    tone: tone_words.as_deref(),
                    english: english.get(&v.chars),
                    others: others.iter().filter_map(|l| l.get(&v.chars)).collect(),
                };
                let mut r = Rng::new(o.seed ^ ((i as u64) << 8 | vi as u64).wrapping_mul(0x9E37));
                let caps = captions::captions(&src, o.captions, &mut r);
                train_pairs += caps.len();
                caps
            } else {
                Vec::new()
            };
            for ((s, dir), r) in o.styles.iter().zip(&style_dirs).zip(rows.iter_mut()) {
                let img = convert_image(dir, *s, &v.image, out)?;
                let base = json!({"image": img, "concept": name, "style": s.name(),
                    "tone": v.tone, "category": c.category, "subcategory": c.subcategory});
                let with = |extra: serde_json::Value| {
                    let mut b = base.clone();
                    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                        b.extend(e.clone());
                    }
                    line(b)
                };
                if let Some(ci) = category {
                    r.categories
                        .push_str(&with(json!({"label": ci, "trained": trained})));
                }
                let labelled = with(json!({"label": i, "name": name}));
                if trained {
                    r.seen.push_str(&labelled);
                    let t = with(json!({"captions": caps}));
                    if o.train_styles.contains(s) {
                        combined.push_str(&t);
                    }
                    r.train.push_str(&t);
                } else {
                    r.held.push_str(&labelled);
                }
            }
        }
    }
    let readable: Vec<String> = categories.iter().map(|c| c.replace('-', " ")).collect();
    let mut files: Vec<(String, String)> = vec![
        ("classes.txt".into(), classes),
        ("categories.txt".into(), readable.join("\n") + "\n"),
    ];
    for (s, r) in o.styles.iter().zip(rows) {
        files.push((format!("train_{s}.jsonl"), r.train));
        files.push((format!("eval_{s}_seen.jsonl"), r.seen));
        files.push((format!("eval_{s}_heldout.jsonl"), r.held));
        files.push((format!("categories_{s}.jsonl"), r.categories));
    }
    if !o.train_styles.is_empty() {
        let joined: Vec<&str> = o.train_styles.iter().map(|s| s.name()).collect();
        files.push((format!("train_{}.jsonl", joined.join("+")), combined));
    }
    // manifests an earlier import here wrote and this one does not are removed (they would
    // describe another import); nothing else is touched
    let names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for (name, text) in &files {
        crate::out::write_file(&out.join(name), text.as_bytes())?;
    }
    if let Some(list) = earlier.as_ref().and_then(|e| e["files"].as_array()) {
        for f in list.iter().filter_map(|f| f.as_str()) {
            let ours = f.ends_with(".jsonl") || f.ends_with(".txt");
            if ours && !f.contains('/') && !names.contains(f) {
                let _ = std::fs::remove_file(out.join(f));
            }
        }
    }
    let summary = ImportSummary {
        concepts: concepts.len(),
        train_concepts: concepts.len() - n_held,
        held_out_concepts: n_held,
        images_per_style: images,
        train_pairs,
    };
    let mut packages = serde_json::Map::new();
    packages.insert("emoji-datasource".into(), version(&datasource).into());
    for (s, d) in o.styles.iter().zip(&style_dirs) {
        packages.insert(s.package(), version(d).into());
    }
    packages.insert("cldr-annotations-full".into(), version(&cldr_full).into());
    packages.insert(
        "cldr-annotations-derived-full".into(),
        version(&cldr_derived).into(),
    );
    let record = json!({
        "styles": o.styles.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "train_styles": o.train_styles.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "skin_tones": o.skin_tones,
        "captions": o.captions.name(),
        "locales": if o.captions == CaptionVariety::Locales { o.locales.clone() } else { vec![] },
        "held_out_fraction": o.held_out_fraction,
        "seed": o.seed,
        "packages": packages,
        "concepts": summary.concepts,
        "train_concepts": summary.train_concepts,
        "held_out_concepts": summary.held_out_concepts,
        "images_per_style": summary.images_per_style,
        "train_pairs_per_style": summary.train_pairs,
        "files": files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
    });
    // last: its presence marks a complete import
    let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
    crate::out::write_file(&out.join("import.json"), text.as_bytes())?;
    Ok(summary)
}
