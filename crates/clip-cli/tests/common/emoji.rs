//! Fake npm emoji packages in the layout the importer reads.

use std::path::Path;

fn png(path: &Path, rgb: [u8; 3], shape: u32) {
    let img = image::RgbaImage::from_fn(64, 64, |x, y| {
        let inside = match shape % 3 {
            0 => (x as i32 - 32).pow(2) + (y as i32 - 32).pow(2) < 400,
            1 => (16..48).contains(&x) && (16..48).contains(&y),
            _ => x + y > 40 && x + y < 90,
        };
        if inside {
            image::Rgba([rgb[0], rgb[1], rgb[2], 255])
        } else {
            image::Rgba([0, 0, 0, 0])
        }
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// One fake emoji: its name (`emoji-datasource` spells it in capitals), category, subcategory,
/// CLDR keywords, and whether it has the five skin-tone variants.
#[derive(Clone)]
pub struct Fake {
    pub name: String,
    pub category: String,
    pub subcategory: String,
    pub keywords: Vec<String>,
    pub tones: bool,
}

/// The npm packages' files the importer reads, for 40 emoji in two subcategories and three styles,
/// the first four with five skin-tone variants, and English and French CLDR annotations.
pub fn fake_packages(pkgs: &Path) {
    write_packages(pkgs, &fake_list());
}

/// The 40 emoji of [`fake_packages`].
pub fn fake_list() -> Vec<Fake> {
    (0..40u32)
        .map(|i| {
            let (sub, kind, cat) = if i < 20 {
                ("animal-mammal", "animal", "Animals & Nature")
            } else {
                ("food-fruit", "fruit", "Food & Drink")
            };
            Fake {
                name: format!("{kind} number {i}"),
                category: cat.into(),
                subcategory: sub.into(),
                keywords: vec![kind.into(), format!("thing {i}")],
                tones: i < 4,
            }
        })
        .collect()
}

/// Fake packages with the concepts the inside probes look for: people and hands with skin
/// tones, animals and creatures (the bias probe's labels), keycaps, flags, clock faces, moon
/// phases, arrows, a "facing right" twin and families (the limitations probes), and some others.
pub fn probe_packages(pkgs: &Path) {
    write_packages(pkgs, &probe_list());
}

/// The emoji of [`probe_packages`].
pub fn probe_list() -> Vec<Fake> {
    let mut list = Vec::new();
    let mut add = |name: &str, cat: &str, sub: &str, tones: bool| {
        list.push(Fake {
            name: name.into(),
            category: cat.into(),
            subcategory: sub.into(),
            keywords: name.split(' ').map(str::to_owned).collect(),
            tones,
        })
    };
    for n in ["person", "man", "woman", "child", "older adult"] {
        add(n, "People & Body", "person", true);
    }
    add("man walking", "People & Body", "person-activity", true);
    add(
        "man walking facing right",
        "People & Body",
        "person-activity",
        true,
    );
    for n in ["waving hand sign", "raised hand", "thumbs up sign"] {
        add(n, "People & Body", "hand-fingers-open", true);
    }
    for n in ["gorilla", "orangutan", "monkey", "dog", "cat", "horse"] {
        add(n, "Animals & Nature", "animal-mammal", false);
    }
    for n in ["japanese ogre", "troll", "zombie", "alien monster"] {
        add(n, "People & Body", "person-fantasy", false);
    }
    for d in 0..10 {
        add(&format!("keycap {d}"), "Symbols", "keycap", false);
    }
    for c in ["france", "japan", "brazil", "kenya"] {
        add(&format!("{c} flag"), "Flags", "country-flag", false);
    }
    for h in ["one", "two", "three"] {
        add(
            &format!("clock face {h} oclock"),
            "Travel & Places",
            "time",
            false,
        );
    }
    for m in ["new", "full", "first quarter"] {
        add(
            &format!("{m} moon symbol"),
            "Travel & Places",
            "sky & weather",
            false,
        );
    }
    for a in [
        "upwards black arrow",
        "downwards black arrow",
        "leftwards black arrow",
    ] {
        add(a, "Symbols", "arrow", false);
    }
    add("family: man, boy", "People & Body", "family", false);
    add("family: man, woman, boy", "People & Body", "family", false);
    add(
        "family: man, woman, girl, boy",
        "People & Body",
        "family",
        false,
    );
    for n in [
        "apple", "banana", "cherry", "grapes", "lemon", "melon", "peach", "pear",
    ] {
        add(n, "Food & Drink", "food-fruit", false);
    }
    list
}

/// Write `emoji-datasource` (emoji.json), three style packages of 64×64 PNGs and the English
/// (base and derived) and French CLDR annotations for `list`.
pub fn write_packages(pkgs: &Path, list: &[Fake]) {
    let mut rows = Vec::new();
    let mut ann = serde_json::Map::new();
    let mut derived = serde_json::Map::new();
    let mut fr = serde_json::Map::new();
    let styles = [
        ("emoji-datasource-google", "google"),
        ("emoji-datasource-twitter", "twitter"),
        ("emoji-datasource-apple", "apple"),
    ];
    for (i, e) in list.iter().enumerate() {
        let i = i as u32;
        let code = 0x1F400 + i;
        let image = format!("{code:x}.png");
        let name = &e.name;
        let ch = char::from_u32(code).unwrap().to_string();
        let rgb = [
            (i * 37 % 256) as u8,
            (i * 91 % 256) as u8,
            (i * 53 % 256) as u8,
        ];
        let mut variations = serde_json::Map::new();
        for t in 0..if e.tones { 5 } else { 0 } {
            let tone = 0x1F3FB + t;
            let vimage = format!("{code:x}-{tone:x}.png");
            variations.insert(
                format!("{tone:X}"),
                serde_json::json!({
                "unified": format!("{code:X}-{tone:X}"), "image": vimage,
                "has_img_google": true, "has_img_twitter": true, "has_img_apple": true}),
            );
            let vch = format!("{ch}{}", char::from_u32(tone).unwrap());
            // a variant's keywords: the first of the base's, and its tone
            let kw = [e.keywords[0].clone(), format!("tone {t}")];
            derived.insert(
                vch,
                serde_json::json!({"default": kw, "tts": [format!("{name}: tone {t}")]}),
            );
            for (pkg, style) in styles {
                let dir = pkgs.join(pkg).join("package/img").join(style).join("64");
                let dark = [rgb[0] / (t as u8 + 2), rgb[1] / 2, rgb[2] / 2];
                png(&dir.join(&vimage), dark, i);
            }
        }
        rows.push(
            serde_json::json!({"name": name.to_uppercase(), "unified": format!("{code:X}"),
            "image": image, "has_img_google": true, "has_img_twitter": true, "has_img_apple": true,
            "skin_variations": variations,
            "category": e.category, "subcategory": e.subcategory}),
        );
        ann.insert(
            ch.clone(),
            serde_json::json!({"default": e.keywords, "tts": [name]}),
        );
        fr.insert(
            ch,
            serde_json::json!({"default": [format!("chose {i}")], "tts": [format!("numéro {i}")]}),
        );
        for (k, (pkg, style)) in styles.into_iter().enumerate() {
            let dir = pkgs.join(pkg).join("package/img").join(style).join("64");
            png(&dir.join(&image), rgb, i + k as u32);
        }
    }
    let ds = pkgs.join("emoji-datasource/package");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(ds.join("emoji.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    for (locale, map) in [("en", &ann), ("fr", &fr)] {
        let cldr = pkgs
            .join("cldr-annotations-full/package/annotations")
            .join(locale);
        std::fs::create_dir_all(&cldr).unwrap();
        let doc = serde_json::json!({"annotations": {"annotations": map}});
        std::fs::write(cldr.join("annotations.json"), doc.to_string()).unwrap();
    }
    let der = pkgs.join("cldr-annotations-derived-full/package/annotationsDerived/en");
    std::fs::create_dir_all(&der).unwrap();
    let doc = serde_json::json!({"annotationsDerived": {"annotations": derived}});
    std::fs::write(der.join("annotations.json"), doc.to_string()).unwrap();
}

/// `clip import-emoji --packages PKGS --out OUT EXTRA…`.
pub fn import(pkgs: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "import-emoji",
        "--packages",
        pkgs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    super::clip(&args)
}
