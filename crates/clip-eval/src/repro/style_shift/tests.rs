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

#[test]
fn the_report_gives_each_seed_its_gain_and_the_means_over_seeds() {
    let o = ShiftOptions {
        out: PathBuf::from("runs/robustness"),
        emoji: PathBuf::from("data/emoji3"),
        source: "google".into(),
        extra: "twitter".into(),
        target: "apple".into(),
        images: 32768,
        seeds: vec![0, 1],
        batch_size: 128,
        lr: 1e-3,
        classifier_steps: vec![25],
        classifier_seeds: vec![0],
        probe_seeds: vec![0],
        bootstrap: 100,
        model: clip_train::config::small_model(),
        templates: vec!["{}".into()],
    };
    let r = serde_json::json!({
        "settings": {"classes": 31, "train_images": 1145, "test_source": 124, "test_target": 124,
                     "machine": "1 thread on a CPU"},
        "trend_logit": {"slope": 0.269, "intercept": -0.937},
        "models": [{"model": "zero-shot CLIP trained on google, seed 0", "source": 0.242, "target": 0.234,
                    "effective_robustness": 0.010, "interval95": [-0.087, 0.104]}],
        "second_style_gain": [{"seed": 0, "gain": -0.056, "interval95": [-0.141, 0.031]},
                              {"seed": 1, "gain": 0.041, "interval95": [-0.031, 0.117]}],
        "over_seeds": {"seeds": 2, "one_style": -0.021, "one_style_interval95": [-0.089, 0.05],
                       "two_styles": -0.056, "two_styles_interval95": [-0.135, 0.024],
                       "gain": -0.035, "gain_interval95": [-0.081, 0.014]},
        "verdict": "the verdict"
    });
    let text = report(&o, &r);
    for line in [
        "| zero-shot CLIP trained on google, seed 0 | 24.2% | 23.4% | +1.0 pt (-8.7 … +10.4) |",
        "- seed 0: -5.6 pt (95% interval -14.1 … +3.1)",
        "- seed 1: +4.1 pt (95% interval -3.1 … +11.7)",
        "one style -2.1 pt (-8.9 … +5.0), two styles -5.6 pt (-13.5 … +2.4), gain -3.5 pt (-8.1 … +1.4).",
        "Mean over the 2 seeds",
        "the verdict",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
