//! Does reranking help, and does the generator generalise? (DALL-E's FID-against-N figure, at
//! emoji scale.) For `captions` training concepts and as many held-out concepts (the import's
//! split; the generator never saw the held-out ones), each caption "an emoji of NAME" gets
//! `samples` draws; for N = 1, 2, 4, … the reranker's best of the first N is the pick. An
//! independently trained judge CLIP (another seed; never the reranker) scores the picks: the
//! share whose concept is in its zero-shot top 5 (and top 1) among all the import's concepts, and
//! the Fréchet distance, in its feature space, between the picks and the real images of the same
//! concepts (every style, default tone). The judge's hit-rate on the real images is the ceiling.

use std::path::PathBuf;

use clip_data::chart::{self, Chart, Series, Style};
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_embed::Embedder;
use clip_inside::Rate;
use clip_inside::emoji::Import;
use clip_inside::grid::{self, Tile};
use serde::Serialize;

use crate::prior::{Generator, TEMPLATE};
use crate::sample::{SampleOptions, clip_scores, draw_images};
use crate::{EvalError, frechet, invalid};

#[cfg(test)]
mod tests {
    #[test]
    fn median_rank_is_one_based() {
        assert_eq!(super::median_rank(&[0, 4, 2]), 3.0);
        assert_eq!(super::median_rank(&[0, 1, 5, 9]), 4.0);
        assert!(super::median_rank(&[]).is_nan());
    }
}

#[derive(Debug, Clone)]
pub struct StudyOptions {
    pub emoji: PathBuf,
    pub out: PathBuf,
    /// captions per group
    pub captions: usize,
    /// `samples` is the largest N
    pub sampling: SampleOptions,
    /// the caller knows the reranker and the judge are the same model
    pub same_model: bool,
}

/// One group at one N.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub group: String,
    pub n: usize,
    pub judge_top5: Rate,
    pub judge_top1: Rate,
    /// the median rank (1 = first) of the caption's concept among all concepts under the judge
    /// (chance: about half the number of concepts)
    pub judge_median_rank: f64,
    pub frechet: f64,
    /// mean reranker cosine of the picks
    pub reranker_score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub points: Vec<Point>,
    /// the judge on the real images of each group's concepts: (group, top-5, top-1, median rank)
    pub real: Vec<(String, Rate, Rate, f64)>,
    pub concepts: usize,
    pub sampling: SampleOptions,
    pub generator_steps: usize,
    pub seconds: f64,
    pub machine: String,
    pub warnings: Vec<String>,
}

impl Study {
    /// The table the CLI prints and the report holds.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| concepts | N | judge top-5 | judge top-1 | judge median rank | Fréchet distance | reranker cosine |\n|---|---|---|---|---|---|---|\n",
        );
        for p in &self.points {
            s += &format!(
                "| {} | {} | {} | {} | {:.0} | {:.4} | {:.4} |\n",
                p.group,
                p.n,
                p.judge_top5.show(),
                p.judge_top1.show(),
                p.judge_median_rank,
                p.frechet,
                p.reranker_score
            );
        }
        for (g, t5, t1, m) in &self.real {
            s += &format!(
                "| {g}: real images | — | {} | {} | {m:.0} | 0 | — |\n",
                t5.show(),
                t1.show()
            );
        }
        s
    }
}

const GROUPS: [&str; 2] = ["training", "held-out"];

/// Run the study; writes `study.json`, `report.md`, `study.png` and one grid per group.
pub fn run(
    g: &Generator,
    reranker: &Embedder,
    judge: &Embedder,
    o: &StudyOptions,
    say: &mut dyn FnMut(String),
) -> Result<Study, EvalError> {
    let t0 = std::time::Instant::now();
    o.sampling.check()?;
    if o.captions == 0 {
        return Err(invalid("--captions must be at least 1"));
    }
    let mut warnings = Vec::new();
    if o.same_model {
        let w = "the judge is the reranker itself: its scores reward what it was asked to pick, not the \
                 images; use an independently trained judge"
            .to_string();
        say(format!("warning: {w}"));
        warnings.push(w);
    }
    clip_inside::prepare_out(&o.out, "study.json", "a generate-study report")?;
    let import = Import::read(&o.emoji)?;
    let concepts = import.concepts();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (gi, trained) in [true, false].into_iter().enumerate() {
        let mut names: Vec<String> = concepts
            .iter()
            .filter(|c| {
                import
                    .rows
                    .iter()
                    .any(|r| &r.concept == *c && r.trained == trained)
            })
            .cloned()
            .collect();
        clip_data::rng::shuffle(
            &mut names,
            &mut Rng::new(o.sampling.seed ^ (0x57D7 + gi as u64)),
        );
        names.truncate(o.captions);
        if names.is_empty() {
            let w = format!(
                "the import has no {} concepts; that group is skipped",
                GROUPS[gi]
            );
            say(format!("warning: {w}"));
            warnings.push(w);
        }
        groups.push(names);
    }
    // the same number of captions in both groups: the Fréchet distance's small-sample bias depends
    // on the count, so unequal groups would not compare
    if groups.iter().all(|g| !g.is_empty()) {
        let n = groups.iter().map(Vec::len).min().unwrap_or(0);
        groups.iter_mut().for_each(|g| g.truncate(n));
    }
    let templates = vec![TEMPLATE.to_string()];
    let classifier = judge.classifier(&concepts, &templates)?;
    let index_of = |c: &str| {
        concepts
            .binary_search_by(|x| x.as_str().cmp(c))
            .expect("from this list")
    };
    let mut ns = vec![];
    let mut n = 1;
    while n <= o.sampling.samples {
        ns.push(n);
        n *= 2;
    }
    if ns.last() != Some(&o.sampling.samples) {
        ns.push(o.sampling.samples);
    }
    let mut points = Vec::new();
    let mut real = Vec::new();
    for (gi, names) in groups.iter().enumerate() {
        if names.is_empty() {
            continue;
        }
        let group = GROUPS[gi];
        // draw and rerank
        let mut draws: Vec<(Vec<Rgb8>, Vec<f32>)> = Vec::new();
        for (ci, name) in names.iter().enumerate() {
            let caption = TEMPLATE.replace("{}", name);
            let mut so = o.sampling;
            so.seed = o.sampling.seed
                ^ (1 + gi as u64 * 1_000_003 + ci as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            let images = draw_images(g, &caption, true, &so)?;
            let scores = clip_scores(reranker, &caption, images.clone())?;
            draws.push((images, scores));
            if (ci + 1) % 10 == 0 || ci + 1 == names.len() {
                say(format!(
                    "{group} concepts: {}/{} captions drawn ({:.0} s)",
                    ci + 1,
                    names.len(),
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        // the real images of these concepts under the judge
        let real_rows: Vec<&clip_inside::emoji::Row> =
            names.iter().flat_map(|c| import.images_of(c)).collect();
        let real_images = clip_inside::emoji::load_all(&real_rows)?;
        let real_labels: Vec<usize> = real_rows.iter().map(|r| index_of(&r.concept)).collect();
        let real_f = clip_inside::embed_images(judge, "real", real_images, real_labels.clone())?;
        let ranks = clip_embed::zeroshot::ranks(
            &classifier.scores(&real_f.data, real_f.len()),
            concepts.len(),
            &real_labels,
        );
        real.push((
            group.to_string(),
            Rate::of(&ranks.iter().map(|&r| r < 5).collect::<Vec<_>>()),
            Rate::of(&ranks.iter().map(|&r| r == 0).collect::<Vec<_>>()),
            median_rank(&ranks),
        ));
        let labels: Vec<usize> = names.iter().map(|c| index_of(c)).collect();
        let mut tiles = Vec::new();
        for &n in &ns {
            let picks: Vec<usize> = draws
                .iter()
                .map(|(_, s)| {
                    (0..n.min(s.len()))
                        .max_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)))
                        .unwrap_or(0)
                })
                .collect();
            let images: Vec<Rgb8> = draws
                .iter()
                .zip(&picks)
                .map(|(d, &p)| d.0[p].clone())
                .collect();
            let f = clip_inside::embed_images(judge, "picks", images.clone(), labels.clone())?;
            let ranks = clip_embed::zeroshot::ranks(
                &classifier.scores(&f.data, f.len()),
                concepts.len(),
                &labels,
            );
            let fd = frechet::between(&f.data, &real_f.data, f.dim);
            let score = draws
                .iter()
                .zip(&picks)
                .map(|(d, &p)| d.1[p] as f64)
                .sum::<f64>()
                / picks.len() as f64;
            let p = Point {
                group: group.to_string(),
                n,
                judge_top5: Rate::of(&ranks.iter().map(|&r| r < 5).collect::<Vec<_>>()),
                judge_top1: Rate::of(&ranks.iter().map(|&r| r == 0).collect::<Vec<_>>()),
                judge_median_rank: median_rank(&ranks),
                frechet: fd,
                reranker_score: score,
            };
            say(format!(
                "{group} concepts, N = {n}: judge top-5 {}, Fréchet distance {fd:.4}",
                p.judge_top5.show()
            ));
            points.push(p);
            // grid: per caption (first 8), a real image, then its pick at N = 1, 4, 16, … framed by
            // the judge's top-5 verdict
            if n == 1 || n == *ns.last().expect("not empty") {
                for (ci, img) in images.iter().enumerate().take(8) {
                    tiles.push((
                        ci,
                        n,
                        Tile {
                            image: img.clone(),
                            frame: grid::frame(ranks[ci] < 5),
                        },
                    ));
                }
            }
        }
        let mut ordered = Vec::new();
        for (ci, name) in names.iter().enumerate().take(8) {
            if let Some(r) = import.images_of(name).first() {
                ordered.push(Tile {
                    image: r.load()?,
                    frame: grid::PLAIN,
                });
            }
            for (_, _, t) in tiles.iter().filter(|t| t.0 == ci) {
                ordered.push(Tile {
                    image: t.image.clone(),
                    frame: t.frame,
                });
            }
        }
        grid::save(&ordered, 3, 96, &o.out.join(format!("grid_{group}.png")))?;
    }
    let study = Study {
        points,
        real,
        concepts: concepts.len(),
        sampling: o.sampling,
        generator_steps: g.steps,
        seconds: t0.elapsed().as_secs_f64(),
        machine: clip_eval::repro::fig2::machine(),
        warnings,
    };
    plot(&study, &o.out.join("study.png"))?;
    std::fs::write(o.out.join("report.md"), report(&study, &groups))
        .map_err(|e| invalid(format!("cannot write the report: {e}")))?;
    crate::runs::write_json(&o.out.join("study.json"), &study)?;
    Ok(study)
}

/// The median of 0-based `ranks`, as a 1-based rank.
fn median_rank(ranks: &[usize]) -> f64 {
    let mut r: Vec<f64> = ranks.iter().map(|&x| x as f64 + 1.0).collect();
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => 0.5 * (r[n / 2 - 1] + r[n / 2]),
    }
}

fn plot(s: &Study, path: &std::path::Path) -> Result<(), EvalError> {
    let max_n = s.points.iter().map(|p| p.n).max().unwrap_or(1).max(2) as f64;
    let colors = [chart::BLUE, chart::ORANGE];
    let series = |f: &dyn Fn(&Point) -> f64| -> Vec<Series> {
        GROUPS
            .iter()
            .zip(colors)
            .map(|(g, c)| {
                let pts = s
                    .points
                    .iter()
                    .filter(|p| p.group == *g)
                    .map(|p| (p.n as f64, f(p)))
                    .collect();
                Series::new(&format!("{g} concepts"), pts, c, Style::LinePoints)
            })
            .collect()
    };
    let top_fd = s.points.iter().map(|p| p.frechet).fold(1e-9, f64::max);
    let charts = [
        Chart {
            title: "judge top-5 hit-rate of the reranked pick".into(),
            x_label: "samples reranked (N)".into(),
            y_label: "judge top-5 (%)".into(),
            x_range: (1.0, max_n),
            y_range: (0.0, 100.0),
            log2_x: true,
            series: series(&|p| p.judge_top5.rate * 100.0),
        },
        Chart {
            title: "Fréchet distance to the real images (judge features)".into(),
            x_label: "samples reranked (N)".into(),
            y_label: "Fréchet distance".into(),
            x_range: (1.0, max_n),
            y_range: (0.0, top_fd * 1.1),
            log2_x: true,
            series: series(&|p| p.frechet),
        },
    ];
    chart::save_panels(&charts, path).map_err(|e| invalid(e.to_string()))
}

fn report(s: &Study, groups: &[Vec<String>]) -> String {
    let mut r = String::from("# Does CLIP reranking help, and does the generator generalise?\n\n");
    r += &format!(
        "{} captions of training concepts and {} of held-out concepts (\"{TEMPLATE}\"), {} samples each \
         (temperature {}, top-k {}, guidance {}); the pick at N is the reranker's best of the first N. \
         The judge ranks all {} concepts zero-shot. Generator at step {}; {:.0} s on {}.\n\n",
        groups.first().map_or(0, Vec::len),
        groups.get(1).map_or(0, Vec::len),
        s.sampling.samples,
        s.sampling.temperature,
        s.sampling.top_k,
        s.sampling.guidance,
        s.concepts,
        s.generator_steps,
        s.seconds,
        s.machine
    );
    for w in &s.warnings {
        r += &format!("**Warning:** {w}\n\n");
    }
    r += &s.table();
    r += "\n";
    for g in GROUPS {
        let pts: Vec<&Point> = s.points.iter().filter(|p| p.group == g).collect();
        if let (Some(a), Some(b)) = (pts.first(), pts.last()) {
            let overlap = a.judge_top5.hi >= b.judge_top5.lo && b.judge_top5.hi >= a.judge_top5.lo;
            r += &format!(
                "- {g} concepts: reranking {} samples instead of 1 moves the judge's top-5 from {:.1}% to {:.1}% \
                 ({}), its median rank of the concept from {:.0} to {:.0} of {}, and the Fréchet distance \
                 from {:.4} to {:.4}.\n",
                b.n,
                a.judge_top5.rate * 100.0,
                b.judge_top5.rate * 100.0,
                if overlap {
                    "the 95% intervals overlap"
                } else {
                    "the 95% intervals do not overlap"
                },
                a.judge_median_rank,
                b.judge_median_rank,
                s.concepts,
                a.frechet,
                b.frechet
            );
        }
    }
    r += &format!(
        "\nThe Fréchet distances are estimated from {} picks per group in the judge's feature space: \
         small-sample figures, comparable along N and between the two groups (same count), not with FIDs \
         measured elsewhere.\n",
        groups.first().map_or(0, Vec::len)
    );
    r += "\nThe reranker and the judge are different seeds trained on the same kind of data: a pick the \
          reranker prefers may carry features both have learnt to read, so the judge's verdicts bound how \
          recognisable the picks are to CLIPs of this kind, not to people. The judge's own ceiling is its \
          score on the real images (the last rows).\n";
    r += "\nGrids: per caption a real image (grey), the pick at N = 1 and at the largest N (green: the \
          judge's top 5 holds the concept; red: it does not).\n";
    r
}
