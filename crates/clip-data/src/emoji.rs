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

/// Import the emoji concepts into `out`.
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
    let emoji = read_json(&p.datasource.join("emoji.json"))?;
    let cldr = read_json(&p.cldr.join("annotations/en/annotations.json"))?;
    let ann = &cldr["annotations"]["annotations"];
    let list = emoji.as_array().ok_or_else(|| EmojiError::Read {
        path: "emoji.json".into(),
        msg: "not a list".into(),
    })?;
    // concepts: base emoji with an image in both styles, unique names
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
        if !(e["has_img_google"].as_bool() == Some(true)
            && e["has_img_twitter"].as_bool() == Some(true))
        {
            continue;
        }
        let name = name.to_lowercase();
        if !seen_names.insert(name.clone()) {
            continue;
        }
        let ch = unified_to_char(unified);
        let a = ann
            .get(&ch)
            .or_else(|| ann.get(ch.trim_end_matches('\u{fe0f}')));
        let tts = a.and_then(|a| a["tts"][0].as_str()).map(str::to_owned);
        let keywords: Vec<String> = a
            .and_then(|a| a["default"].as_array())
            .map(|k| {
                k.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        concepts.push((
            name,
            image.to_owned(),
            tts,
            keywords,
            e["category"].as_str().unwrap_or("").to_lowercase(),
            e["subcategory"].as_str().unwrap_or("").to_owned(),
        ));
    }
    concepts.sort_by(|a, b| a.0.cmp(&b.0));
    // seeded held-out split of concepts
    let mut rng = Rng::new(seed ^ 0xE410_7777);
    let mut order: Vec<usize> = (0..concepts.len()).collect();
    shuffle(&mut order, &mut rng);
    let n_held = ((concepts.len() as f64 * held_out_fraction).round() as usize)
        .min(concepts.len().saturating_sub(1));
    let held: HashSet<usize> = order[..n_held].iter().copied().collect();

    let img_dir = out.join("images");
    for style in ["google", "twitter"] {
        std::fs::create_dir_all(img_dir.join(style)).map_err(|e| EmojiError::Write {
            path: img_dir.display().to_string(),
            msg: e.to_string(),
        })?;
    }
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| EmojiError::Write {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    };
    let mut train = String::new();
    let mut eval_seen = String::new();
    let mut eval_held = String::new();
    let mut classes = String::new();
    let mut train_pairs = 0;
    let mut converted: BTreeMap<(String, &str), String> = BTreeMap::new();
    // category classification sets: subcategories with at least MIN_CATEGORY concepts
    let mut sub_count: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &concepts {
        *sub_count.entry(c.5.as_str()).or_default() += 1;
    }
    let categories: Vec<&str> = sub_count
        .iter()
        .filter(|(k, n)| !k.is_empty() && **n >= MIN_CATEGORY)
        .map(|(k, _)| *k)
        .collect();
    let mut cat_rows = [String::new(), String::new()];
    for (i, (name, image, tts, keywords, category, sub)) in concepts.iter().enumerate() {
        classes.push_str(name);
        classes.push('\n');
        for (style, dir) in [("google", &p.google), ("twitter", &p.twitter)] {
            let src = dir.join("img").join(style).join("64").join(image);
            let rgb = load_rgb(&src, Alpha::FlattenOnWhite).map_err(|e| EmojiError::Read {
                path: src.display().to_string(),
                msg: e.to_string(),
            })?;
            let rel = format!("images/{style}/{image}");
            image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
                .expect("buffer size")
                .save(out.join(&rel))
                .map_err(|e| EmojiError::Write {
                    path: rel.clone(),
                    msg: e.to_string(),
                })?;
            converted.insert((name.clone(), style), rel);
        }
        let google = &converted[&(name.clone(), "google")];
        let twitter = &converted[&(name.clone(), "twitter")];
        if let Some(ci) = categories.iter().position(|c| c == sub) {
            for (rows, img) in cat_rows.iter_mut().zip([google, twitter]) {
                rows.push_str(
                    &serde_json::json!({"image": img, "label": ci, "concept": name,
                        "trained": !held.contains(&i)})
                    .to_string(),
                );
                rows.push('\n');
            }
        }
        if held.contains(&i) {
            eval_held.push_str(
                &serde_json::json!({"image": google, "label": i, "name": name}).to_string(),
            );
            eval_held.push('\n');
        } else {
            let mut captions = vec![name.clone(), format!("an emoji of {name}")];
            if let Some(t) = tts
                && t != name
            {
                captions.push(t.clone());
            }
            if !keywords.is_empty() {
                captions.push(keywords.join(", "));
            }
            if !category.is_empty() {
                captions.push(format!("{name}, {category}"));
            }
            train_pairs += captions.len();
            train.push_str(&serde_json::json!({"image": google, "captions": captions}).to_string());
            train.push('\n');
            eval_seen.push_str(
                &serde_json::json!({"image": twitter, "label": i, "name": name}).to_string(),
            );
            eval_seen.push('\n');
        }
    }
    write(&out.join("train_google.jsonl"), train)?;
    write(&out.join("eval_twitter_seen.jsonl"), eval_seen)?;
    write(&out.join("eval_google_heldout.jsonl"), eval_held)?;
    write(&out.join("classes.txt"), classes)?;
    let readable: Vec<String> = categories.iter().map(|c| c.replace('-', " ")).collect();
    write(&out.join("categories.txt"), readable.join("\n") + "\n")?;
    write(&out.join("categories_google.jsonl"), cat_rows[0].clone())?;
    write(&out.join("categories_twitter.jsonl"), cat_rows[1].clone())?;
    Ok(ImportSummary {
        concepts: concepts.len(),
        train_concepts: concepts.len() - n_held,
        held_out_concepts: n_held,
        train_pairs,
    })
}
