//! `clip inside glass`: CLIP-guided search of a generator's latent space (CLIP-GLaSS, Galatolo et
//! al. 2021) and DALL-E-style reranking, on the procedural emoji generator of [`crate::genome`].
//!
//! The search is a real-coded genetic algorithm configured as CLIP-GLaSS configures pymoo's:
//! population 64, binary tournament selection, SBX crossover (probability 1.0, η = 3, each gene
//! exchanged with probability 0.5), polynomial mutation (probability 0.5 per gene, η = 3),
//! duplicate elimination, and elitist (μ + λ) survival; with `--realism` a second objective (the
//! candidate's similarity to the nearest real emoji image) turns it into NSGA-II (non-dominated
//! sorting, crowding distance). Fitness is the guide CLIP's cosine similarity between the rendered
//! candidate and the target caption (the prompt ensemble's class vector).
//!
//! Baselines at equal evaluations: random search, and best-of-N for N = 1, 2, 4 … (DALL-E's
//! reranking: N samples from the generator's prior, the guide picks one). Every selected image is
//! also scored by an independently trained judge CLIP — zero-shot among all the targets — to
//! expose candidates that only fool the guide; for the geometric and facial targets the genome
//! itself says whether the search succeeded.

use std::path::PathBuf;

use clip_data::chart::{Chart, Series, Style};
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_embed::Embedder;
use clip_eval::EvalError;
use serde::Serialize;

use crate::Rate;
use crate::ga::{crowding, fronts, mutate, random_genome, sbx, survive, tournament};
use crate::genome::{self, GENES, Genome};
use crate::grid::{PLAIN, Tile, frame};

#[derive(Debug, Clone)]
pub struct GlassOptions {
    pub out: PathBuf,
    pub targets: Vec<String>,
    pub templates: Vec<String>,
    /// generator evaluations per search (the population's first generation included)
    pub evaluations: usize,
    pub population: usize,
    pub seeds: Vec<u64>,
    /// images of real emoji for the realism objective (NSGA-II); `None`: single objective
    pub realism: Option<Vec<Rgb8>>,
    /// a genome placed in every first generation
    pub start: Option<Genome>,
}

/// The default-tone images of the first style of an emoji import (the realism objective's
/// reference set).
pub fn real_images(dir: &std::path::Path) -> Result<Vec<Rgb8>, EvalError> {
    let imp = crate::emoji::Import::read(dir)?;
    let style = imp.styles[0].clone();
    imp.rows
        .iter()
        .filter(|r| r.tone == "default" && r.style == style)
        .map(|r| r.load())
        .collect()
}

/// One selected candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    pub genome: Vec<f32>,
    pub guide: f32,
    /// the judge's top-1 among the targets is the target
    pub judge_hit: bool,
    /// what the genome says (None: it cannot say for this target)
    pub genome_hit: Option<bool>,
    /// for `large COLOUR SHAPE` targets: the body's colour and shape, each right or wrong
    pub colour_hit: Option<bool>,
    pub shape_hit: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetRun {
    pub target: String,
    pub seed: u64,
    pub search: Pick,
    pub random: Pick,
    /// best-of-N for N = 1, 2, 4 …, evaluations
    pub best_of: Vec<(usize, Pick)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodRates {
    pub method: String,
    pub evaluations: usize,
    pub judge: Rate,
    pub genome: Rate,
    pub colour: Rate,
    pub shape: Rate,
    pub mean_guide: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Glass {
    pub runs: Vec<TargetRun>,
    pub rates: Vec<MethodRates>,
    pub verdict: String,
}

/// Scores of candidates: the guide's fitness (and realism) per candidate.
struct Scorer<'a> {
    guide: &'a Embedder,
    target: Vec<f32>,
    real: Option<Vec<f32>>,
    size: usize,
}

impl Scorer<'_> {
    fn score(&self, genomes: &[Genome]) -> Result<Vec<Vec<f32>>, EvalError> {
        let images: Vec<Rgb8> = genomes
            .iter()
            .map(|g| genome::render(g, self.size))
            .collect();
        let e = self.target.len();
        let n = images.len();
        let f = crate::embed_images(self.guide, "candidates", images, vec![0; n])?.data;
        Ok(f.chunks(e)
            .map(|row| {
                let fit: f32 = row.iter().zip(&self.target).map(|(a, b)| a * b).sum();
                match &self.real {
                    None => vec![fit],
                    Some(real) => {
                        let best = real
                            .chunks(e)
                            .map(|r| r.iter().zip(row).map(|(a, b)| a * b).sum::<f32>())
                            .fold(f32::NEG_INFINITY, f32::max);
                        vec![fit, best]
                    }
                }
            })
            .collect())
    }
}

/// The genetic search; returns every evaluated genome with its objectives and the final population.
fn search(
    s: &Scorer,
    o: &GlassOptions,
    rng: &mut Rng,
) -> Result<(Vec<Genome>, Vec<Vec<f32>>), EvalError> {
    let mut pop: Vec<Genome> = (0..o.population).map(|_| random_genome(rng)).collect();
    if let Some(g) = o.start {
        pop[0] = g;
    }
    let mut obj = s.score(&pop)?;
    let mut used = pop.len();
    while used < o.evaluations {
        // ranks for the tournament
        let rank: Vec<(usize, f32)> = if obj[0].len() == 1 {
            obj.iter().map(|v| (0, v[0])).collect()
        } else {
            let mut r = vec![(0, 0f32); pop.len()];
            for (k, f) in fronts(&obj).iter().enumerate() {
                for (&i, d) in f.iter().zip(crowding(&obj, f)) {
                    r[i] = (k, d);
                }
            }
            r
        };
        let want = o.population.min(o.evaluations - used);
        let mut kids: Vec<Genome> = Vec::new();
        while kids.len() < want {
            let (p1, p2) = (tournament(&rank, rng), tournament(&rank, rng));
            let (mut c1, mut c2) = sbx(&pop[p1], &pop[p2], 3.0, rng);
            for c in [&mut c1, &mut c2] {
                mutate(c, 0.5, 3.0, rng);
                // duplicate elimination: mutate again while the child equals a member or a sibling
                let mut tries = 0;
                while tries < 10 && pop.iter().chain(kids.iter()).any(|m| m == c) {
                    mutate(c, 0.5, 3.0, rng);
                    tries += 1;
                }
            }
            kids.push(c1);
            if kids.len() < want {
                kids.push(c2);
            }
        }
        let kid_obj = s.score(&kids)?;
        used += kids.len();
        pop.extend(kids);
        obj.extend(kid_obj);
        let keep = survive(&obj, o.population);
        pop = keep.iter().map(|&i| pop[i]).collect();
        obj = keep.iter().map(|&i| obj[i].clone()).collect();
    }
    Ok((pop, obj))
}

/// Index of the highest fitness (the first objective).
fn best(obj: &[Vec<f32>]) -> usize {
    (0..obj.len())
        .max_by(|&a, &b| obj[a][0].total_cmp(&obj[b][0]))
        .unwrap_or(0)
}

/// Run every target × seed; writes `glass.json`, `report.md`, `grid_glass.png` and
/// `best_of_n.png` into `o.out`.
pub fn run(
    guide: &Embedder,
    judge: &Embedder,
    o: &GlassOptions,
    say: &mut dyn FnMut(String),
) -> Result<Glass, EvalError> {
    if o.targets.len() < 2 {
        return Err(EvalError::Invalid(
            "give at least two --targets (the judge chooses among them)".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = o.targets.iter().find(|t| !seen.insert(t.as_str())) {
        return Err(EvalError::Invalid(format!(
            "--targets: '{d}' is given twice"
        )));
    }
    if o.population < 4 || o.evaluations < o.population {
        return Err(EvalError::Invalid(format!(
            "--evaluations ({}) must be at least the population ({}, itself at least 4)",
            o.evaluations, o.population
        )));
    }
    let ctx = guide.clip.config.text_cfg.context_length;
    for t in &o.targets {
        if guide.tokenize(std::slice::from_ref(t), false).is_err() {
            return Err(EvalError::Invalid(format!(
                "target '{t}' is longer than the guide's context of {ctx} tokens"
            )));
        }
    }
    let self_judged = guide.fingerprint == judge.fingerprint;
    if self_judged {
        say("warning: the judge is the guide model itself; its agreement is self-confirming (give an independently trained --judge)".into());
    }
    crate::prepare_out(&o.out, "glass.json", "clip inside glass report")?;
    let guide_cls = guide.classifier(&o.targets, &o.templates)?;
    let judge_cls = judge.classifier(&o.targets, &o.templates)?;
    let size = guide.preprocess.size;
    let e = guide.dim();
    let real = match &o.realism {
        Some(imgs) => {
            let n = imgs.len();
            Some(crate::embed_images(guide, "real emoji", imgs.clone(), vec![0; n])?.data)
        }
        None => None,
    };
    let judge_hit = |g: &Genome, k: usize| -> bool {
        let img = genome::render(g, judge.preprocess.size);
        let f = judge.encode_pixels(judge.preprocess.apply(&img), 1, false);
        let s = judge_cls.scores(&f, 1);
        (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])) == Some(k)
    };
    let mut ns = vec![1usize];
    while ns.last().is_some_and(|&n| n * 2 < o.evaluations) {
        ns.push(ns.last().unwrap_or(&1) * 2);
    }
    if ns.last() != Some(&o.evaluations) {
        ns.push(o.evaluations);
    }
    let mut runs = Vec::new();
    for (k, target) in o.targets.iter().enumerate() {
        let scorer = Scorer {
            guide,
            target: guide_cls.weights[k * e..(k + 1) * e].to_vec(),
            real: real.clone(),
            size,
        };
        for &seed in &o.seeds {
            let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64));
            let (pop, obj) = search(&scorer, o, &mut rng)?;
            let b = best(&obj);
            let pick = |g: &Genome, fit: f32| {
                let parts = genome::colour_and_shape(g, target);
                Pick {
                    genome: g.to_vec(),
                    guide: fit,
                    judge_hit: judge_hit(g, k),
                    genome_hit: genome::satisfies(g, target),
                    colour_hit: parts.map(|c| c.0),
                    shape_hit: parts.map(|c| c.1),
                }
            };
            let search_pick = pick(&pop[b], obj[b][0]);
            // the generator's prior: as many random samples as the search evaluated
            let samples: Vec<Genome> = (0..o.evaluations)
                .map(|_| random_genome(&mut rng))
                .collect();
            let fit: Vec<f32> = scorer.score(&samples)?.iter().map(|v| v[0]).collect();
            let best_of: Vec<(usize, Pick)> = ns
                .iter()
                .map(|&n| {
                    let i = (0..n)
                        .max_by(|&a, &b| fit[a].total_cmp(&fit[b]))
                        .unwrap_or(0);
                    (n, pick(&samples[i], fit[i]))
                })
                .collect();
            let random = best_of
                .last()
                .map(|b| b.1.clone())
                .unwrap_or_else(|| search_pick.clone());
            say(format!(
                "'{target}' seed {seed}: search {:.3} (judge {}), random search {:.3} (judge {})",
                search_pick.guide,
                if search_pick.judge_hit {
                    "agrees"
                } else {
                    "disagrees"
                },
                random.guide,
                if random.judge_hit {
                    "agrees"
                } else {
                    "disagrees"
                }
            ));
            runs.push(TargetRun {
                target: target.clone(),
                seed,
                search: search_pick,
                random,
                best_of,
            });
        }
    }
    let rate = |method: &str, evals: usize, picks: Vec<&Pick>| MethodRates {
        method: method.into(),
        evaluations: evals,
        judge: Rate::of(&picks.iter().map(|p| p.judge_hit).collect::<Vec<_>>()),
        colour: Rate::of(
            &picks
                .iter()
                .filter_map(|p| p.colour_hit)
                .collect::<Vec<_>>(),
        ),
        shape: Rate::of(&picks.iter().filter_map(|p| p.shape_hit).collect::<Vec<_>>()),
        genome: Rate::of(
            &picks
                .iter()
                .filter_map(|p| p.genome_hit)
                .collect::<Vec<_>>(),
        ),
        mean_guide: picks.iter().map(|p| p.guide as f64).sum::<f64>() / picks.len().max(1) as f64,
    };
    let mut rates = vec![rate(
        if o.realism.is_some() {
            "genetic search (NSGA-II, + realism)"
        } else {
            "genetic search"
        },
        o.evaluations,
        runs.iter().map(|r| &r.search).collect(),
    )];
    for (i, &n) in ns.iter().enumerate() {
        rates.push(rate(
            &format!("best-of-{n}"),
            n,
            runs.iter().map(|r| &r.best_of[i].1).collect(),
        ));
    }
    let verdict = verdict(&rates, self_judged);
    let r = Glass {
        runs,
        rates,
        verdict,
    };
    draw(&r, o, size)?;
    clip_data::out::write_file(
        &o.out.join("report.md"),
        report(&r, o, self_judged).as_bytes(),
    )?;
    let doc = serde_json::json!({
        "guide": guide.fingerprint,
        "judge": judge.fingerprint,
        "self_judged": self_judged,
        "targets": o.targets,
        "templates": o.templates,
        "evaluations": o.evaluations,
        "population": o.population,
        "seeds": o.seeds,
        "realism": o.realism.is_some(),
        "rates": r.rates,
        "runs": r.runs,
        "verdict": r.verdict,
    });
    clip_eval::error::write_json(&o.out, "glass.json", &doc)?;
    Ok(r)
}

fn verdict(rates: &[MethodRates], self_judged: bool) -> String {
    let ga = &rates[0];
    let bo: Vec<&MethodRates> = rates[1..].iter().collect();
    let (first, last) = (bo[0], bo[bo.len() - 1]);
    let mut s = format!(
        "Judge hit-rate: best-of-1 {}, best-of-{} {}, genetic search {} at {} evaluations; genome check: {} / {} / {}. ",
        first.judge.show(),
        last.evaluations,
        last.judge.show(),
        ga.judge.show(),
        ga.evaluations,
        first.genome.show(),
        last.genome.show(),
        ga.genome.show()
    );
    s += if last.judge.lo > first.judge.hi {
        "Reranking helps: more samples, more images the judge recognises. "
    } else if last.judge.rate > first.judge.rate {
        "Reranking helps in direction (intervals overlap). "
    } else {
        "Reranking does not help the judge here. "
    };
    if ga.mean_guide > last.mean_guide && ga.judge.rate < last.judge.rate {
        s += "The search raises the guide's score above random search but the judge agrees less: it finds images that fool the guide. ";
    } else if ga.judge.rate >= last.judge.rate {
        s += "The search is at least as good as random search by the judge. ";
    }
    if ga.colour.n > 0 && ga.colour.rate > ga.shape.rate {
        s += &format!(
            "On the geometric targets the search gets the colour right more often than the shape ({} vs {}): the guide reads colour before form. ",
            ga.colour.show(),
            ga.shape.show()
        );
    }
    if self_judged {
        s += "WARNING: the judge is the guide itself, so its agreement is self-confirming.";
    }
    s
}

fn draw(r: &Glass, o: &GlassOptions, size: usize) -> Result<(), EvalError> {
    // grid: one row per target (first seed): the search's pick, then best-of-N for every N
    let mut tiles = Vec::new();
    let seed0 = o.seeds.first().copied().unwrap_or(0);
    let mut columns = 0;
    for run in r.runs.iter().filter(|x| x.seed == seed0) {
        let row: Vec<&Pick> = std::iter::once(&run.search)
            .chain(run.best_of.iter().map(|b| &b.1))
            .collect();
        columns = row.len();
        for p in row {
            let mut g = [0f32; GENES];
            g.copy_from_slice(&p.genome);
            tiles.push(Tile {
                image: genome::render(&g, size.max(32)),
                frame: match p.genome_hit {
                    Some(h) if h != p.judge_hit => PLAIN,
                    _ => frame(p.judge_hit),
                },
            });
        }
    }
    crate::grid::save(
        &tiles,
        columns,
        size.clamp(32, 96),
        &o.out.join("grid_glass.png"),
    )?;
    let ga = &r.rates[0];
    let bo = &r.rates[1..];
    let pts = |f: fn(&MethodRates) -> f64| -> Vec<(f64, f64)> {
        bo.iter().map(|m| (m.evaluations as f64, f(m))).collect()
    };
    let chart = Chart {
        title: "Reranking: the judge's hit-rate against N".into(),
        x_label: "candidates N (log2)".into(),
        y_label: "judge hit-rate".into(),
        x_range: (1.0, o.evaluations as f64),
        y_range: (0.0, 1.0),
        log2_x: true,
        series: vec![
            Series::new(
                "best-of-N (judge)",
                pts(|m| m.judge.rate),
                [30, 90, 200],
                Style::LinePoints,
            ),
            Series::new(
                "best-of-N (genome)",
                pts(|m| m.genome.rate),
                [200, 120, 30],
                Style::Dashed,
            ),
            Series::new(
                "genetic search (judge)",
                vec![(ga.evaluations as f64, ga.judge.rate)],
                [200, 30, 30],
                Style::Points,
            ),
        ],
    };
    chart.save(&o.out.join("best_of_n.png"))?;
    Ok(())
}

fn report(r: &Glass, o: &GlassOptions, self_judged: bool) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "# CLIP-guided search and reranking\n\n{} targets × {} seed(s); {} evaluations per search (population {}).{}\n\n**Verdict.** {}\n\n",
        o.targets.len(),
        o.seeds.len(),
        o.evaluations,
        o.population,
        if self_judged {
            " **The judge is the guide: its scores are self-confirming.**"
        } else {
            ""
        },
        r.verdict
    );
    s += "| method | evaluations | judge hit-rate | genome says drawn | geometric targets: colour right | shape right | mean guide score |\n|---|---|---|---|---|---|---|\n";
    for m in &r.rates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.4} |",
            m.method,
            m.evaluations,
            m.judge.show(),
            m.genome.show(),
            m.colour.show(),
            m.shape.show(),
            m.mean_guide
        );
    }
    s += "\n![best of N](best_of_n.png)\n\n![grid](grid_glass.png)\n\nRows: targets (first seed); columns: the search's pick, then best-of-N for N = 1, 2, 4 …; green: the judge agrees, red: it does not, grey: the judge and the genome disagree.\n\n";
    s += "| target | seed | search: guide / judge / genome | random search: guide / judge / genome |\n|---|---|---|---|\n";
    let show = |p: &Pick| {
        format!(
            "{:.3} / {} / {}",
            p.guide,
            if p.judge_hit { "yes" } else { "no" },
            match p.genome_hit {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            }
        )
    };
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            run.target,
            run.seed,
            show(&run.search),
            show(&run.random)
        );
    }
    s
}
