//! `clip index`, `clip search`, `clip dedup`, `clip rerank`: argument parsing and printing around
//! `clip_index`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use clip_index::{Dtype, IndexOptions, Query, Searcher};

/// The model `clip index` uses when none is named (rclip's choice).
pub const DEFAULT_MODEL: &str = "ViT-B-32:openai";

#[derive(Args)]
pub struct IndexArgs {
    /// A folder (recursively), a .jsonl/.csv manifest (captions are indexed too), or WebDataset
    /// shards (a.tar, a-{000..009}.tar)
    pub source: String,
    /// Checkpoint path or NAME:TAG
    #[arg(long, env = "CLIP_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub arch: crate::ArchOptions,
    #[command(flatten)]
    pub precision: crate::PrecisionOption,
    /// The index: a file (default: $CLIP_INDEX, else $XDG_DATA_HOME/clip-rs/index.db) or a
    /// postgres:// URL (PostgreSQL with pgvector)
    #[arg(long)]
    pub db: Option<String>,
    /// Store vectors as f32 instead of f16 (a new index only)
    #[arg(long)]
    pub f32: bool,
    /// Rebuild an index made by another model (its rows are replaced)
    #[arg(long)]
    pub reembed: bool,
    /// Images per forward pass and per committed transaction
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    /// Index only partition I of N of the input (0 ≤ I < N): N workers fill one index
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Build an approximate (HNSW) index next to the file, print its recall@10 against exact
    /// search, and keep it up to date in later runs (PostgreSQL: measure its HNSW index's recall)
    #[arg(long)]
    pub ann: bool,
    /// Search the approximate index with this effort (HNSW ef; PostgreSQL: hnsw.ef_search, at
    /// most 1,000) instead of the calibrated one (the smallest of 64…2048 reaching recall@10
    /// ≥ 0.95); kept for later rebuilds, 0 calibrates again
    #[arg(long, requires = "ann", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub ef: Option<u64>,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// `--db`, else the default index file.
fn db_path(db: &Option<String>) -> Result<String> {
    db.clone()
        .or_else(|| clip_index::default_db().map(|p| p.display().to_string()))
        .ok_or_else(|| {
            anyhow!("no index file: pass --db PATH (or set CLIP_INDEX, XDG_DATA_HOME or HOME)")
        })
}

fn parse_part(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--shard '{s}': give I/N, e.g. 0/4"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .map_err(|_| anyhow!("--shard '{s}': I is not a number"))?,
        n.trim()
            .parse()
            .map_err(|_| anyhow!("--shard '{s}': N is not a number"))?,
    );
    if n == 0 || i >= n {
        bail!("--shard '{s}': give I/N with 0 ≤ I < N");
    }
    Ok((i, n))
}

pub fn index(args: &IndexArgs) -> Result<()> {
    let db = db_path(&args.db)?;
    let part = args.shard.as_deref().map(parse_part).transpose()?;
    if let Some(dir) = Some(std::path::Path::new(&db))
        .filter(|_| !clip_index::is_postgres(&db))
        .and_then(|p| p.parent())
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let emb = clip_embed::Embedder::load_with(
        &args.model,
        &args.precision.model_options(&args.arch),
        args.batch_size as usize,
    )?;
    let opts = IndexOptions {
        dtype: if args.f32 { Dtype::F32 } else { Dtype::F16 },
        reembed: args.reembed,
        batch: args.batch_size as usize,
        quiet: false,
        part,
        ann: args.ann,
        ef: args.ef.map(|e| e as usize),
    };
    let r = clip_index::index(&args.source, &db, &emb, &args.model, &opts)?;
    clip_embed::report_warnings(&r.warnings);
    for (path, why) in &r.skipped {
        eprintln!("skipped {path}: {why}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {} files — {} embedded, {} unchanged, {} moved, {} touched, {} removed, {} skipped, {} captions ({:.1} s)",
            clip_index::pg::redact(&db),
            r.files,
            r.embedded,
            r.unchanged,
            r.moved,
            r.touched,
            r.removed,
            r.skipped.len(),
            r.captions,
            r.seconds
        );
        if let Some(a) = &r.ann {
            println!(
                "approximate index {}: {} images, built in {:.1} s, {:.1} MB; recall@10 {:.4} over {} queries at ef {}; {:.3} ms a query vs {:.3} ms exact ({:.1}×)",
                a.location,
                a.images,
                a.build_seconds,
                a.bytes as f64 / 1e6,
                a.recall_at_10,
                a.queries,
                a.ef,
                a.ann_ms,
                a.exact_ms,
                a.exact_ms / a.ann_ms.max(1e-9)
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct SearchArgs {
    /// The query: texts and image files joined by + and - (rclip's algebra), each optionally
    /// weighted as W:term ("2:golden retriever" + ./pool.jpg - fruit)
    pub query: Vec<String>,
    /// An image to search by (repeatable; added to the query)
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// The index: a file (default: $CLIP_INDEX, else $XDG_DATA_HOME/clip-rs/index.db) or a
    /// postgres:// URL (PostgreSQL with pgvector)
    #[arg(long)]
    pub db: Option<String>,
    /// The model (default: the one the index records; it must be the one that made the index)
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub arch: crate::ArchOptions,
    #[command(flatten)]
    pub precision: crate::PrecisionOption,
    /// How many results
    #[arg(short = 'k', long = "top", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub k: u64,
    /// One JSON object per result
    #[arg(long)]
    pub json: bool,
    /// Search every vector even when an approximate index exists
    #[arg(long)]
    pub exact: bool,
}

pub fn search(args: &SearchArgs) -> Result<()> {
    let query = Query::parse(&args.query, &args.images)?;
    let db = db_path(&args.db)?;
    let mut s = Searcher::open(
        &db,
        args.model.as_deref(),
        &args.precision.model_options(&args.arch),
        32,
        args.exact,
    )?;
    if let Some(note) = &s.note {
        eprintln!("note: {note}");
    }
    let hits = s.search(&query, args.k as usize)?;
    let mut out = String::new();
    for h in &hits {
        if args.json {
            out.push_str(&serde_json::to_string(h)?);
        } else {
            out.push_str(&format!("{:.4}\t{}", h.score, h.path));
        }
        out.push('\n');
    }
    print!("{out}");
    if hits.is_empty() {
        eprintln!("the index {} holds no images", clip_index::pg::redact(&db));
    }
    Ok(())
}

#[derive(Args)]
pub struct DedupArgs {
    /// The index: a file (default: $CLIP_INDEX, else $XDG_DATA_HOME/clip-rs/index.db) or a
    /// postgres:// URL (PostgreSQL with pgvector)
    #[arg(long)]
    pub db: Option<String>,
    /// Cosine at or above which two images are near-duplicates (clip-retrieval's 0.94)
    #[arg(long, default_value_t = clip_index::dedup::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// One JSON object per group
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV rows: group, path, cosine to the group's first image
    #[arg(long)]
    pub csv: bool,
    /// Link each image to its nearest neighbours from the approximate index (the default above
    /// 20,000 images when one exists) instead of comparing every pair
    #[arg(long, conflicts_with = "exact")]
    pub ann: bool,
    /// Compare every pair even when an approximate index exists
    #[arg(long)]
    pub exact: bool,
}

pub fn dedup(args: &DedupArgs) -> Result<()> {
    if !(args.threshold.is_finite() && (-1.0..=1.0).contains(&args.threshold)) {
        bail!(
            "--threshold {} is not a cosine: give a value in [-1, 1]",
            args.threshold
        );
    }
    let db = db_path(&args.db)?;
    let mut store = clip_index::open(&db)?;
    let m = clip_index::Matrix::load(store.as_mut())?;
    let through_ann = !args.exact && (args.ann || m.len() > clip_index::dedup::ANN_ABOVE);
    let groups = if through_ann && store.has_ann() {
        clip_index::dedup::groups_by_neighbours(&m, args.threshold, |q| {
            store.neighbours(q, clip_index::dedup::NEIGHBOURS)
        })?
    } else {
        if args.ann {
            bail!(
                "--ann: the index {} has no up-to-date approximate index; build one with `clip index SOURCE --db {0} --ann`",
                clip_index::pg::redact(&db)
            );
        }
        clip_index::dedup::groups(&m, args.threshold)
    };
    let rows = clip_index::dedup::rows(&m, &groups);
    if args.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        w.write_record(["group", "path", "cosine_to_first"])?;
        for r in &rows {
            w.serialize((r.group, &r.path, r.cosine_to_first))?;
        }
        w.flush()?;
    } else if args.json {
        for (g, group) in groups.iter().enumerate() {
            let paths: Vec<&str> = rows
                .iter()
                .filter(|r| r.group == g)
                .map(|r| r.path.as_str())
                .collect();
            println!(
                "{}",
                serde_json::json!({"group": g, "size": group.members.len(), "min_link": group.min_link, "paths": paths})
            );
        }
    } else {
        for (g, group) in groups.iter().enumerate() {
            println!(
                "group {g}: {} images (lowest link {:.4})",
                group.members.len(),
                group.min_link
            );
            for r in rows.iter().filter(|r| r.group == g) {
                println!("  {:.4}\t{}", r.cosine_to_first, r.path);
            }
        }
    }
    eprintln!(
        "{} groups of near-duplicates (cosine ≥ {}) among {} images",
        groups.len(),
        args.threshold,
        m.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct RerankArgs {
    /// Checkpoint path or NAME:TAG
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub image_opts: crate::ImageOptions,
    /// The caption the candidates are scored against
    #[arg(long)]
    pub caption: String,
    /// The candidate images
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print only the K best
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: Option<u64>,
    /// One JSON object per candidate
    #[arg(long)]
    pub json: bool,
}

pub fn rerank(args: &RerankArgs) -> Result<()> {
    let emb = args.image_opts.embedder(&args.model, 32)?;
    let (ranked, failed) = clip_index::rerank::rerank(&emb, &args.caption, &args.images)?;
    let top = args.top.map_or(ranked.len(), |k| k as usize);
    let mut out = String::new();
    for r in ranked.iter().take(top) {
        if args.json {
            out.push_str(&serde_json::to_string(r)?);
        } else {
            out.push_str(&format!(
                "{:.4}\t{:.4}\t{}",
                r.cosine, r.probability, r.path
            ));
        }
        out.push('\n');
    }
    print!("{out}");
    for f in &failed {
        eprintln!("cannot score {}: {}", f.path, f.error);
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} images could not be read (listed above); the others are ranked",
            failed.len(),
            args.images.len()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ServeArgs {
    /// Checkpoint path or NAME:TAG (default: the model that made --db, else ViT-B-32:openai)
    #[arg(long, env = "CLIP_MODEL")]
    pub model: Option<String>,
    #[command(flatten)]
    pub image_opts: crate::ImageOptions,
    /// An index made by `clip index` with the same model, a file or a postgres:// URL: enables
    /// /search, /knn-service and the search page (default: the default index, when it exists)
    #[arg(long)]
    pub db: Option<String>,
    /// Address to listen on (loopback by default; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Refuse request bodies over this many MiB (413)
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_body_mb: u64,
    /// Texts or images per request (422 above)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_inputs: u64,
    /// Refuse images whose header claims more megapixels, before decoding them (422)
    #[arg(long, default_value_t = 40.0)]
    pub max_megapixels: f64,
    /// Inputs per forward pass
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_batch: u64,
    /// Requests waiting per tower before the server answers 429
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1000000))]
    pub queue: u64,
    /// Run each request alone instead of batching concurrent requests
    #[arg(long)]
    pub no_batching: bool,
    /// Seconds before a request is answered 408
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub timeout: u64,
    /// Require `Authorization: Bearer TOKEN` on the API (default: $CLIP_API_TOKEN)
    #[arg(long, env = "CLIP_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    if !(args.max_megapixels.is_finite() && args.max_megapixels > 0.0) {
        bail!(
            "--max-megapixels {} must be a positive number",
            args.max_megapixels
        );
    }
    // the default index when it exists (`clip index DIR && clip serve`)
    let db = args.db.clone().or_else(|| {
        clip_index::default_db()
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string())
    });
    let indexed = db
        .as_deref()
        .map(|db| clip_index::open(db).map(|s| s.model().clone()))
        .transpose()?;
    let model = match (&args.model, &indexed) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.spec.clone(),
        (None, None) => DEFAULT_MODEL.to_owned(),
    };
    let mut image_opts = args.image_opts.clone();
    if let (None, Some(m)) = (image_opts.precision.precision, &indexed) {
        // the precision the index was built with
        image_opts.precision.precision =
            Some(clip_embed::pipeline::fingerprint_precision(&m.fingerprint));
    }
    let emb = image_opts.embedder(&model, args.max_batch as usize)?;
    let opts = clip_serve::ServeOptions {
        addr: args.addr,
        db,
        max_body_bytes: (args.max_body_mb as usize) << 20,
        max_inputs: args.max_inputs as usize,
        max_megapixels: args.max_megapixels,
        max_batch: args.max_batch as usize,
        queue: args.queue as usize,
        batching: !args.no_batching,
        timeout: std::time::Duration::from_secs(args.timeout),
        token: args.token.clone().filter(|t| !t.is_empty()),
    };
    clip_serve::serve(emb, &model, opts, |addr| {
        eprintln!("listening on http://{addr}  (API docs: http://{addr}/docs)");
    })?;
    Ok(())
}
