use super::*;
use crate::mean_ci;

fn row(concept: &str, sub: &str, style: &str) -> Row {
    Row {
        image: PathBuf::new(),
        concept: concept.into(),
        style: style.into(),
        tone: "default".into(),
        category: String::new(),
        subcategory: sub.into(),
        trained: true,
    }
}

#[test]
fn purity_counts_the_modal_concept_subcategory_and_styles() {
    let rows = [
        row("cat", "animal", "google"),
        row("cat", "animal", "apple"),
        row("dog", "animal", "google"),
        row("pear", "fruit", "google"),
    ];
    let refs: Vec<&Row> = rows.iter().collect();
    let (c, s, x, m) = purity(&refs, &[0, 1, 2, 3]);
    assert_eq!((c, s, x, m.as_str()), (0.5, 0.75, 0.5, "cat"));
    assert_eq!(extremes(&[0.1, 0.9, -1.0, 0.5], 2, true), [1, 3]);
    assert_eq!(extremes(&[0.1, 0.9, -1.0, 0.5], 1, false), [2]);
    let (m, ci) = mean_ci(&[1.0, 1.0, 1.0]);
    assert_eq!((m, ci), (1.0, 0.0));
}

#[test]
fn random_directions_are_unit_length() {
    let d = directions(3, 50, &mut Rng::new(1));
    for v in &d {
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
    assert_ne!(d[0], d[1]);
    assert_eq!(
        project(&[1.0, 2.0, 3.0, 4.0], 2, &[1.0, -1.0]),
        [-1.0, -1.0]
    );
}
