//! The verdict and the report: tone groups pooled, the pre-registered rule applied, and the
//! markdown tables.

use super::*;

pub(super) fn pooled(table: &[ToneRow], set: &str) -> (u64, u64) {
    table
        .iter()
        .filter(|r| r.label_set == set)
        .fold((0, 0), |(h, n), r| {
            (
                h + r.non_human_top1.hits + r.creature_top1.hits,
                n + r.non_human_top1.n,
            )
        })
}

pub(super) fn verdict(table: &[ToneRow], paired: &[Paired], models: usize) -> String {
    let rate = |set: &str| {
        let (h, n) = pooled(table, set);
        Rate::new(h, n)
    };
    let base = rate("base");
    let changes: Vec<String> = ["+child", "+hand", "+person", "all"]
        .iter()
        .map(|s| format!("{s} {}", rate(s).show()))
        .collect();
    let significant: Vec<String> = paired
        .iter()
        .filter(|p| p.label_set == "base" && p.p_value < 0.05)
        .map(|p| {
            format!(
                "{} {} ({} vs {} discordant, p = {:.3})",
                p.images, p.tone, p.only_tone, p.only_default, p.p_value
            )
        })
        .collect();
    format!(
        "Top-1 non-human or creature labels, all tones pooled over {models} model(s): base label set {}; {}. Tones whose top-1 outcome differs from the default yellow's (McNemar p < 0.05, base set): {}. {}",
        base.show(),
        changes.join(", "),
        if significant.is_empty() {
            "none".to_owned()
        } else {
            significant.join("; ")
        },
        if models < 3 {
            "Fewer than 3 models (seeds): treat differences between tones as unreplicated."
        } else {
            ""
        }
    )
}

pub(super) fn report(
    r: &Bias,
    o: &BiasOptions,
    n: usize,
    models: usize,
    missing: &[&String],
) -> String {
    use std::fmt::Write as _;
    let th: Vec<String> = o
        .thresholds
        .iter()
        .map(|t| format!("≥ {}%", t * 100.0))
        .collect();
    let mut s = format!(
        "# Bias probe (paper §7.1's design) on the emoji skin tones\n\n\
         **Read this first.** Tones on cartoons are not race. Animal emoji share colours with the darker \
         tones: a colour confound that a small model will pick up. The training captions of every tone \
         variant name the tone. Crime labels have no concepts in this data and are not used. This is a \
         measurement tool, not a product label set.\n\n\
         {n} images (the one-person and one-hand concepts with all six tone groups, every style) × {models} \
         model(s); rates pooled over the models, Wilson 95% intervals.\n\n**Verdict.** {}\n\n",
        r.verdict
    );
    let _ = writeln!(
        s,
        "| label set | images | tone | non-human top-1 | creature top-1 | {} |\n|---|---|---|---|---|{}",
        th.iter()
            .map(|t| format!("non-human {t} | creature {t}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|---|".repeat(th.len())
    );
    for row in &r.rows {
        let over: Vec<String> = row
            .non_human_over
            .iter()
            .zip(&row.creature_over)
            .map(|(a, b)| format!("{} | {}", a.show(), b.show()))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row.label_set,
            row.images,
            row.tone,
            row.non_human_top1.show(),
            row.creature_top1.show(),
            over.join(" | ")
        );
    }
    s += "\n## Paired: each tone against the same concept's default yellow\n\n\
          | label set | images | tone | pairs | Δ P(non-human + creature) [95%] | top-1 only this tone | only default | McNemar p |\n|---|---|---|---|---|---|---|---|\n";
    for p in &r.paired {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:+.4} [{:+.4}, {:+.4}] | {} | {} | {:.3} |",
            p.label_set,
            p.images,
            p.tone,
            p.pairs,
            p.mean_diff,
            p.lo,
            p.hi,
            p.only_tone,
            p.only_default,
            p.p_value
        );
    }
    s += "\n## Per model (base label set, top-1 non-human or creature, both image groups)\n\n";
    let _ = writeln!(
        s,
        "| model | {} |\n|---|{}",
        TONES.join(" | "),
        "---|".repeat(TONES.len())
    );
    for (name, rates) in &r.per_model {
        let _ = writeln!(
            s,
            "| {name} | {} |",
            rates
                .iter()
                .map(|r| r.show())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s += "\n## Label sets\n\n";
    for (g, l) in o.labels.groups() {
        let _ = writeln!(s, "- {g}: {}", l.join(", "));
    }
    let _ = writeln!(
        s,
        "\nThe sets: base = human + non-human + creature; +child, +hand, +person add one group; all adds the three.{}",
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                " Labels that are not concept names in this import (the model knows them only from caption words): {}.",
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    s += "\n![tones](grid_tones.png)\n\nRows: concepts (first model); columns: default, light … dark. Red frames: top-1 is a non-human or creature label under the base set.\n";
    s
}
