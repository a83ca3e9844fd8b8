use super::*;

#[test]
fn label_sets_refuse_duplicates_and_empty_groups() {
    let ok = LabelSets::default();
    ok.check().unwrap();
    let mut dup = ok.clone();
    dup.creature.push("Gorilla".into());
    let e = dup.check().unwrap_err().to_string();
    assert!(
        e.contains("'Gorilla' appears twice") && e.contains("'creature'"),
        "{e}"
    );
    let mut empty = ok.clone();
    empty.hand.clear();
    let e = empty.check().unwrap_err().to_string();
    assert!(e.contains("group 'hand' is empty"), "{e}");
    let v = ok.variants();
    assert_eq!(v.len(), 5);
    let base = &v[0];
    assert_eq!(base.1.len(), 6 + 6 + 6);
    assert!(!base.1.contains(&"person".to_string()));
    assert!(v[3].1.contains(&"person".to_string()));
    assert_eq!(v[4].1.len(), 18 + 4 + 4 + 1);
    assert_eq!(v[1].2.iter().filter(|g| **g == "child").count(), 4);
}

#[test]
fn mcnemar_is_two_sided_and_exact() {
    assert_eq!(mcnemar(0, 0), 1.0);
    // 8 vs 0 discordant: 2 · 0.5^8
    assert!((mcnemar(8, 0) - 2.0 / 256.0).abs() < 1e-12);
    assert_eq!(mcnemar(3, 3), 1.0);
}
