//! Evaluation datasets in every supported format, read from real files: class folders, JSONL and CSV
//! manifests (label indices and names), WebDataset shards with `.cls` members.

use std::path::Path;

use clip_data::Alpha;
use clip_data::dataset::{DataError, EvalSet};

fn png(path: &Path, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 3, image::Rgb([shade, 0, 0]));
    img.save(path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn manifests_folders_and_shards_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("classes.txt"), "cat\ndog\n").unwrap();
    let mut pngs = Vec::new();
    for (i, class) in ["cat", "dog", "dog"].iter().enumerate() {
        std::fs::create_dir_all(d.join("tree").join(class)).unwrap();
        pngs.push(png(
            &d.join("tree").join(class).join(format!("{i}.png")),
            10 * i as u8,
        ));
    }
    let classes = d.join("classes.txt");
    let folders = EvalSet::classification(d.join("tree").to_str().unwrap(), None).unwrap();
    assert_eq!(folders.class_names, ["cat", "dog"]);
    assert_eq!(folders.labels, [0, 1, 1]);
    std::fs::write(
        d.join("m.jsonl"),
        "{\"image\": \"tree/cat/0.png\", \"label\": 0}\n{\"image\": \"tree/dog/1.png\", \"label\": \"dog\"}\n",
    )
    .unwrap();
    let m = EvalSet::classification(d.join("m.jsonl").to_str().unwrap(), Some(&classes)).unwrap();
    assert_eq!(m.labels, [0, 1]);
    assert_eq!(m.load(1, Alpha::Drop).unwrap().data[0], 10);
    std::fs::write(
        d.join("m.csv"),
        "filepath,label\ntree/dog/2.png,dog\ntree/cat/0.png,0\n",
    )
    .unwrap();
    let c = EvalSet::classification(d.join("m.csv").to_str().unwrap(), Some(&classes)).unwrap();
    assert_eq!(c.labels, [1, 0]);
    // a shard with .cls members (an index and a name)
    let mut b = tar::Builder::new(Vec::new());
    for (key, data, cls) in [("a", &pngs[0], "0"), ("b", &pngs[2], "dog")] {
        for (ext, bytes) in [("png", data.as_slice()), ("cls", cls.as_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{key}.{ext}"), bytes)
                .unwrap();
        }
    }
    std::fs::write(d.join("s.tar"), b.into_inner().unwrap()).unwrap();
    let s = EvalSet::classification(d.join("s.tar").to_str().unwrap(), Some(&classes)).unwrap();
    assert_eq!(s.labels, [0, 1]);
    assert_eq!(s.load(1, Alpha::Drop).unwrap().data[0], 20);
    // the same shard as a retrieval set: the `.cls` text is each sample's one caption
    let r = EvalSet::retrieval(d.join("s.tar").to_str().unwrap()).unwrap();
    assert_eq!(r.captions, [vec!["0".to_string()], vec!["dog".to_string()]]);
    // fingerprints follow content and labels
    let again =
        EvalSet::classification(d.join("m.jsonl").to_str().unwrap(), Some(&classes)).unwrap();
    assert_eq!(again.fingerprint, m.fingerprint);
    assert_ne!(c.fingerprint, m.fingerprint);
    // retrieval needs captions
    let err = EvalSet::retrieval(d.join("m.jsonl").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::NoCaptions(_)), "{err}");
    // a manifest without --classes
    let err = EvalSet::classification(d.join("m.jsonl").to_str().unwrap(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "'{}' is a classification set: give it a class list with --classes",
            d.join("m.jsonl").display()
        )
    );
}
