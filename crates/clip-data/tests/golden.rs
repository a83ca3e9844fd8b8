//! Preprocessing parity with torchvision + Pillow (tools/gen_golden_images.py; testdata/PROVENANCE.md):
//! every pixel of Resize(n, BICUBIC) + CenterCrop(n) within 1/255 of the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clip_data::{Alpha, ImageError, Preprocess, decode_rgb, load_rgb};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images")
}

fn golden() -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir().join("golden.safetensors")).unwrap();
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
