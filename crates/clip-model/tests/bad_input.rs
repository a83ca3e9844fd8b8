//! Wrong or damaged checkpoints give errors that name the file, the key and both shapes; pickles
//! that refer to code are refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use clip_model::source::RawTensor;
use clip_model::weights::{read_checkpoint, write_safetensors};
use clip_model::{Capture, ClipConfig, cpu, load_clip};

fn case(name: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/models")
    .join(name)
}

/// The ViT case's tensors, edited, written as model.safetensors + config.json in a temp dir.
fn edited_vit(
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, RawTensor>),
) -> (tempfile::TempDir, PathBuf) {
    let mut loaded = read_checkpoint(&case("vit_openclip_pt").join("model.pt")).unwrap();
    edit(&mut loaded.tensors);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    let tensors: Vec<(String, RawTensor)> = loaded.tensors.into_iter().collect();
    write_safetensors(&weights, &tensors).unwrap();
    std::fs::copy(
        case("vit_openclip_pt").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    (dir, weights)
}

#[test]
fn missing_tensor_is_named() {
    let (_dir, weights) = edited_vit(|t| {
        t.remove("visual.ln_post.weight");
    });
    let err = load_clip(&weights, None, &cpu()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "missing tensor 'visual.ln_post.weight' in {}",
            weights.display()
        )
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let (_dir, weights) = edited_vit(|t| {
        t.insert(
            "visual.head.weight".into(),
            RawTensor::new(vec![2, 2], vec![0.0; 4]),
        );
    });
    let err = load_clip(&weights, None, &cpu()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unexpected tensors in {} (is it a checkpoint of another model?): 'visual.head.weight' [2, 2]",
            weights.display()
        )
    );
}

#[test]
fn checkpoint_of_another_family_names_key_and_shapes() {
    let vit_cfg = ClipConfig::from_json(
        &std::fs::read_to_string(case("vit_openclip_pt").join("config.json")).unwrap(),
    )
    .unwrap();
    let rn = case("rn_openclip_st").join("open_clip_model.safetensors");
    let err = load_clip(&rn, Some(&vit_cfg), &cpu()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "tensor 'visual.conv1.weight' in {} has shape [4, 3, 3, 3], expected [64, 3, 16, 16]",
            rn.display()
        )
    );
}

#[test]
fn pickle_with_code_is_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let path = dir.path().join("evil.pt");
    // torch.save layout (archive/data.pkl) whose pickle calls os.system("touch <marker>")
    let cmd = format!("touch {}", marker.display());
    let mut pkl = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    pkl.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pkl.extend_from_slice(cmd.as_bytes());
    pkl.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("archive/data.pkl", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&pkl).unwrap();
    zip.finish().unwrap();
    let err = load_clip(&path, None, &cpu()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the pickle refers to 'posix.system', which is not a tensor or container type; refusing to load it (pickled code is never run)",
            path.display()
        )
    );
    assert!(!marker.exists());
}

/// A `torch.save` zip whose one tensor has the given offset, sizes and strides over a 4-float
/// storage (sizes and offsets read from the file must never overflow).
fn crafted_tensor(path: &Path, offset: i64, size: [i64; 2], stride: [i64; 2]) {
    let long = |v: i64| {
        let mut b = vec![0x8a, 8];
        b.extend_from_slice(&v.to_le_bytes());
        b
    };
    let text = |s: &str| {
        let mut b = vec![b'X'];
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        b
    };
    let mut pkl = b"\x80\x02}".to_vec();
    pkl.extend(text("visual.proj"));
    pkl.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    pkl.extend(text("storage"));
    pkl.extend_from_slice(b"ctorch\nFloatStorage\n");
    pkl.extend(text("0"));
    pkl.extend(text("cpu"));
    pkl.extend_from_slice(b"K\x04tQ");
    pkl.extend(long(offset));
    pkl.push(b'(');
    pkl.extend(long(size[0]));
    pkl.extend(long(size[1]));
    pkl.extend_from_slice(b"t(");
    pkl.extend(long(stride[0]));
    pkl.extend(long(stride[1]));
    pkl.extend_from_slice(b"t\x89}tRs.");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&pkl).unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    zip.write_all(&[0u8; 16]).unwrap();
    zip.finish().unwrap();
}

#[test]
fn crafted_sizes_and_offsets_are_errors_not_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.pt");
    // a well-formed 2×2 tensor over the storage loads
    crafted_tensor(&path, 0, [2, 2], [2, 1]);
    let t = read_checkpoint(&path).unwrap();
    assert_eq!(t.tensors["visual.proj"].shape, vec![2, 2]);
    for (offset, size, stride, want) in [
        (0, [1 << 62, 8], [1, 1], "beyond any storage"),
        (0, [5, 5], [1 << 62, 1 << 62], "beyond any storage"),
        (
            i64::MAX,
            [2, 2],
            [2, 1],
            "reads past the end of its storage",
        ),
        (-1, [2, 2], [2, 1], "offset is negative"),
        (3, [2, 2], [2, 1], "reads past the end of its storage"),
    ] {
        crafted_tensor(&path, offset, size, stride);
        let Err(err) = read_checkpoint(&path) else {
            panic!("offset {offset} size {size:?} stride {stride:?} loaded");
        };
        let err = err.to_string();
        assert!(
            err.contains(want),
            "offset {offset} size {size:?} stride {stride:?}: {err}"
        );
    }
}

#[test]
fn truncated_checkpoint_is_an_error() {
    let bytes = std::fs::read(case("vit_openclip_pt").join("model.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_clip(&path, None, &cpu()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: unreadable zip archive", path.display())),
        "{err}"
    );
    assert!(err.ends_with("is the file truncated?"), "{err}");
}

#[test]
fn not_a_clip_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    write_safetensors(
        &path,
        &[("fc.weight".into(), RawTensor::new(vec![2], vec![1.0, 2.0]))],
    )
    .unwrap();
    let err = load_clip(&path, None, &cpu()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot tell the model's architecture: it has neither 'token_embedding.weight' nor 'visual.conv1.weight': not a CLIP checkpoint",
            path.display()
        )
    );
}

#[test]
fn capture_block_outputs() {
    use burn::prelude::*;
    let device = cpu();
    for (name, file, wanted, expect) in [
        (
            "vit_openai_jit",
            "model.pt",
            "visual.transformer.resblocks.*",
            // each block's MLP hidden units (after the activation), then its output
            vec![
                ("visual.transformer.resblocks.0.mlp", vec![2, 10, 256]),
                ("visual.transformer.resblocks.0", vec![2, 10, 64]),
                ("visual.transformer.resblocks.1.mlp", vec![2, 10, 256]),
                ("visual.transformer.resblocks.1", vec![2, 10, 64]),
            ],
        ),
        (
            "rn_openai_jit",
            "model.pt",
            "visual.layer3.1",
            vec![("visual.layer3.1", vec![2, 64, 4, 4])],
        ),
    ] {
        let clip = load_clip(&case(name).join(file), None, &device).unwrap();
        let s = clip.config.image_size();
        let images = Tensor::<4>::zeros([2, 3, s, s], &device);
        let mut cap = Capture::new([wanted]);
        let with =
            clip_model::source::to_vec(&clip.encode_image_with(images.clone(), Some(&mut cap)));
        let without = clip_model::source::to_vec(&clip.encode_image(images));
        assert_eq!(with, without, "capturing must not change the output");
        let got: Vec<(&str, Vec<usize>)> = cap
            .outputs
            .iter()
            .map(|a| (a.name.as_str(), a.shape.clone()))
            .collect();
        assert_eq!(got, expect, "{name}");
        if let Some(h) = cap.get("visual.transformer.resblocks.1.mlp") {
            // after QuickGELU, x·σ(1.702x) ≥ −0.1646: the units are taken after the activation
            let min = h.data.iter().copied().fold(f32::INFINITY, f32::min);
            assert!((-0.1647..0.0).contains(&min), "{min}");
        }
    }
    let clip = load_clip(&case("vit_openai_jit").join("model.pt"), None, &device).unwrap();
    let mut cap = Capture::new(["transformer.resblocks.1"]);
    clip.encode_text_with(&[vec![510, 5, 6, 511]], Some(&mut cap))
        .unwrap();
    assert_eq!(
        cap.get("transformer.resblocks.1").unwrap().shape,
        vec![1, 4, 64]
    );
}

#[test]
fn text_rows_are_checked() {
    let clip = load_clip(&case("vit_openai_jit").join("model.pt"), None, &cpu()).unwrap();
    let err = clip.encode_text(&[vec![510, 9999, 511]]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token id 9999 in row 0 is outside the model's vocabulary of 512"
    );
    let err = clip.encode_text(&[vec![1; 80]]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0 has 80 tokens but the model's context length is 77"
    );
}

#[test]
fn length_buckets_do_not_change_results() {
    // 40 rows of varied lengths (more than one bucket) vs each row on its own
    let clip = load_clip(&case("vit_openai_jit").join("model.pt"), None, &cpu()).unwrap();
    let rows: Vec<Vec<u32>> = (0..40u32)
        .map(|i| {
            let n = (i * 7 % 30) as usize + 1;
            let mut r = vec![510];
            r.extend((0..n).map(|j| 1 + (i + j as u32 * 13) % 500));
            r.push(511);
            r.resize(77, 0);
            r
        })
        .collect();
    let batched = clip_model::source::to_vec(&clip.encode_text(&rows).unwrap());
    for (i, row) in rows.iter().enumerate() {
        let single =
            clip_model::source::to_vec(&clip.encode_text(std::slice::from_ref(row)).unwrap());
        for (a, b) in single.iter().zip(&batched[i * 32..(i + 1) * 32]) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
    }
}

#[test]
fn integer_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("int.safetensors");
    let bytes = vec![0u8; 4 * 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2, 2], &bytes).unwrap();
    std::fs::write(
        &p,
        safetensors::serialize([("visual.proj", view)], None).unwrap(),
    )
    .unwrap();
    let Err(err) = clip_model::weights::read_checkpoint(&p) else {
        panic!("an int64 weight loaded");
    };
    assert!(
        err.to_string()
            .contains("tensor 'visual.proj' is stored as I64, not floating point"),
        "{err}"
    );
}
