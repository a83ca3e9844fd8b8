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

/// The npm packages' files the importer reads, for 40 emoji in two subcategories and three styles,
/// the first four with five skin-tone variants, and English and French CLDR annotations.
pub fn fake_packages(pkgs: &Path) {
    let mut list = Vec::new();
    let mut ann = serde_json::Map::new();
    let mut derived = serde_json::Map::new();
    let mut fr = serde_json::Map::new();
    let styles = [
        ("emoji-datasource-google", "google"),
        ("emoji-datasource-twitter", "twitter"),
        ("emoji-datasource-apple", "apple"),
    ];
    for i in 0..40u32 {
        let (sub, kind) = if i < 20 {
            ("animal-mammal", "animal")
        } else {
            ("food-fruit", "fruit")
        };
        let code = 0x1F400 + i;
        let image = format!("{code:x}.png");
        let name = format!("{kind} number {i}");
        let ch = char::from_u32(code).unwrap().to_string();
        let rgb = [
            (i * 37 % 256) as u8,
            (i * 91 % 256) as u8,
            (i * 53 % 256) as u8,
        ];
        let mut variations = serde_json::Map::new();
        for t in 0..if i < 4 { 5 } else { 0 } {
            let tone = 0x1F3FB + t;
            let vimage = format!("{code:x}-{tone:x}.png");
            variations.insert(
                format!("{tone:X}"),
                serde_json::json!({
                "unified": format!("{code:X}-{tone:X}"), "image": vimage,
                "has_img_google": true, "has_img_twitter": true, "has_img_apple": true}),
            );
            let vch = format!("{ch}{}", char::from_u32(tone).unwrap());
            derived.insert(
                vch,
                serde_json::json!({"default": [kind, format!("tone {t}")],
                "tts": [format!("{name}: tone {t}")]}),
            );
            for (pkg, style) in styles {
                let dir = pkgs.join(pkg).join("package/img").join(style).join("64");
                let dark = [rgb[0] / (t as u8 + 2), rgb[1] / 2, rgb[2] / 2];
                png(&dir.join(&vimage), dark, i);
            }
        }
        list.push(serde_json::json!({"name": name.to_uppercase(), "unified": format!("{code:X}"),
            "image": image, "has_img_google": true, "has_img_twitter": true, "has_img_apple": true,
            "skin_variations": variations,
            "category": if i < 20 { "Animals & Nature" } else { "Food & Drink" }, "subcategory": sub}));
        ann.insert(
            ch.clone(),
            serde_json::json!({"default": [kind, format!("thing {i}")], "tts": [name]}),
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
    std::fs::write(ds.join("emoji.json"), serde_json::to_string(&list).unwrap()).unwrap();
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
