//! Counting: 1–6 copies of an emoji on a canvas (same size, or the total area held constant),
//! and the family emoji.

use super::*;

fn places(n: usize, side: usize, size: usize, rng: &mut Rng) -> Vec<(i64, i64)> {
    let room = size.saturating_sub(side) + 1;
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut tries = 0;
    while out.len() < n {
        let p = (rng.below(room) as i64, rng.below(room) as i64);
        let free = out.iter().all(|q| {
            (p.0 - q.0).unsigned_abs() as usize >= side
                || (p.1 - q.1).unsigned_abs() as usize >= side
        });
        tries += 1;
        if free || tries > 2000 {
            out.push(p);
        }
    }
    out
}

pub(super) fn counting(cx: &mut Ctx, rng: &mut Rng) -> Result<(), EvalError> {
    let mut pool = cx.ordinary(true);
    shuffle(&mut pool, rng);
    pool.truncate(cx.o.count_concepts);
    if pool.len() < 2 {
        cx.skipped
            .push("counting: fewer than 2 ordinary training concepts in the import".into());
    } else {
        let style = cx.imp.styles[0].clone();
        let size = cx.size;
        let mut emoji = Vec::new();
        for c in &pool {
            let r = cx
                .imp
                .images_of(c)
                .into_iter()
                .find(|r| r.style == style)
                .ok_or_else(|| EvalError::Invalid(format!("'{c}' has no {style} image")))?;
            emoji.push(r.load()?);
        }
        // the first half of the concepts trains the probes, the second half tests them
        let half = pool.len().div_ceil(2);
        for (variant, constant_ink) in [("same size", false), ("constant total area", true)] {
            let (mut images, mut labels, mut concept) = (Vec::new(), Vec::new(), Vec::new());
            for (ci, e) in emoji.iter().enumerate() {
                for n in 1..=6 {
                    let side = if constant_ink {
                        (size as f64 * 0.5 / (n as f64).sqrt()).round() as usize
                    } else {
                        (size as f64 * 0.28).round() as usize
                    };
                    for _ in 0..cx.o.count_images {
                        let mut canvas = render::white(size);
                        for (x, y) in places(n, side, size, rng) {
                            render::paste(&mut canvas, e, x, y, side);
                        }
                        images.push(canvas);
                        labels.push(n - 1);
                        concept.push(ci);
                    }
                }
            }
            let f = features(
                cx.emb,
                &format!("counting {variant}"),
                images.clone(),
                labels.clone(),
            )?;
            // each image among "one X" … "six X" for its own concept X
            let mut correct = vec![false; images.len()];
            for (ci, c) in pool.iter().enumerate() {
                let idx: Vec<usize> = (0..images.len()).filter(|&i| concept[i] == ci).collect();
                let classes: Vec<String> = COUNT_WORDS.iter().map(|w| format!("{w} {c}")).collect();
                let sub = f.subset(&idx);
                let pred = zero_shot(cx.emb, &sub, &classes, &cx.o.templates)?;
                for (&i, p) in idx.iter().zip(pred) {
                    correct[i] = p == labels[i];
                }
            }
            let (train, test): (Vec<usize>, Vec<usize>) =
                (0..images.len()).partition(|&i| concept[i] < half);
            let linear = probe_on(&f.subset(&train), &f.subset(&test), 6, cx.o.seed)?;
            let ink = Features {
                dim: 1,
                data: images
                    .iter()
                    .map(|i| render::ink(i) as f32 * 10.0)
                    .collect(),
                labels: labels.clone(),
            };
            let ink_probe = probe_on(&ink.subset(&train), &ink.subset(&test), 6, cx.o.seed)?;
            let mean_ink: Vec<String> = (0..6)
                .map(|k| {
                    let v: Vec<f64> = (0..images.len())
                        .filter(|&i| labels[i] == k)
                        .map(|i| render::ink(&images[i]))
                        .collect();
                    format!("{:.3}", v.iter().sum::<f64>() / v.len().max(1) as f64)
                })
                .collect();
            let mut baselines = BTreeMap::new();
            baselines.insert(
                "logistic regression on ink alone".into(),
                Rate::of(&ink_probe),
            );
            let p = Probe {
                name: format!("counting 1–6 copies ({variant})"),
                group: "counting".into(),
                classes: 6,
                chance: 1.0 / 6.0,
                zero_shot: Rate::of(&correct),
                linear_probe: Some(Rate::of(&linear)),
                baselines,
                note: format!(
                    "{} concepts ({style}), {} canvases each per count; probes trained on {} concepts, tested on the other {}; mean ink by count: {}",
                    pool.len(),
                    cx.o.count_images,
                    half,
                    pool.len() - half,
                    mean_ink.join(", ")
                ),
            };
            cx.grid(
                &format!(
                    "counting_{}",
                    if constant_ink {
                        "constant_ink"
                    } else {
                        "same_size"
                    }
                ),
                tiles(&images, &correct, 24),
            )?;
            cx.push(p);
        }
    }
    family(cx)?;
    let counts: Vec<&Probe> = cx.probes.iter().filter(|p| p.group == "counting").collect();
    if !counts.is_empty() {
        let near = counts
            .iter()
            .filter(|p| p.zero_shot.lo <= p.chance || p.zero_shot.rate < 1.5 * p.chance)
            .count();
        let ours = counts
            .iter()
            .map(|p| {
                format!(
                    "{}: zero-shot {} (chance {:.1}%)",
                    p.name,
                    p.zero_shot.show(),
                    p.chance * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        cx.verdicts.push(Verdict {
            group: "counting".into(),
            paper: "CLIP struggles with systematic tasks such as counting the objects in an image"
                .into(),
            ours,
            verdict: if near == counts.len() {
                "reproduces: every counting probe is at or near chance zero-shot".into()
            } else {
                format!(
                    "partly: {near} of {} counting probes are at or near chance zero-shot",
                    counts.len()
                )
            },
        });
    }
    Ok(())
}

/// The family emoji: zero-shot among the family names; right when the chosen name lists as many
/// members as the image shows.
fn family(cx: &mut Ctx) -> Result<(), EvalError> {
    let names: Vec<String> = cx
        .imp
        .concepts()
        .into_iter()
        .filter(|c| c.starts_with("family: "))
        .collect();
    let members = |c: &str| c.trim_start_matches("family: ").split(", ").count();
    let mut counts: Vec<usize> = names.iter().map(|c| members(c)).collect();
    counts.sort();
    counts.dedup();
    if names.len() < 2 || counts.len() < 2 {
        cx.skipped.push(format!(
            "family counting: the import has {} family concepts with {} different member counts; 2 or more of each are needed",
            names.len(),
            counts.len()
        ));
        return Ok(());
    }
    let Task {
        images,
        correct: exact,
        f,
        folds,
    } = cx.concept_task("family", &names)?;
    let pred = zero_shot(cx.emb, &f, &names, &cx.o.templates)?;
    let right: Vec<bool> = pred
        .iter()
        .zip(&f.labels)
        .map(|(&p, &t)| members(&names[p]) == members(&names[t]))
        .collect();
    let n = names.len() as f64;
    let chance = counts
        .iter()
        .map(|&k| (names.iter().filter(|c| members(c) == k).count() as f64 / n).powi(2))
        .sum();
    let mut baselines = BTreeMap::new();
    baselines.insert("zero-shot exact family".into(), Rate::of(&exact));
    // the probe learns the member count itself, holding out one style at a time
    let mut by_count = f.clone();
    by_count.labels = f
        .labels
        .iter()
        .map(|&t| {
            counts
                .iter()
                .position(|&k| k == members(&names[t]))
                .unwrap_or(0)
        })
        .collect();
    let linear = probe_folds(&by_count, &folds, counts.len(), cx.o.seed)?;
    cx.grid("family", tiles(&images, &right, 24))?;
    cx.push(Probe {
        name: "family members (the chosen family name lists as many people)".into(),
        group: "counting".into(),
        classes: counts.len(),
        chance,
        zero_shot: Rate::of(&right),
        linear_probe: linear,
        baselines,
        note: format!(
            "{} family concepts with {:?} members; chance = the chance that a random family name has the right count; the probe classifies the count, holding out a style at a time",
            names.len(),
            counts
        ),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_do_not_overlap_when_there_is_room() {
        let mut rng = Rng::new(3);
        for n in 1..=6 {
            let p = places(n, 18, 64, &mut rng);
            assert_eq!(p.len(), n);
            for (i, a) in p.iter().enumerate() {
                assert!(a.0 >= 0 && a.0 + 18 <= 64 && a.1 >= 0 && a.1 + 18 <= 64);
                for b in &p[..i] {
                    assert!(
                        (a.0 - b.0).abs() >= 18 || (a.1 - b.1).abs() >= 18,
                        "{a:?} {b:?}"
                    );
                }
            }
        }
    }
}
