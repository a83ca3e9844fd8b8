//! Dynamic batching, as text-embeddings-inference does it: each tower has a bounded queue; one
//! worker thread per tower takes every request waiting (up to `max_batch` inputs) and runs them as
//! one forward pass, then answers each request with its rows. Requests are prepared (tokenised,
//! decoded and preprocessed) by the handlers before they are queued, so the next batch is ready
//! while the model runs. A full queue refuses a request at once (the handler answers 429).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clip_embed::Embedder;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// What a request asks a tower to run.
pub enum Input {
    /// token rows
    Tokens(Vec<Vec<u32>>),
    /// preprocessed images `[n, 3, s, s]`, and n
    Pixels(Vec<f32>, usize),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Tokens(t) => t.len(),
            Input::Pixels(_, n) => *n,
        }
    }
}

struct Job {
    input: Input,
    /// unnormalised embeddings `[n, D]`, or the model's error
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// Why a request was not run.
#[derive(Debug)]
pub enum Refused {
    /// the queue holds `capacity` requests already
    Full {
        tower: &'static str,
        capacity: usize,
    },
    /// the worker stopped (the server is shutting down) or the model failed
    Failed(String),
}

/// The queue of one tower.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    tower: &'static str,
    capacity: usize,
    pub waiting: Arc<AtomicUsize>,
}

impl Batcher {
    /// Start the worker of `tower` ("text" or "image"). `max_batch` inputs per forward pass;
    /// `batching: false` runs every request alone (for comparison).
    pub fn start(
        emb: Arc<Embedder>,
        tower: &'static str,
        capacity: usize,
        max_batch: usize,
        batching: bool,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        let (tx, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        let w = waiting.clone();
        std::thread::Builder::new()
            .name(format!("clip-{tower}-tower"))
            .spawn(move || {
                let mut pending: Option<Job> = None;
                loop {
                    let first = match pending.take() {
                        Some(j) => j,
                        None => match rx.blocking_recv() {
                            Some(j) => j,
                            None => return, // every sender is gone: shut down
                        },
                    };
                    let mut jobs = vec![first];
                    let mut n = jobs[0].input.len();
                    while batching && n < max_batch {
                        match rx.try_recv() {
                            Ok(j) if n + j.input.len() <= max_batch => {
                                n += j.input.len();
                                jobs.push(j);
                            }
                            Ok(j) => {
                                pending = Some(j);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    w.fetch_sub(jobs.len(), Ordering::Relaxed);
                    metrics.batch(tower, n);
                    run(&emb, jobs);
                }
            })
            .expect("spawn a tower worker");
        Batcher {
            tx,
            tower,
            capacity,
            waiting,
        }
    }

    /// Queue `input` and wait for its rows (unnormalised features `[n, D]`).
    pub async fn embed(&self, input: Input) -> Result<Vec<f32>, Refused> {
        let (reply, rx) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(Job { input, reply }) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full {
                    tower: self.tower,
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => {
                    Refused::Failed("the server is shutting down".into())
                }
            });
        }
        match rx.await {
            Ok(r) => r.map_err(Refused::Failed),
            Err(_) => Err(Refused::Failed("the model worker stopped".into())),
        }
    }
}

/// One forward pass over the jobs' inputs, then each job gets its rows.
fn run(emb: &Embedder, jobs: Vec<Job>) {
    let d = emb.dim();
    let (inputs, replies): (Vec<Input>, Vec<_>) =
        jobs.into_iter().map(|j| (j.input, j.reply)).unzip();
    let sizes: Vec<usize> = inputs.iter().map(Input::len).collect();
    let result: Result<Vec<f32>, String> = match inputs.first() {
        Some(Input::Tokens(_)) => {
            let rows: Vec<Vec<u32>> = inputs
                .into_iter()
                .flat_map(|i| match i {
                    Input::Tokens(t) => t,
                    Input::Pixels(..) => Vec::new(),
                })
                .collect();
            emb.encode_tokens(&rows, true).map_err(|e| e.to_string())
        }
        Some(Input::Pixels(..)) => {
            let total: usize = sizes.iter().sum();
            let mut pixels = Vec::new();
            for i in inputs {
                if let Input::Pixels(p, _) = i {
                    pixels.extend(p);
                }
            }
            Ok(emb.encode_pixels(pixels, total, true))
        }
        None => Ok(Vec::new()),
    };
    match result {
        Ok(all) => {
            let mut at = 0;
            for (reply, n) in replies.into_iter().zip(sizes) {
                let _ = reply.send(Ok(all[at * d..(at + n) * d].to_vec()));
                at += n;
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// `v`'s rows scaled to unit length.
pub fn normalize(v: &mut [f32], d: usize) {
    for row in v.chunks_mut(d.max(1)) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x /= n);
        }
    }
}
