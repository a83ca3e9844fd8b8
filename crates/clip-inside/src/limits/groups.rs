//! Concept groups against random groups of the same size: fine-grained (the country flags),
//! abstract (clock faces, moon phases, arrows, facing left vs right), and rendered names.

use super::*;

pub(super) fn fine_grained(cx: &mut Ctx, rng: &mut Rng) -> Result<(), EvalError> {
    let mut flags: Vec<String> = cx
        .imp
        .rows
        .iter()
        .filter(|r| r.subcategory == "country-flag")
        .map(|r| r.concept.clone())
        .collect();
    flags.sort();
    flags.dedup();
    let Some((p, task)) = cx.group("country flags", "fine-grained", &flags, rng)? else {
        return Ok(());
    };
    let control = p
        .baselines
        .iter()
        .find(|(k, _)| k.starts_with("zero-shot on"))
        .map(|(_, r)| *r);
    let verdict = match control {
        Some(c) if p.zero_shot.hi < c.lo => {
            "reproduces: the fine-grained task is clearly below a coarse task of the same size"
        }
        Some(c) if p.zero_shot.rate < c.rate => "reproduces in direction (intervals overlap)",
        Some(_) => "does not reproduce",
        None => "no control: too few other concepts",
    };
    cx.verdicts.push(Verdict {
        group: "fine-grained".into(),
        paper: "zero-shot CLIP is weak on fine-grained classification (car models, aircraft variants, flower species)".into(),
        ours: format!(
            "{} flags: zero-shot {}; {} random other concepts: {}",
            flags.len(),
            p.zero_shot.show(),
            flags.len(),
            control.map(|c| c.show()).unwrap_or_else(|| "–".into())
        ),
        verdict: verdict.into(),
    });
    cx.grid("flags", tiles(&task.images, &task.correct, 24))?;
    cx.push(p);
    Ok(())
}

pub(super) fn abstract_tasks(cx: &mut Ctx, rng: &mut Rng) -> Result<(), EvalError> {
    let concepts = cx.imp.concepts();
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        concepts.iter().filter(|c| f(c)).cloned().collect()
    };
    let arrows: Vec<String> = {
        let mut v: Vec<String> = cx
            .imp
            .rows
            .iter()
            .filter(|r| r.subcategory == "arrow")
            .map(|r| r.concept.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let groups = [
        ("clock faces", pick(&|c| c.starts_with("clock face "))),
        ("moon phases", pick(&|c| c.ends_with(" moon symbol"))),
        ("arrows", arrows),
    ];
    let mut ours = Vec::new();
    let mut below = 0;
    let mut total = 0;
    for (name, members) in groups {
        if let Some((p, task)) = cx.group(name, "abstract", &members, rng)? {
            let control = p
                .baselines
                .iter()
                .find(|(k, _)| k.starts_with("zero-shot on"))
                .map(|(_, r)| *r);
            if let Some(c) = control {
                total += 1;
                if p.zero_shot.rate < c.rate {
                    below += 1;
                }
                ours.push(format!(
                    "{name}: {} vs random {}",
                    p.zero_shot.show(),
                    c.show()
                ));
            }
            cx.grid(
                &name.replace(' ', "_"),
                tiles(&task.images, &task.correct, 24),
            )?;
            cx.push(p);
        }
    }
    // facing left (the base emoji) against facing right, pair by pair
    let pairs: Vec<(String, String)> = concepts
        .iter()
        .filter_map(|c| {
            let base = c.strip_suffix(" facing right")?;
            concepts
                .iter()
                .any(|b| b == base)
                .then(|| (base.to_owned(), c.clone()))
        })
        .collect();
    if pairs.is_empty() {
        cx.skipped.push(
            "facing left vs right: no concept has a 'facing right' twin in the import".into(),
        );
    } else {
        let (mut images, mut labels, mut folds, mut pair_of) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, (l, r)) in pairs.iter().enumerate() {
            for (side, c) in [l, r].into_iter().enumerate() {
                for row in cx.imp.images_of(c) {
                    images.push(row.load()?);
                    labels.push(side);
                    folds.push(cx.style_of(row));
                    pair_of.push(k);
                }
            }
        }
        let f = features(cx.emb, "facing", images.clone(), labels.clone())?;
        let mut correct = vec![false; images.len()];
        for (k, (l, r)) in pairs.iter().enumerate() {
            let idx: Vec<usize> = (0..images.len()).filter(|&i| pair_of[i] == k).collect();
            let pred = zero_shot(
                cx.emb,
                &f.subset(&idx),
                &[l.clone(), r.clone()],
                &cx.o.templates,
            )?;
            for (&i, p) in idx.iter().zip(pred) {
                correct[i] = p == labels[i];
            }
        }
        let linear = probe_folds(&f, &folds, 2, cx.o.seed)?;
        let p = Probe {
            name: "facing left vs facing right".into(),
            group: "abstract".into(),
            classes: 2,
            chance: 0.5,
            zero_shot: Rate::of(&correct),
            linear_probe: linear,
            baselines: BTreeMap::new(),
            note: format!(
                "{} pairs (X, X facing right), each image between its pair's two names; the probe learns one direction classifier, holding out a style at a time",
                pairs.len()
            ),
        };
        ours.push(format!("facing: {} (chance 50%)", p.zero_shot.show()));
        cx.grid("facing", tiles(&images, &correct, 24))?;
        cx.push(p);
    }
    if !ours.is_empty() {
        cx.verdicts.push(Verdict {
            group: "abstract".into(),
            paper: "CLIP is poor at abstract and systematic tasks (counting, distances, orientation) despite the concepts being nameable".into(),
            ours: ours.join("; "),
            verdict: format!(
                "{below} of {total} abstract groups are below a random group of the same size zero-shot{}",
                if total > 0 && below == total { ": reproduces" } else { "" }
            ),
        });
    }
    Ok(())
}

pub(super) fn rendered_text(cx: &mut Ctx, rng: &mut Rng) -> Result<(), EvalError> {
    let mut pool: Vec<String> = cx
        .ordinary(true)
        .into_iter()
        .filter(|c| c.chars().count() <= 24)
        .collect();
    shuffle(&mut pool, rng);
    pool.truncate(cx.o.text_concepts);
    if pool.len() < 2 {
        cx.skipped
            .push("rendered text: fewer than 2 ordinary training concepts".into());
        return Ok(());
    }
    let size = cx.size;
    let d = (size / 20) as i64;
    let variants: [([u8; 3], i64, i64); 3] = [
        ([0, 0, 0], 0, 0),
        ([30, 60, 200], d, -d),
        ([200, 30, 30], -d, d),
    ];
    let (mut images, mut labels, mut folds) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in pool.iter().enumerate() {
        for (v, (colour, dx, dy)) in variants.iter().enumerate() {
            images.push(render::words(size, c, *colour, *dx, *dy));
            labels.push(k);
            folds.push(v);
        }
    }
    let f = features(cx.emb, "rendered names", images.clone(), labels.clone())?;
    let zs = hits(&zero_shot(cx.emb, &f, &pool, &cx.o.templates)?, &labels);
    let linear = probe_folds(&f, &folds, pool.len(), cx.o.seed)?;
    let style = cx.imp.styles[0].clone();
    let (mut eimg, mut elab) = (Vec::new(), Vec::new());
    for (k, c) in pool.iter().enumerate() {
        if let Some(r) = cx.imp.images_of(c).into_iter().find(|r| r.style == style) {
            eimg.push(r.load()?);
            elab.push(k);
        }
    }
    let ef = features(cx.emb, "rendered names: emoji", eimg, elab.clone())?;
    let emoji = hits(&zero_shot(cx.emb, &ef, &pool, &cx.o.templates)?, &elab);
    let mut baselines = BTreeMap::new();
    baselines.insert(
        format!("zero-shot on the same concepts' {style} emoji"),
        Rate::of(&emoji),
    );
    let p = Probe {
        name: "rendered names (reading)".into(),
        group: "text".into(),
        classes: pool.len(),
        chance: 1.0 / pool.len() as f64,
        zero_shot: Rate::of(&zs),
        linear_probe: linear,
        baselines,
        note: format!(
            "{} training concepts' names in an 8×8 bitmap font, 3 colours and placements; the probe holds out one variant at a time",
            pool.len()
        ),
    };
    let near_chance = p.zero_shot.lo <= p.chance || p.zero_shot.rate < 2.0 * p.chance;
    cx.verdicts.push(Verdict {
        group: "text".into(),
        paper: "CLIP learns to read rendered text (OCR, rendered SST2) from captions that name the words in images".into(),
        ours: format!(
            "zero-shot {} on rendered names (chance {:.1}%), {} on the same concepts' emoji",
            p.zero_shot.show(),
            p.chance * 100.0,
            Rate::of(&emoji).show()
        ),
        verdict: if near_chance {
            "does not reproduce at this scale: emoji hold almost no text, so the model never learns to read (the typographic part's reading variant of training adds text)".into()
        } else {
            "reproduces: the model reads rendered names above chance".into()
        },
    });
    cx.grid("text", tiles(&images, &zs, 24))?;
    cx.push(p);
    Ok(())
}
