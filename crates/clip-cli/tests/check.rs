//! `clip check`: the stored open_clip records of the test models pass, a model run differently from
//! how the record was made fails with the size of the difference, an unverifiable file says so,
//! and `--reference PYTHON` runs open_clip itself (when `CLIP_TEST_REFERENCE_PYTHON` names a Python
//! with open_clip_torch; CI has none, so there only the failure paths of `--reference` run).

mod common;
use common::{clip, fails, ok_out, root};

fn case(name: &str) -> String {
    root()
        .join("testdata/models")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn stored_records_of_the_test_models_pass() {
    for name in [
        "siglip_openclip_hub",
        "siglip2_openclip_hub",
        "vit_openclip_hub",
        "rn_openclip_st",
    ] {
        let (out, _) = ok_out(&["check", "--model", &case(name), "--json"]);
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let steps = report["steps"].as_array().unwrap();
        let record = steps.iter().find(|s| s["name"] == "stored record").unwrap();
        assert_eq!(record["outcome"], "pass", "{name}: {record}");
        let detail = record["detail"].as_str().unwrap();
        assert!(detail.contains("image embeddings max |Δ|"), "{detail}");
        if name.starts_with("siglip") {
            assert!(detail.contains("image×text cosines max |Δ|"), "{detail}");
        }
        assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    }
    let (out, _) = ok_out(&["check", "--model", &case("siglip_openclip_hub")]);
    assert!(out.contains("PASS  stored record"), "{out}");
    assert!(out.contains("skip  checksum"), "{out}");
}

#[test]
fn a_model_run_unlike_the_record_fails_with_the_difference() {
    // the same weights file (so the same record) preprocessed with other mean/std
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(
        root().join("testdata/models/vit_openclip_hub/open_clip_config.json"),
    )
    .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&src).unwrap();
    cfg["preprocess_cfg"]["mean"] = serde_json::json!([0.4, 0.4, 0.4]);
    let arch = dir.path().join("arch.json");
    std::fs::write(&arch, cfg.to_string()).unwrap();
    let out = clip(&[
        "check",
        "--model",
        &case("vit_openclip_hub"),
        "--arch",
        arch.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("FAIL  stored record"), "{stdout}");
    assert!(
        stderr.contains("does not give the reference's numbers"),
        "{stderr}"
    );
}

#[test]
fn unverifiable_files_and_bad_references_are_reported() {
    // no record, no checksum, no reference: nothing proven, exit 1 with what to do
    let e = fails(&["check", "--model", &case("hf_vit")]);
    assert!(
        e.contains("nothing could be compared for this file: pass --reference PYTHON"),
        "{e}"
    );
    // a reference interpreter that does not exist
    let out = clip(&[
        "check",
        "--model",
        &case("vit_openclip_hub"),
        "--reference",
        "/nonexistent/python3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  reference      cannot run '/nonexistent/python3'"),
        "{stdout}"
    );
    // a missing model is an error before anything runs
    let e = fails(&["check", "--model", "/nonexistent/model.safetensors"]);
    assert!(
        e.starts_with("error: unknown model '/nonexistent/model.safetensors'"),
        "{e}"
    );
}

#[test]
fn reference_python_agrees_when_available() {
    let Some(python) = std::env::var_os("CLIP_TEST_REFERENCE_PYTHON") else {
        eprintln!("CLIP_TEST_REFERENCE_PYTHON not set: open_clip itself is not run here");
        return;
    };
    let python = python.to_string_lossy().into_owned();
    for name in ["vit_openclip_hub", "rn_openclip_st", "vit_openclip_pt"] {
        let (out, _) = ok_out(&["check", "--model", &case(name), "--reference", &python]);
        assert!(out.contains("PASS  reference"), "{name}: {out}");
    }
    // a test trunk timm does not have: skipped with the reason, the stored record still passes
    let (out, _) = ok_out(&[
        "check",
        "--model",
        &case("siglip_openclip_hub"),
        "--reference",
        &python,
    ]);
    assert!(
        out.contains("skip  reference      timm has no model 'test_siglip_tiny'"),
        "{out}"
    );
}
