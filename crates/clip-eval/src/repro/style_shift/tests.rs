use super::*;

fn scored(group: &str, s: &[bool], t: &[bool]) -> Scored {
    Scored {
        name: group.into(),
        group: group.into(),
        source: s.to_vec(),
        target: t.to_vec(),
    }
}

#[test]
fn effective_robustness_is_the_distance_above_the_trend() {
    // supervised: target = source − 0.3 roughly; the CLIP is on y = x
    let mk = |a: usize, b: usize| {
        let s: Vec<bool> = (0..10).map(|i| i < a).collect();
        let t: Vec<bool> = (0..10).map(|i| i < b).collect();
        (s, t)
    };
    let mut models = Vec::new();
    for (a, b) in [(4, 1), (6, 3), (8, 5)] {
        let (s, t) = mk(a, b);
        models.push(scored("supervised", &s, &t));
    }
    let (s, t) = mk(6, 6);
    models.push(scored("google", &s, &t));
    let (fit, er) = effective(&models, &all(10), &all(10));
    assert!(fit.slope > 0.0);
    assert!((er[1]).abs() < 0.05, "on the trend: {}", er[1]);
    assert!(er[3] > 0.2, "above the trend: {}", er[3]);
    let (iv, diff, pooled) = bootstrap(&models, 200, &[(1, 3)], 0);
    assert!(
        iv[3].0 <= er[3] && er[3] <= iv[3].1 + 1e-9,
        "{:?} {}",
        iv[3],
        er[3]
    );
    assert!(diff[0].1 > 0.0);
    // one pair: the pooled means are that pair's own values and intervals
    assert_eq!(pooled[2], diff[0]);
    assert_eq!(pooled[1], iv[3]);
    assert_eq!(pooled[0], iv[1]);
}

#[test]
fn pooled_means_average_each_side_and_the_gain() {
    let er = [0.10, -0.20, 0.30, 0.05, 0.0];
    let [a, b, gain] = pooled_means(&er, &[(0, 1), (2, 3)]);
    assert!((a - 0.20).abs() < 1e-12, "{a}");
    assert!((b + 0.075).abs() < 1e-12, "{b}");
    assert!((gain - (b - a)).abs() < 1e-12, "{gain}");
    assert_eq!(pooled_means(&er, &[]), [0.0, 0.0, 0.0]);
}
