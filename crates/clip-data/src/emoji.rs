//! Importer for the emoji data shipped in npm packages: `emoji-datasource` (names, categories),
//! `emoji-datasource-google` and `emoji-datasource-twitter` (the same emoji as 64×64 PNGs in two art
//! styles) and `cldr-annotations-full` (English keywords). Each base emoji is a concept; a seeded
//! fraction of concepts is held out of training. Images are flattened onto white and written as RGB
//! PNGs beside JSONL manifests:
//!
//! - `train_google.jsonl` — training concepts, google style, several captions each (name, CLDR
//!   name and keywords);
//! - `eval_twitter_seen.jsonl` — training concepts in the twitter style (unseen images of seen concepts);
//! - `eval_google_heldout.jsonl` — held-out concepts, google style;
//! - `classes.txt` — every concept name (the zero-shot label set), one per line;
//! - `categories.txt`, `categories_google.jsonl`, `categories_twitter.jsonl` — a coarser task for
//!   probes and robustness: the emoji subcategory (`animal mammal`, `food fruit`, …; those with at
//!   least 20 concepts) of every concept in each style, with `"trained"` telling whether the
//!   concept's google image is in `train_google.jsonl`.
//!
//! Evaluation rows carry `"label"` (an index into `classes.txt`).

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use std::path::{Path, PathBuf};

use crate::image::{Alpha, load_rgb};
use crate::rng::{Rng, shuffle};

#[derive(Debug, thiserror::Error)]
pub enum EmojiError {
    #[error(
        "cannot read '{path}': {msg} (unpack the npm packages with `npm pack NAME@VERSION` and tar)"
    )]
    Read { path: String, msg: String },
    #[error("cannot write '{path}': {msg}")]
    Write { path: String, msg: String },
    #[error(
        "--held-out-fraction {0} is outside [0, 1): it is the share of concepts kept out of training \
         (e.g. 0.1), and at least one concept must be left to train on"
    )]
    Fraction(f64),
    #[error(transparent)]
    Out(#[from] crate::out::OutError),
}

/// Where the unpacked packages are (each a `package/` directory from `npm pack` + `tar -x`).
pub struct Packages {
    pub datasource: PathBuf,
    pub google: PathBuf,
    pub twitter: PathBuf,
    pub cldr: PathBuf,
}

impl Packages {
    /// The standard layout under `root`: `root/NAME/package/…` for each package name.
    pub fn under(root: &Path) -> Packages {
        Packages {
            datasource: root.join("emoji-datasource/package"),
            google: root.join("emoji-datasource-google/package"),
            twitter: root.join("emoji-datasource-twitter/package"),
            cldr: root.join("cldr-annotations-full/package"),
        }
    }
}

/// What the importer wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    pub concepts: usize,
    pub train_concepts: usize,
    pub held_out_concepts: usize,
    pub train_pairs: usize,
}

fn read_json(path: &Path) -> Result<serde_json::Value, EmojiError> {
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

/// One emoji concept: a base emoji with an image in both styles.
struct Concept {
    name: String,
    image: String,
    tts: Option<String>,
    keywords: Vec<String>,
    category: String,
    subcategory: String,
}

/// The concepts of `emoji.json` (unique lower-case names), with their English CLDR name and
/// keywords, sorted by name.
fn read_concepts(p: &Packages) -> Result<Vec<Concept>, EmojiError> {
    let emoji = read_json(&p.datasource.join("emoji.json"))?;
    let cldr = read_json(&p.cldr.join("annotations/en/annotations.json"))?;
    let ann = &cldr["annotations"]["annotations"];
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
        let both = e["has_img_google"].as_bool() == Some(true)
            && e["has_img_twitter"].as_bool() == Some(true);
        let name = name.to_lowercase();
        if !both || !seen_names.insert(name.clone()) {
            continue;
        }
        let ch = unified_to_char(unified);
        let a = ann
            .get(&ch)
            .or_else(|| ann.get(ch.trim_end_matches('\u{fe0f}')));
        let keywords = a
            .and_then(|a| a["default"].as_array())
            .map(|k| {
                k.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        concepts.push(Concept {
            name,
            image: image.to_owned(),
            tts: a.and_then(|a| a["tts"][0].as_str()).map(str::to_owned),
            keywords,
            category: e["category"].as_str().unwrap_or("").to_lowercase(),
            subcategory: e["subcategory"].as_str().unwrap_or("").to_owned(),
        });
    }
    concepts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(concepts)
}

/// Flatten the concept's image of `style` onto white and save it as an RGB PNG under `out`;
/// returns its path relative to `out`.
fn convert_image(dir: &Path, style: &str, image: &str, out: &Path) -> Result<String, EmojiError> {
    let src = dir.join("img").join(style).join("64").join(image);
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
    std::fs::create_dir_all(out.join("images").join(style))
        .map_err(|e| write_err(e.to_string()))?;
    img.save(out.join(&rel))
        .map_err(|e| write_err(e.to_string()))?;
    Ok(rel)
}

/// The training captions of a concept: its name, a template, the CLDR name, keywords, category.
fn captions(c: &Concept) -> Vec<String> {
    let name = &c.name;
    let mut captions = vec![name.clone(), format!("an emoji of {name}")];
    if let Some(t) = c.tts.as_ref().filter(|t| *t != name) {
        captions.push(t.clone());
    }
    if !c.keywords.is_empty() {
        captions.push(c.keywords.join(", "));
    }
    if !c.category.is_empty() {
        captions.push(format!("{name}, {}", c.category));
    }
    captions
}

fn line(v: serde_json::Value) -> String {
    v.to_string() + "\n"
}

/// Import the emoji concepts into `out` (new, empty, or an earlier import's folder).
pub fn import(
    p: &Packages,
    out: &Path,
    held_out_fraction: f64,
    seed: u64,
) -> Result<ImportSummary, EmojiError> {
    if !(0.0..1.0).contains(&held_out_fraction) {
        return Err(EmojiError::Fraction(held_out_fraction));
    }
    // never write into a folder holding anything but an earlier import
    crate::out::check_output_dir(out, "train_google.jsonl", "emoji import")?;
    let concepts = read_concepts(p)?;
    // seeded held-out split of concepts
    let mut rng = Rng::new(seed ^ 0xE410_7777);
    let mut order: Vec<usize> = (0..concepts.len()).collect();
    shuffle(&mut order, &mut rng);
    let n_held = ((concepts.len() as f64 * held_out_fraction).round() as usize)
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
    let (mut train, mut eval_seen, mut eval_held, mut classes) =
        (String::new(), String::new(), String::new(), String::new());
    let mut cat_rows = [String::new(), String::new()];
    let mut train_pairs = 0;
    for (i, c) in concepts.iter().enumerate() {
        let name = &c.name;
        classes.push_str(name);
        classes.push('\n');
        let google = convert_image(&p.google, "google", &c.image, out)?;
        let twitter = convert_image(&p.twitter, "twitter", &c.image, out)?;
        if let Some(ci) = categories.iter().position(|k| *k == c.subcategory) {
            for (rows, img) in cat_rows.iter_mut().zip([&google, &twitter]) {
                rows.push_str(&line(json!({"image": img, "label": ci, "concept": name,
                    "trained": !held.contains(&i)})));
            }
        }
        if held.contains(&i) {
            eval_held.push_str(&line(json!({"image": google, "label": i, "name": name})));
        } else {
            let caps = captions(c);
            train_pairs += caps.len();
            train.push_str(&line(json!({"image": google, "captions": caps})));
            eval_seen.push_str(&line(json!({"image": twitter, "label": i, "name": name})));
        }
    }
    let readable: Vec<String> = categories.iter().map(|c| c.replace('-', " ")).collect();
    let [cat_google, cat_twitter] = cat_rows;
    for (file, text) in [
        ("eval_twitter_seen.jsonl", eval_seen),
        ("eval_google_heldout.jsonl", eval_held),
        ("classes.txt", classes),
        ("categories.txt", readable.join("\n") + "\n"),
        ("categories_google.jsonl", cat_google),
        ("categories_twitter.jsonl", cat_twitter),
        // last: its presence marks a complete import
        ("train_google.jsonl", train),
    ] {
        crate::out::write_file(&out.join(file), text.as_bytes())?;
    }
    Ok(ImportSummary {
        concepts: concepts.len(),
        train_concepts: concepts.len() - n_held,
        held_out_concepts: n_held,
        train_pairs,
    })
}
