//! Preprocessing parity with torchvision + Pillow (tools/gen_golden_images.py; testdata/PROVENANCE.md):
//! RGB-converted files within 1/255 of `Resize(n, BICUBIC)` + `CenterCrop(n)`; every PIL mode
//! exactly equal to open_clip's and OpenAI's transforms (resize in the image's mode, RGB last) and,
//! with `Order::ConvertFirst`, to Hugging Face's `CLIPImageProcessor` (RGB first).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clip_data::{
    Alpha, ImageError, Order, Preprocess, Resize, Rgb8, decode_image, decode_rgb, load_image,
    load_rgb,
};

fn dir() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/images")
}

fn golden() -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    tensors("golden.safetensors")
}

fn tensors(file: &str) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir().join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

#[test]
fn matches_torchvision_within_one_level() {
    let golden = golden();
    assert!(golden.len() >= 12, "only {} golden images", golden.len());
    let mut report = Vec::new();
    for (name, (shape, want)) in &golden {
        let n = shape[1];
        let img = load_rgb(&dir().join(name), Alpha::Drop).unwrap_or_else(|e| panic!("{e}"));
        let out = Preprocess::clip(n).resize_crop(&img);
        // ours is interleaved HWC, the reference planar CHW
        let mut worst = 0i32;
        for c in 0..3 {
            for i in 0..n * n {
                let d = (out.data[i * 3 + c] as i32 - want[c * n * n + i] as i32).abs();
                worst = worst.max(d);
            }
        }
        if worst > 1 {
            report.push(format!("{name}: max difference {worst}/255"));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Largest difference between our interleaved crop and a planar `[3, n, n]` reference.
fn max_diff(ours: &Rgb8, want: &[u8]) -> i32 {
    let plane = ours.width * ours.height;
    assert_eq!(want.len(), 3 * plane, "reference size");
    let mut worst = 0;
    for c in 0..3 {
        for i in 0..plane {
            worst = worst.max((ours.data[i * 3 + c] as i32 - want[c * plane + i] as i32).abs());
        }
    }
    worst
}

/// Per file of `modes.json`: Pillow's mode and n.
fn modes() -> Vec<(String, String, usize)> {
    let text = std::fs::read_to_string(dir().join("modes.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let map = json.as_object().unwrap();
    map.iter()
        .map(|(name, v)| {
            let mode = v["mode"].as_str().unwrap().to_owned();
            (name.clone(), mode, v["n"].as_u64().unwrap() as usize)
        })
        .collect()
}

/// Our transform (`pre` at size n) of every file against one reference, with a table of the
/// differences; every file must match exactly and open in Pillow's mode.
fn check_all(reference: &str, pre: impl Fn(usize) -> Preprocess) {
    let golden = tensors("golden_modes.safetensors");
    let mut table = Vec::new();
    let mut bad = Vec::new();
    for (name, mode, n) in modes() {
        let img = load_image(&dir().join(&name)).unwrap_or_else(|e| panic!("{e}"));
        if img.mode().pil_name() != mode {
            bad.push(format!(
                "{name}: opened as {}, Pillow says {mode}",
                img.mode().pil_name()
            ));
        }
        let (_, want) = &golden[&format!("{reference}/{name}")];
        let worst = max_diff(&pre(n).prepare(&img), want);
        table.push(format!("{name:24} {mode:5} max |Δ| {worst}/255"));
        if worst > 0 {
            bad.push(format!(
                "{name} ({mode}): max difference {worst}/255 from {reference}"
            ));
        }
    }
    println!("against {reference}:\n{}", table.join("\n"));
    assert!(modes().len() >= 30, "only {} files", modes().len());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_mode_matches_open_clip_exactly() {
    check_all("openclip", Preprocess::clip);
}

#[test]
fn every_mode_squashed_matches_open_clip_exactly() {
    let squash = |n| Preprocess {
        resize: Resize::Squash,
        ..Preprocess::clip(n)
    };
    check_all("squash", squash);
}

#[test]
fn squash_in_the_hf_order_is_resize_then_nothing() {
    // the RGB path (`resize_crop`) of a squashing transform: both sides to n, no crop
    let img = Rgb8::new(40, 10, (0..40 * 10 * 3).map(|i| (i % 256) as u8).collect());
    let p = Preprocess {
        resize: Resize::Squash,
        ..Preprocess::hf(16)
    };
    assert_eq!(p.resize_crop(&img), clip_data::resize_bicubic(&img, 16, 16));
    assert_ne!(p.resize_crop(&img), Preprocess::hf(16).resize_crop(&img));
}

#[test]
fn every_mode_matches_openai_clip_exactly() {
    check_all("openai", Preprocess::clip);
}

#[test]
fn convert_first_matches_hugging_face_exactly() {
    // the option spelled out: what `Preprocess::hf` is
    let hf = |n| Preprocess {
        order: Order::ConvertFirst,
        alpha: Alpha::FlattenOnWhite,
        ..Preprocess::clip(n)
    };
    assert_eq!(hf(64), Preprocess::hf(64));
    check_all("hf", hf);
}

/// What the code did before: convert to RGB on load (`load_rgb`), then resize. On transparent,
/// palette, bilevel and 16-bit images it is far from the reference; the reference order is exact.
#[test]
fn converting_first_is_not_the_reference() {
    let golden = tensors("golden_modes.safetensors");
    let mut gaps = Vec::new();
    for (name, mode, n) in modes() {
        let (_, want) = &golden[&format!("openclip/{name}")];
        let old =
            Preprocess::clip(n).resize_crop(&load_rgb(&dir().join(&name), Alpha::Drop).unwrap());
        gaps.push(format!(
            "{name:24} {mode:5} converting first: max |Δ| {}/255",
            max_diff(&old, want)
        ));
        let img = load_image(&dir().join(&name)).unwrap();
        assert_eq!(
            max_diff(&Preprocess::clip(n).prepare(&img), want),
            0,
            "{name}"
        );
    }
    println!("{}", gaps.join("\n"));
    for (name, min_gap) in [
        ("mode_rgba.png", 200),
        ("mode_la.png", 150),
        ("mode_p.png", 50),
        ("mode_p_trns.png", 50),
        ("mode_1.png", 150),
        ("mode_i16.png", 50),
    ] {
        let (_, want) = &golden[&format!("openclip/{name}")];
        let old =
            Preprocess::clip(64).resize_crop(&load_rgb(&dir().join(name), Alpha::Drop).unwrap());
        let gap = max_diff(&old, want);
        assert!(
            gap >= min_gap,
            "{name}: converting first is only {gap}/255 off"
        );
    }
}

/// `Preprocess::load` / `load_bytes` (the embedding pipeline's entry points) follow the reference
/// order: the normalised tensor equals the normalised golden.
#[test]
fn preprocess_load_follows_the_reference_order() {
    let golden = tensors("golden_modes.safetensors");
    let pre = Preprocess::clip(64);
    for name in [
        "mode_rgba.png",
        "mode_p_trns.png",
        "mode_cmyk.jpg",
        "mode_i16.png",
    ] {
        let path = dir().join(name);
        let (_, want) = &golden[&format!("openclip/{name}")];
        let plane = 64 * 64;
        let want: Vec<u8> = (0..plane)
            .flat_map(|i| [want[i], want[plane + i], want[2 * plane + i]])
            .collect();
        let expected = pre.normalize(&Rgb8::new(64, 64, want));
        let got = pre.load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, expected, "{name}");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(pre.load_bytes(&bytes, name).unwrap(), expected, "{name}");
    }
}

#[test]
fn cmyk_jpeg_decodes_like_pillow() {
    // before: "Unsupported color conversion request"; Pillow opens it as (inverted) CMYK
    let bytes = std::fs::read(dir().join("mode_cmyk.jpg")).unwrap();
    let img = decode_image(&bytes, "mode_cmyk.jpg").unwrap();
    assert_eq!(img.mode(), clip_data::Mode::Cmyk);
    let rgb = decode_rgb(&bytes, "mode_cmyk.jpg", Alpha::Drop).unwrap();
    assert_eq!((rgb.width, rgb.height), (150, 100));
}

#[test]
fn flatten_on_white_in_the_reference_order() {
    // a transparent pixel's hidden colour never shows: white after flattening, whatever it hid
    let pre = Preprocess {
        alpha: Alpha::FlattenOnWhite,
        ..Preprocess::clip(64)
    };
    let img = load_image(&dir().join("mode_rgba.png")).unwrap();
    let out = pre.prepare(&img);
    // the leftmost 30 of 150 columns are fully transparent: after resizing to 96×64 and cropping
    // at 16, columns 0..=1 are still entirely inside that band
    for y in 0..64 {
        assert_eq!(
            &out.data[y * 64 * 3..y * 64 * 3 + 3],
            &[255, 255, 255],
            "row {y}"
        );
    }
}

#[test]
#[allow(clippy::excessive_precision)]
fn normalisation_uses_clip_mean_and_std() {
    let p = Preprocess::clip(1);
    let img = clip_data::Rgb8::new(1, 1, vec![255, 0, 128]);
    let out = p.normalize(&img);
    let want = [
        (1.0 - 0.48145466) / 0.26862954,
        (0.0 - 0.4578275) / 0.261_302_6,
        (128.0 / 255.0 - 0.40821073) / 0.275_777_1,
    ];
    for (a, b) in out.iter().zip(want) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn flatten_on_white_uses_alpha() {
    let img = load_rgb(&dir().join("alpha.png"), Alpha::FlattenOnWhite).unwrap();
    // the leftmost column is fully transparent: white after flattening
    assert_eq!(&img.data[..3], &[255, 255, 255]);
    let dropped = load_rgb(&dir().join("alpha.png"), Alpha::Drop).unwrap();
    assert_ne!(&dropped.data[..3], &[255, 255, 255]);
}

#[test]
fn bad_images_have_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // truncated JPEG
    let jpg = std::fs::read(dir().join("photo_224.jpg")).unwrap();
    let truncated = tmp.path().join("truncated.jpg");
    std::fs::write(&truncated, &jpg[..jpg.len() / 3]).unwrap();
    let err = load_rgb(&truncated, Alpha::Drop).unwrap_err();
    assert!(matches!(err, ImageError::Decode { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot decode image '{}': ", truncated.display())),
        "{err}"
    );

    // garbage and zero-byte files
    let err = decode_rgb(b"this is not an image at all", "notes.jpg", Alpha::Drop).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image 'notes.jpg' is in a format that is not supported (JPEG, PNG, WebP, GIF, BMP, TIFF are)"
    );
    let err = decode_rgb(b"", "empty.png", Alpha::Drop).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode image 'empty.png': the file is empty (0 bytes)"
    );

    // missing file
    let err = load_rgb(&tmp.path().join("nope.png"), Alpha::Drop).unwrap_err();
    assert!(err.to_string().starts_with("cannot read image '"), "{err}");

    // a PNG whose header claims 20000×20000 pixels: refused before decoding
    let mut png = Vec::new();
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(b"IHDR");
    png.extend_from_slice(&ihdr);
    let crc = crc32(&[b"IHDR".as_slice(), &ihdr].concat());
    png.extend_from_slice(&crc.to_be_bytes());
    // a few bytes of image data (a real bomb would be a small zlib stream of zeros), then IEND
    let idat = [0x78u8, 0x9c, 0x63, 0x00, 0x00];
    png.extend_from_slice(&(idat.len() as u32).to_be_bytes());
    png.extend_from_slice(b"IDAT");
    png.extend_from_slice(&idat);
    png.extend_from_slice(&crc32(&[b"IDAT".as_slice(), &idat].concat()).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    let err = decode_rgb(&png, "bomb.png", Alpha::Drop).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image 'bomb.png' claims 20000×20000 pixels (400.0 megapixels), more than the 100-megapixel limit; \
         refusing to decode it (possible decompression bomb)"
    );

    // zero-size: a well-formed GIF whose screen and only frame are 0×0
    let gif = b"GIF89a\x00\x00\x00\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x02\x4c\x01\x00\x3b";
    let err = decode_rgb(gif, "zero.gif", Alpha::Drop).unwrap_err();
    assert_eq!(err.to_string(), "image 'zero.gif' is empty (0×0 pixels)");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
